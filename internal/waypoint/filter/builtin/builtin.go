// Package builtin registers every filter ambit implements with the filter
// registry; the proxy imports it for its side effect.
package builtin

import (
	_ "github.com/ambitmesh/ambit/internal/waypoint/filter/cors"
	_ "github.com/ambitmesh/ambit/internal/waypoint/filter/headermod"
	_ "github.com/ambitmesh/ambit/internal/waypoint/filter/mirror"
	_ "github.com/ambitmesh/ambit/internal/waypoint/filter/redirect"
	_ "github.com/ambitmesh/ambit/internal/waypoint/filter/rewrite"
)

// Package redirect implements the RequestRedirect filter: it answers with
// a Location built from the request and the filter's scheme, hostname,
// port and path, and one of the status codes 301, 302, 303, 307, 308.
package redirect

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Input is what a redirect needs from the request.
type Input struct {
	// Scheme of the request: "https" on a TLS listener, else "http".
	Scheme string
	// Host is the request's Host header, possibly with a port.
	Host string
	// Path is the escaped path, RawQuery the query (kept as is).
	Path, RawQuery string
	ListenerPort   uint32
	// Prefix/PrefixMatch: the route's PathPrefix match, for
	// ReplacePrefixMatch.
	Prefix      string
	PrefixMatch bool
}

// DefaultStatus is the spec's default status code.
const DefaultStatus = http.StatusFound

// Location computes the redirect target and status for in under r.
//
// Port rules from the spec: an explicit port wins; otherwise a scheme
// change takes that scheme's well-known port (80, 443); otherwise the
// listener's port. The port is left out of Location when it is the
// well-known port of the Location's scheme.
func Location(in Input, r *gatewayv1.Redirect) (string, int) {
	scheme := strings.ToLower(r.GetScheme())
	if scheme == "" {
		scheme = in.Scheme
	}
	if scheme == "" {
		scheme = "http"
	}
	host := r.GetHostname()
	if host == "" {
		host, _ = filter.SplitHostPort(in.Host)
	}
	var port uint32
	switch {
	case r.GetPort() != 0:
		port = r.GetPort()
	case r.GetScheme() != "":
		port = wellKnown(scheme)
		if port == 0 {
			port = in.ListenerPort
		}
	default:
		port = in.ListenerPort
	}
	authority := host
	if strings.Contains(host, ":") {
		authority = "[" + host + "]" // IPv6 literal
	}
	if port != 0 && port != wellKnown(scheme) {
		authority = net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
	}
	path := in.Path
	if pm := r.GetPath(); pm != nil {
		path = filter.ModifyPath(path, pm, in.Prefix, in.PrefixMatch)
	}
	if path == "" {
		path = "/"
	}
	loc := scheme + "://" + authority + path
	if in.RawQuery != "" {
		loc += "?" + in.RawQuery
	}
	status := int(r.GetStatusCode())
	if status == 0 {
		status = DefaultStatus
	}
	return loc, status
}

func wellKnown(scheme string) uint32 {
	switch scheme {
	case "http":
		return 80
	case "https":
		return 443
	}
	return 0
}

var validStatus = map[uint32]bool{0: true, 301: true, 302: true, 303: true, 307: true, 308: true}

type redirectFilter struct{ r *gatewayv1.Redirect }

func (redirectFilter) Kind() string { return filter.KindRequestRedirect }

func (f redirectFilter) OnRequest(r *filter.Request) *filter.Reply {
	loc, status := Location(Input{Scheme: r.Scheme, Host: r.Host, Path: r.Path, RawQuery: r.RawQuery,
		ListenerPort: r.ListenerPort, Prefix: r.Prefix, PrefixMatch: r.PrefixMatch}, f.r)
	h := http.Header{"Location": {loc}}
	for k, vs := range r.ResponseHeader {
		h[k] = append(h[k], vs...)
	}
	return &filter.Reply{Status: status, Header: h}
}

func init() {
	filter.Register(filter.KindRequestRedirect, func(f *gatewayv1.Filter) (filter.Filter, error) {
		r := f.GetRequestRedirect()
		if !validStatus[r.GetStatusCode()] {
			return nil, fmt.Errorf("statusCode %d is not supported; use 301, 302, 303, 307 or 308", r.GetStatusCode())
		}
		if s := strings.ToLower(r.GetScheme()); s != "" && s != "http" && s != "https" {
			return nil, fmt.Errorf("scheme %q is not supported; use http or https", r.GetScheme())
		}
		return redirectFilter{r}, nil
	})
}

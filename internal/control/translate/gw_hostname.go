package translate

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// Hostnames follow the Gateway API rules: an exact name, or a wildcard
// "*.suffix" that matches any name ending in ".suffix" with at least one more
// label ("*.example.com" matches "a.b.example.com" but not "example.com").
// "*" (or an empty listener hostname) matches everything.

func isWildcard(h string) bool { return strings.HasPrefix(h, "*.") }

// hostCovers reports whether pattern matches every name host matches; used
// both for a pattern against a concrete name and for wildcard nesting.
func hostCovers(pattern, host string) bool {
	switch {
	case pattern == "*" || pattern == "":
		return true
	case host == "*" || host == "":
		return false
	case isWildcard(pattern):
		suffix := pattern[1:] // ".example.com"
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	default:
		return pattern == host
	}
}

// intersectHost returns the names both a listener hostname and a route
// hostname match, expressed as the more specific of the two, or false when
// they are disjoint.
func intersectHost(listener, route string) (string, bool) {
	if listener == "" {
		listener = "*"
	}
	if route == "" {
		route = "*"
	}
	switch {
	case hostCovers(listener, route):
		return route, true
	case hostCovers(route, listener):
		return listener, true
	case listener == route:
		return route, true
	}
	return "", false
}

// routeHosts returns the hostnames under which a route serves on a listener:
// the intersections of the route's hostnames with the listener's hostname.
// Names that do not match the listener are ignored, as the spec requires; an
// empty result means the route cannot attach (NoMatchingListenerHostname).
func routeHosts(listener string, route []string) []string {
	if len(route) == 0 {
		if listener == "" {
			return []string{"*"}
		}
		return []string{listener}
	}
	var out []string
	for _, h := range route {
		if x, ok := intersectHost(listener, h); ok && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// compareHosts orders virtual hosts for matching: exact names first, then
// wildcards with more labels to the right of the "*" (the spec's "more dots"
// rule, so "*.foo.example.com" before "*.example.com"), then "*".
func compareHosts(a, b string) int {
	rank := func(h string) int {
		switch {
		case h == "*":
			return 2
		case isWildcard(h):
			return 1
		}
		return 0
	}
	return cmp.Or(
		cmp.Compare(rank(a), rank(b)),
		-cmp.Compare(strings.Count(a, "."), strings.Count(b, ".")),
		-cmp.Compare(len(a), len(b)),
		cmp.Compare(a, b),
	)
}

// validHostname checks a Gateway API Hostname: RFC 1123 labels, optionally
// a leading "*." label, and never an IP address.
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	h = strings.TrimPrefix(h, "*.")
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Package route is the L7 matching core of ambit's waypoint and gateway:
// it compiles the route tables a proxy receives over xDS (a Listener's
// virtual hosts, or a waypoint's per-service RouteTable) into an immutable
// Table, built once per config push, and answers which route a request
// takes and which backend of that route serves it.
//
// The control plane has already ordered virtual hosts (exact, wildcards by
// longest suffix, "*") and routes (Gateway API precedence); a Table keeps
// that order and adds only lookups: a map for exact hosts, a map of
// wildcard suffixes walked label by label, and precompiled per-route
// matchers. Nothing here does I/O or allocates per request on the common
// path, so a Table can be swapped behind an atomic pointer and shared by
// every connection.
package route

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Request is the part of an HTTP request routing looks at. Path is the
// path as sent on the wire (escaped, without the query), so that "%2F" in
// a request can never satisfy a prefix that ends at a "/".
type Request struct {
	// Host is the Host header or :authority, possibly with a port.
	Host   string
	Path   string
	Method string
	// RawQuery is the query string without the "?".
	RawQuery string
	// Header holds the request headers under canonical keys, as net/http
	// stores them.
	Header http.Header
}

// FromHTTP takes the routing view of r without copying headers.
func FromHTTP(r *http.Request) Request {
	host := r.Host
	if host == "" && r.URL != nil {
		host = r.URL.Host
	}
	return Request{Host: host, Path: r.URL.EscapedPath(), Method: r.Method, RawQuery: r.URL.RawQuery, Header: r.Header}
}

// Route is one compiled (rule, match) pair. Everything but the matcher is
// the xDS route as received, so filters and backends are read from it.
type Route struct {
	// Config is the route as the control plane sent it.
	Config *gatewayv1.Route
	// Host is the virtual host the route was found under ("*" in a
	// waypoint's service table).
	Host string
	// Prefix is the normalised PathPrefix the route matched on (no
	// trailing "/", "" for "/"), which ReplacePrefixMatch rewrites are
	// relative to; PrefixMatch says whether the match was a PathPrefix.
	Prefix      string
	PrefixMatch bool
	// GRPC is set for routes compiled from a GRPCRoute.
	GRPC bool

	m           matcher
	totalWeight uint64
}

// Source says where the route came from.
func (r *Route) Source() *gatewayv1.RouteSource { return r.Config.GetSource() }

// Filters are the rule-level filters in the order written.
func (r *Route) Filters() []*gatewayv1.Filter { return r.Config.GetFilters() }

// Backends are the weighted backendRefs of the rule.
func (r *Route) Backends() []*gatewayv1.BackendRef { return r.Config.GetBackends() }

// vhost is one virtual host's routes.
type vhost struct {
	name   string
	routes []*Route
}

// Table is an immutable compiled route table; safe for concurrent use.
type Table struct {
	hosts []vhost
	// index maps a host name to its index in hosts.
	index HostIndex[int]
	n     int
}

// Len is the number of routes compiled, across virtual hosts.
func (t *Table) Len() int { return t.n }

// ErrInvalidRoute marks a route that could not be compiled; the rest of
// the table is still served.
var ErrInvalidRoute = errors.New("invalid route")

// CompileListener compiles a listener's virtual hosts. Routes that cannot
// be compiled (a regular expression that is not RE2, an unknown match
// type) are left out of the table and reported together in the error,
// wrapped in ErrInvalidRoute; the returned table is usable either way, so
// one bad route never takes the others down.
func CompileListener(l *gatewayv1.Listener) (*Table, error) {
	t := &Table{}
	var errs []error
	for _, vh := range l.GetVirtualHosts() {
		name := normalizeHost(vh.GetHostname())
		if !t.index.Add(name, len(t.hosts)) {
			// The control plane sends one virtual host per name; a
			// duplicate can only be shadowed, as in Envoy.
			errs = append(errs, fmt.Errorf("route: listener %q: virtual host %q appears twice; the first is used", l.GetName(), name))
			continue
		}
		routes, err := compileRoutes(name, vh.GetRoutes())
		errs = append(errs, err)
		t.hosts = append(t.hosts, vhost{name: name, routes: routes})
		t.n += len(routes)
	}
	if err := errors.Join(errs...); err != nil {
		return t, fmt.Errorf("route: listener %q: %w", l.GetName(), err)
	}
	return t, nil
}

// CompileRouteTable compiles a waypoint's route table for one service;
// hostnames do not apply (GAMMA), every request is matched against the
// routes. Errors are reported as for CompileListener.
func CompileRouteTable(rt *gatewayv1.RouteTable) (*Table, error) {
	t := &Table{}
	t.index.Add("*", 0)
	routes, err := compileRoutes("*", rt.GetRoutes())
	t.hosts = []vhost{{name: "*", routes: routes}}
	t.n = len(routes)
	if err != nil {
		svc := rt.GetService()
		return t, fmt.Errorf("route: route table %s/%s port %d: %w", svc.GetNamespace(), svc.GetName(), rt.GetPort(), err)
	}
	return t, nil
}

func compileRoutes(host string, in []*gatewayv1.Route) ([]*Route, error) {
	out := make([]*Route, 0, len(in))
	var errs []error
	for i, r := range in {
		cr, err := compileRoute(host, r)
		if err != nil {
			src := r.GetSource()
			errs = append(errs, fmt.Errorf("host %q route %d (%s %s/%s rule %d match %d): %w: %w",
				host, i, src.GetKind(), src.GetNamespace(), src.GetName(), src.GetRule(), src.GetMatch(), ErrInvalidRoute, err))
			continue
		}
		out = append(out, cr)
	}
	return out, errors.Join(errs...)
}

func compileRoute(host string, r *gatewayv1.Route) (*Route, error) {
	out := &Route{Config: r, Host: host}
	m := r.GetMatch()
	out.GRPC = m.GetGrpc()
	var err error
	if out.m, err = compileMatch(m); err != nil {
		return nil, err
	}
	if out.m.path.kind == pathPrefix {
		out.Prefix, out.PrefixMatch = out.m.path.value, true
	}
	for _, b := range r.GetBackends() {
		out.totalWeight += uint64(b.GetWeight())
	}
	return out, nil
}

// fullMatch compiles re so that it must match the whole input, as the
// Gateway API's RegularExpression match types mean.
func fullMatch(field, re string) (*regexp.Regexp, error) {
	c, err := regexp.Compile(`^(?:` + re + `)$`)
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a valid RE2 regular expression: %w", field, re, err)
	}
	return c, nil
}

package proxy

import (
	"testing"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// TestMatchesThroughListener: every HTTPRoute match kind decides which
// backend a request reaches through a real listener, in the table's
// precedence order, and a request no match takes is answered 404.
func TestMatchesThroughListener(t *testing.T) {
	const (
		exact = gatewayv1.MatchType_MATCH_TYPE_EXACT
		regex = gatewayv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION
	)
	m := func(path gatewayv1.MatchType, p string, edit func(*gatewayv1.RouteMatch)) *gatewayv1.RouteMatch {
		rm := &gatewayv1.RouteMatch{Path: &gatewayv1.PathMatch{Type: path, Value: p}}
		if edit != nil {
			edit(rm)
		}
		return rm
	}
	pods := []string{"exact", "regex-path", "header-regex", "query-exact", "query-regex", "method", "prefix"}
	var bs []*gatewayv1.Backend
	for _, p := range pods {
		bs = append(bs, backend(p, startEcho(t, p)))
	}
	pfx := gatewayv1.MatchType_MATCH_TYPE_PATH_PREFIX
	routes := []*gatewayv1.Route{ // in precedence order, as the control plane sorts them
		rt("exact", m(exact, "/items", nil), ref("exact", 1)),
		rt("regex-path", m(regex, `/items/[0-9]+`, nil), ref("regex-path", 1)),
		rt("header-regex", m(pfx, "/api", func(r *gatewayv1.RouteMatch) {
			r.Headers = []*gatewayv1.StringMatch{{Type: regex, Name: "x-tenant", Value: `eu-[a-z]+`}}
		}), ref("header-regex", 1)),
		rt("query-exact", m(pfx, "/api", func(r *gatewayv1.RouteMatch) {
			r.QueryParams = []*gatewayv1.StringMatch{{Type: exact, Name: "v", Value: "2"}}
		}), ref("query-exact", 1)),
		rt("query-regex", m(pfx, "/api", func(r *gatewayv1.RouteMatch) {
			r.QueryParams = []*gatewayv1.StringMatch{{Type: regex, Name: "v", Value: `^3\.[0-9]$`}}
		}), ref("query-regex", 1)),
		rt("method", m(pfx, "/api", func(r *gatewayv1.RouteMatch) { r.Method = "DELETE" }), ref("method", 1)),
		rt("prefix", m(pfx, "/api", nil), ref("prefix", 1)),
	}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": routes}, "*")}, bs)
	c := client(t)
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		want         string // pod; "" is 404
	}{
		{"GET", "/items", nil, "exact"},
		{"GET", "/items/42", nil, "regex-path"},
		{"GET", "/items/x", nil, ""},
		{"GET", "/api/a", map[string]string{"x-tenant": "eu-west"}, "header-regex"},
		{"GET", "/api/a", map[string]string{"x-tenant": "us-east"}, "prefix"},
		{"GET", "/api/a?v=2", nil, "query-exact"},
		{"GET", "/api/a?v=3.1", nil, "query-regex"},
		{"GET", "/api/a?v=3.10", nil, "prefix"},
		{"DELETE", "/api/a", nil, "method"},
		{"GET", "/apiary", nil, ""}, // prefixes match whole path elements
		{"GET", "/", nil, ""},
	} {
		r := g.doMethod(t, c, tc.method, "a", tc.path, tc.hdr)
		if tc.want == "" && r.status != 404 || tc.want != "" && (r.status != 200 || r.echo.Pod != tc.want) {
			t.Errorf("%s %s %v: %d from %q, want %q (\"\" is 404)", tc.method, tc.path, tc.hdr, r.status, r.echo.Pod, tc.want)
		}
	}
}

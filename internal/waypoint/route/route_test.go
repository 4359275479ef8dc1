package route

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

const (
	exact  = gatewayv1.MatchType_MATCH_TYPE_EXACT
	prefix = gatewayv1.MatchType_MATCH_TYPE_PATH_PREFIX
	regex  = gatewayv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION
)

// rt builds a route named by its source; opts fill in the match.
func rt(name string, opts ...func(*gatewayv1.RouteMatch)) *gatewayv1.Route {
	m := &gatewayv1.RouteMatch{}
	for _, o := range opts {
		o(m)
	}
	return &gatewayv1.Route{Source: &gatewayv1.RouteSource{Kind: "HTTPRoute", Namespace: "ns", Name: name}, Match: m,
		Backends: []*gatewayv1.BackendRef{{Service: "ns/" + name, Port: 80, Weight: 1}}}
}

func path(t gatewayv1.MatchType, v string) func(*gatewayv1.RouteMatch) {
	return func(m *gatewayv1.RouteMatch) { m.Path = &gatewayv1.PathMatch{Type: t, Value: v} }
}

func header(t gatewayv1.MatchType, name, v string) func(*gatewayv1.RouteMatch) {
	return func(m *gatewayv1.RouteMatch) {
		m.Headers = append(m.Headers, &gatewayv1.StringMatch{Type: t, Name: name, Value: v})
	}
}

func query(t gatewayv1.MatchType, name, v string) func(*gatewayv1.RouteMatch) {
	return func(m *gatewayv1.RouteMatch) {
		m.QueryParams = append(m.QueryParams, &gatewayv1.StringMatch{Type: t, Name: name, Value: v})
	}
}

func method(v string) func(*gatewayv1.RouteMatch) {
	return func(m *gatewayv1.RouteMatch) { m.Method = v }
}

func grpc() func(*gatewayv1.RouteMatch) { return func(m *gatewayv1.RouteMatch) { m.Grpc = true } }

func table(t *testing.T, routes ...*gatewayv1.Route) *Table {
	t.Helper()
	tb, err := CompileRouteTable(&gatewayv1.RouteTable{Service: &gatewayv1.ObjectRef{Namespace: "ns", Name: "svc"}, Routes: routes})
	if err != nil {
		t.Fatalf("CompileRouteTable: %v", err)
	}
	return tb
}

type req struct {
	host, method, target string
	headers              [][2]string
}

func (r req) request() *Request {
	m := r.method
	if m == "" {
		m = http.MethodGet
	}
	host := r.host
	if host == "" {
		host = "example.com"
	}
	hr := httptest.NewRequest(m, "http://"+host+r.target, nil)
	for _, h := range r.headers {
		hr.Header.Add(h[0], h[1])
	}
	out := FromHTTP(hr)
	return &out
}

// matched names the route a request takes, "" for 404.
func matched(tb *Table, r *Request) string {
	got, ok := tb.Match(r)
	if !ok {
		return ""
	}
	return got.Source().GetName()
}

func TestPathMatch(t *testing.T) {
	cases := []struct {
		name   string
		routes []*gatewayv1.Route
		target string
		want   string
	}{
		// PathMatchExact: "/abc" matches only "/abc", not "/abc/", "/Abc" or "/abcd".
		{"exact equal", []*gatewayv1.Route{rt("a", path(exact, "/abc"))}, "/abc", "a"},
		{"exact trailing slash", []*gatewayv1.Route{rt("a", path(exact, "/abc"))}, "/abc/", ""},
		{"exact case", []*gatewayv1.Route{rt("a", path(exact, "/abc"))}, "/Abc", ""},
		{"exact longer", []*gatewayv1.Route{rt("a", path(exact, "/abc"))}, "/abcd", ""},
		{"exact ignores query", []*gatewayv1.Route{rt("a", path(exact, "/abc"))}, "/abc?x=1", "a"},
		// PathMatchPathPrefix: "/abc" matches "/abc", "/abc/", "/abc/def", not "/abcd".
		{"prefix equal", []*gatewayv1.Route{rt("a", path(prefix, "/abc"))}, "/abc", "a"},
		{"prefix slash", []*gatewayv1.Route{rt("a", path(prefix, "/abc"))}, "/abc/", "a"},
		{"prefix deeper", []*gatewayv1.Route{rt("a", path(prefix, "/abc"))}, "/abc/def", "a"},
		{"prefix not element", []*gatewayv1.Route{rt("a", path(prefix, "/abc"))}, "/abcd", ""},
		{"prefix case", []*gatewayv1.Route{rt("a", path(prefix, "/abc"))}, "/ABC/def", ""},
		// "When specified, a trailing / is ignored."
		{"prefix trailing slash equal", []*gatewayv1.Route{rt("a", path(prefix, "/abc/"))}, "/abc", "a"},
		{"prefix trailing slash deeper", []*gatewayv1.Route{rt("a", path(prefix, "/abc/"))}, "/abc/def", "a"},
		{"prefix trailing slash not element", []*gatewayv1.Route{rt("a", path(prefix, "/abc/"))}, "/abcd", ""},
		{"prefix multi segment", []*gatewayv1.Route{rt("a", path(prefix, "/v1/api"))}, "/v1/api/x", "a"},
		{"prefix multi segment partial", []*gatewayv1.Route{rt("a", path(prefix, "/v1/api"))}, "/v1/apis", ""},
		{"prefix root matches all", []*gatewayv1.Route{rt("a", path(prefix, "/"))}, "/anything/at/all", "a"},
		{"prefix root matches root", []*gatewayv1.Route{rt("a", path(prefix, "/"))}, "/", "a"},
		{"no path match is prefix /", []*gatewayv1.Route{rt("a")}, "/x", "a"},
		// An escaped slash is not a path separator.
		{"prefix escaped slash", []*gatewayv1.Route{rt("a", path(prefix, "/abc"))}, "/abc%2Fdef", ""},
		// RegularExpression: full match, RE2, case-sensitive.
		{"regex full", []*gatewayv1.Route{rt("a", path(regex, "/v[0-9]+/users"))}, "/v12/users", "a"},
		{"regex anchored end", []*gatewayv1.Route{rt("a", path(regex, "/v[0-9]+/users"))}, "/v12/users/1", ""},
		{"regex anchored start", []*gatewayv1.Route{rt("a", path(regex, "/v[0-9]+/users"))}, "/x/v1/users", ""},
		{"regex alternation anchored", []*gatewayv1.Route{rt("a", path(regex, "/a|/b"))}, "/bc", ""},
		{"regex case", []*gatewayv1.Route{rt("a", path(regex, "/abc"))}, "/ABC", ""},
		// First route in order wins.
		{"first wins", []*gatewayv1.Route{rt("a", path(prefix, "/abc")), rt("b", path(prefix, "/"))}, "/abc/x", "a"},
		{"falls through", []*gatewayv1.Route{rt("a", path(prefix, "/abc")), rt("b", path(prefix, "/"))}, "/abd", "b"},
		{"empty table", nil, "/", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := table(t, c.routes...)
			if got := matched(tb, req{target: c.target}.request()); got != c.want {
				t.Errorf("%s: route %q, want %q", c.target, got, c.want)
			}
		})
	}
}

func TestHeaderQueryMethodMatch(t *testing.T) {
	cases := []struct {
		name  string
		route *gatewayv1.Route
		req   req
		want  bool
	}{
		{"header exact", rt("a", header(exact, "version", "one")), req{headers: [][2]string{{"Version", "one"}}}, true},
		{"header name case-insensitive", rt("a", header(exact, "X-Tenant-Region", "eu")), req{headers: [][2]string{{"x-tenant-region", "eu"}}}, true},
		{"header value case-sensitive", rt("a", header(exact, "version", "one")), req{headers: [][2]string{{"version", "ONE"}}}, false},
		{"header missing", rt("a", header(exact, "version", "one")), req{}, false},
		{"header empty value", rt("a", header(exact, "version", "one")), req{headers: [][2]string{{"version", ""}}}, false},
		{"headers ANDed", rt("a", header(exact, "a", "1"), header(exact, "b", "2")), req{headers: [][2]string{{"a", "1"}}}, false},
		{"headers ANDed both", rt("a", header(exact, "a", "1"), header(exact, "b", "2")), req{headers: [][2]string{{"a", "1"}, {"b", "2"}}}, true},
		// Only the first entry of an equivalent name counts.
		{"first header entry wins", rt("a", header(exact, "version", "one"), header(exact, "Version", "two")), req{headers: [][2]string{{"version", "one"}}}, true},
		// Repeated header: matched as the comma-joined value.
		{"repeated header joined", rt("a", header(exact, "x", "1,2")), req{headers: [][2]string{{"x", "1"}, {"x", "2"}}}, true},
		{"repeated header not single", rt("a", header(exact, "x", "1")), req{headers: [][2]string{{"x", "1"}, {"x", "2"}}}, false},
		{"header regex", rt("a", header(regex, "version", "v[0-9]+")), req{headers: [][2]string{{"version", "v42"}}}, true},
		{"header regex full match", rt("a", header(regex, "version", "v[0-9]+")), req{headers: [][2]string{{"version", "xv42"}}}, false},
		{"query exact", rt("a", query(exact, "animal", "whale")), req{target: "/?animal=whale"}, true},
		{"query other value", rt("a", query(exact, "animal", "whale")), req{target: "/?animal=dolphin"}, false},
		{"query name case-sensitive", rt("a", query(exact, "animal", "whale")), req{target: "/?Animal=whale"}, false},
		{"query first value", rt("a", query(exact, "animal", "whale")), req{target: "/?animal=whale&animal=dolphin"}, true},
		{"query not first value", rt("a", query(exact, "animal", "whale")), req{target: "/?animal=dolphin&animal=whale"}, false},
		{"query escaped", rt("a", query(exact, "q", "a b/c")), req{target: "/?q=a+b%2Fc"}, true},
		{"query escaped name", rt("a", query(exact, "a b", "1")), req{target: "/?a%20b=1"}, true},
		{"query missing", rt("a", query(exact, "animal", "whale")), req{target: "/?color=blue"}, false},
		{"query among others", rt("a", query(exact, "animal", "whale")), req{target: "/?color=blue&&animal=whale"}, true},
		{"query regex", rt("a", query(regex, "id", "[0-9]{3}")), req{target: "/?id=123"}, true},
		{"query regex full match", rt("a", query(regex, "id", "[0-9]{3}")), req{target: "/?id=1234"}, false},
		{"queries ANDed", rt("a", query(exact, "a", "1"), query(exact, "b", "2")), req{target: "/?b=2&a=1"}, true},
		{"queries ANDed one missing", rt("a", query(exact, "a", "1"), query(exact, "b", "2")), req{target: "/?a=1"}, false},
		{"method", rt("a", method("POST")), req{method: "POST"}, true},
		{"method other", rt("a", method("POST")), req{method: "GET"}, false},
		{"all together", rt("a", path(prefix, "/p"), header(exact, "h", "1"), query(exact, "q", "1"), method("PUT")),
			req{method: "PUT", target: "/p/x?q=1", headers: [][2]string{{"h", "1"}}}, true},
		{"grpc", rt("a", grpc(), method("POST"), path(exact, "/pkg.Svc/Get")),
			req{method: "POST", target: "/pkg.Svc/Get", headers: [][2]string{{"content-type", "application/grpc+proto"}}}, true},
		{"grpc route skips plain http", rt("a", grpc(), method("POST"), path(exact, "/pkg.Svc/Get")),
			req{method: "POST", target: "/pkg.Svc/Get", headers: [][2]string{{"content-type", "application/json"}}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := table(t, c.route)
			_, ok := tb.Match(c.req.request())
			if ok != c.want {
				t.Errorf("matched %v, want %v", ok, c.want)
			}
		})
	}
}

func TestHostSelection(t *testing.T) {
	vh := func(host string) *gatewayv1.VirtualHost {
		return &gatewayv1.VirtualHost{Hostname: host, Routes: []*gatewayv1.Route{rt(host)}}
	}
	l := &gatewayv1.Listener{Name: "http", VirtualHosts: []*gatewayv1.VirtualHost{
		vh("foo.example.com"), vh("*.foo.example.com"), vh("*.example.com"), vh("*"),
	}}
	tb, err := CompileListener(l)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ host, want string }{
		{"foo.example.com", "foo.example.com"},
		{"FOO.Example.COM", "foo.example.com"},
		{"foo.example.com:8080", "foo.example.com"},
		{"foo.example.com.", "foo.example.com"},
		{"a.foo.example.com", "*.foo.example.com"},
		{"a.b.foo.example.com", "*.foo.example.com"},
		{"bar.example.com", "*.example.com"},
		{"a.bar.example.com", "*.example.com"},
		// A wildcard needs at least one label in front of its suffix.
		{"example.com", "*"},
		{"other.org", "*"},
		{"[::1]:80", "*"},
		{"", "*"},
	}
	for _, c := range cases {
		if got := matched(tb, &Request{Host: c.host, Path: "/"}); got != c.want {
			t.Errorf("host %q: %q, want %q", c.host, got, c.want)
		}
	}

	noStar, err := CompileListener(&gatewayv1.Listener{Name: "http", VirtualHosts: []*gatewayv1.VirtualHost{vh("foo.example.com"), vh("*.example.com")}})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{"other.org": "", "example.com": "", "a.example.com": "*.example.com", "[::1]": ""} {
		if got := matched(noStar, &Request{Host: host, Path: "/"}); got != want {
			t.Errorf("no *: host %q: %q, want %q", host, got, want)
		}
	}
	ipv6, err := CompileListener(&gatewayv1.Listener{Name: "http", VirtualHosts: []*gatewayv1.VirtualHost{vh("[::1]")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := matched(ipv6, &Request{Host: "[::1]:8443", Path: "/"}); got != "[::1]" {
		t.Errorf("ipv6 host with port: %q", got)
	}
}

// A request for a host whose routes do not match gets 404, even if a less
// specific host would match: the control plane copies covering hosts'
// routes into each virtual host, the matcher never falls back.
func TestHostDoesNotFallBack(t *testing.T) {
	tb, err := CompileListener(&gatewayv1.Listener{VirtualHosts: []*gatewayv1.VirtualHost{
		{Hostname: "a.example.com", Routes: []*gatewayv1.Route{rt("exact", path(exact, "/only"))}},
		{Hostname: "*", Routes: []*gatewayv1.Route{rt("star")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := matched(tb, &Request{Host: "a.example.com", Path: "/other"}); got != "" {
		t.Errorf("got %q, want 404", got)
	}
}

func TestInvalidRouteDroppedOthersServed(t *testing.T) {
	l := &gatewayv1.Listener{Name: "http", VirtualHosts: []*gatewayv1.VirtualHost{{Hostname: "*", Routes: []*gatewayv1.Route{
		rt("bad-path", path(regex, "/(unclosed")),
		rt("bad-header", header(regex, "x", "[z-a]")),
		rt("bad-query", query(regex, "x", "*")),
		rt("bad-type", path(gatewayv1.MatchType(42), "/")),
		rt("good", path(prefix, "/")),
	}}}}
	tb, err := CompileListener(l)
	if !errors.Is(err, ErrInvalidRoute) {
		t.Fatalf("error %v does not wrap ErrInvalidRoute", err)
	}
	for _, name := range []string{"bad-path", "bad-header", "bad-query", "bad-type", `"http"`, "not a valid RE2"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	if tb == nil || tb.Len() != 1 {
		t.Fatalf("table keeps %d routes, want 1", tb.Len())
	}
	if got := matched(tb, &Request{Path: "/(unclosed"}); got != "good" {
		t.Errorf("got %q, want good", got)
	}
}

func TestRouteFields(t *testing.T) {
	tb := table(t, rt("p", path(prefix, "/foo/")), rt("e", path(exact, "/bar")), rt("root", path(prefix, "/")))
	cases := []struct {
		target       string
		wantPrefix   string
		wantIsPrefix bool
	}{{"/foo/x", "/foo", true}, {"/bar", "", false}, {"/zzz", "", true}}
	for _, c := range cases {
		r, ok := tb.Match(req{target: c.target}.request())
		if !ok {
			t.Fatalf("%s: no match", c.target)
		}
		if r.Prefix != c.wantPrefix || r.PrefixMatch != c.wantIsPrefix {
			t.Errorf("%s: prefix %q/%v, want %q/%v", c.target, r.Prefix, r.PrefixMatch, c.wantPrefix, c.wantIsPrefix)
		}
	}
}

// seqRand returns 0, 1, 2, ... modulo n: over sum(weights) draws every
// slot is hit exactly once, so shares are exact.
type seqRand struct{ i uint64 }

func (s *seqRand) Uint64N(n uint64) uint64 { v := s.i % n; s.i++; return v }

func TestPickBackend(t *testing.T) {
	b := func(svc string, w uint32, invalid string) *gatewayv1.BackendRef {
		return &gatewayv1.BackendRef{Service: svc, Port: 80, Weight: w, Invalid: invalid}
	}
	cases := []struct {
		name     string
		backends []*gatewayv1.BackendRef
		draws    int
		want     map[string]int // service (or invalid reason) -> picks; "" key = nil picks
	}{
		{"weights 80/20", []*gatewayv1.BackendRef{b("v1", 80, ""), b("v2", 20, "")}, 100, map[string]int{"v1": 80, "v2": 20}},
		{"zero weight never", []*gatewayv1.BackendRef{b("v1", 0, ""), b("v2", 3, ""), b("v3", 0, "")}, 30, map[string]int{"v2": 30}},
		{"invalid gets its share", []*gatewayv1.BackendRef{b("v1", 1, ""), b("", 1, "Service ns/missing not found")}, 10, map[string]int{"v1": 5, "invalid:Service ns/missing not found": 5}},
		{"single backend", []*gatewayv1.BackendRef{b("v1", 7, "")}, 5, map[string]int{"v1": 5}},
		{"all zero", []*gatewayv1.BackendRef{b("v1", 0, ""), b("v2", 0, "")}, 4, map[string]int{"": 4}},
		{"none", nil, 3, map[string]int{"": 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := table(t, &gatewayv1.Route{Match: &gatewayv1.RouteMatch{}, Backends: c.backends})
			route, ok := r.Match(&Request{Path: "/"})
			if !ok {
				t.Fatal("no match")
			}
			got := map[string]int{}
			rnd := &seqRand{}
			for range c.draws {
				p := PickBackend(route, rnd)
				switch {
				case p == nil:
					got[""]++
				case p.GetInvalid() != "":
					got["invalid:"+p.GetInvalid()]++
				default:
					got[p.GetService()]++
				}
			}
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("picks (-want +got):\n%s", d)
			}
		})
	}
}

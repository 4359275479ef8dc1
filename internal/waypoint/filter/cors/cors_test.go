package cors

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// The routes of conformance httproute-cors.
var (
	multiple = &gatewayv1.CORS{AllowOrigins: []string{"https://www.foo.com", "https://*.bar.com"},
		AllowMethods: []string{"GET", "OPTIONS"}, AllowHeaders: []string{"x-header-1", "x-header-2"},
		ExposeHeaders: []string{"x-header-3", "x-header-4"}, AllowCredentials: true, MaxAge: 3600}
	wildcardMethods = &gatewayv1.CORS{AllowOrigins: []string{"https://www.foo.com"}, AllowMethods: []string{"*"}}
	wildcardOrigin  = &gatewayv1.CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"PUT"}}
	wildcardAuth    = &gatewayv1.CORS{AllowOrigins: []string{"https://*.foo.com"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, AllowCredentials: true}
	wildcardUnauth  = &gatewayv1.CORS{AllowOrigins: []string{"https://*.foo.com"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}}
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestEvaluate(t *testing.T) {
	cases := []struct {
		name          string
		c             *gatewayv1.CORS
		method        string
		req           http.Header
		wantPreflight bool
		want          http.Header
	}{
		{"preflight exact origin", multiple, "OPTIONS",
			hdr("Origin", "https://www.foo.com", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "x-header-1, x-header-2"), true,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://www.foo.com", "Access-Control-Allow-Credentials", "true",
				"Access-Control-Allow-Methods", "GET, OPTIONS", "Access-Control-Allow-Headers", "x-header-1, x-header-2",
				"Access-Control-Expose-Headers", "x-header-3, x-header-4", "Access-Control-Max-Age", "3600")},
		{"preflight wildcard origin", multiple, "OPTIONS",
			hdr("Origin", "https://www.bar.com", "Access-Control-Request-Method", "GET"), true,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://www.bar.com", "Access-Control-Allow-Credentials", "true",
				"Access-Control-Allow-Methods", "GET, OPTIONS", "Access-Control-Allow-Headers", "x-header-1, x-header-2",
				"Access-Control-Expose-Headers", "x-header-3, x-header-4", "Access-Control-Max-Age", "3600")},
		{"wildcard spans labels", multiple, "OPTIONS",
			hdr("Origin", "https://xpto.www.bar.com", "Access-Control-Request-Method", "GET"), true,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://xpto.www.bar.com", "Access-Control-Allow-Credentials", "true",
				"Access-Control-Allow-Methods", "GET, OPTIONS", "Access-Control-Allow-Headers", "x-header-1, x-header-2",
				"Access-Control-Expose-Headers", "x-header-3, x-header-4", "Access-Control-Max-Age", "3600")},
		{"preflight other origin", multiple, "OPTIONS",
			hdr("Origin", "https://foobar.com", "Access-Control-Request-Method", "GET"), true, hdr("Vary", "Origin")},
		{"wildcard needs a label", multiple, "GET", hdr("Origin", "https://bar.com"), false, hdr("Vary", "Origin")},
		{"scheme must match", multiple, "GET", hdr("Origin", "http://www.foo.com"), false, hdr("Vary", "Origin")},
		{"port must match", multiple, "GET", hdr("Origin", "https://www.foo.com:8443"), false, hdr("Vary", "Origin")},
		{"default port is implied", multiple, "GET", hdr("Origin", "https://www.foo.com:443"), false,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://www.foo.com:443", "Access-Control-Allow-Credentials", "true",
				"Access-Control-Expose-Headers", "x-header-3, x-header-4")},
		{"host case-insensitive", multiple, "GET", hdr("Origin", "https://WWW.Foo.com"), false,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://WWW.Foo.com", "Access-Control-Allow-Credentials", "true",
				"Access-Control-Expose-Headers", "x-header-3, x-header-4")},
		{"simple exact origin", multiple, "GET",
			hdr("Origin", "https://www.foo.com"), false,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://www.foo.com", "Access-Control-Allow-Credentials", "true",
				"Access-Control-Expose-Headers", "x-header-3, x-header-4")},
		{"simple other origin", multiple, "GET", hdr("Origin", "https://foobar.com"), false, hdr("Vary", "Origin")},
		{"no origin", multiple, "GET", hdr(), false, hdr()},
		{"OPTIONS without request method is not preflight", multiple, "OPTIONS", hdr("Origin", "https://www.foo.com"), false,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://www.foo.com", "Access-Control-Allow-Credentials", "true",
				"Access-Control-Expose-Headers", "x-header-3, x-header-4")},
		{"wildcard methods without credentials", wildcardMethods, "OPTIONS",
			hdr("Origin", "https://www.foo.com", "Access-Control-Request-Method", "POST"), true,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://www.foo.com", "Access-Control-Allow-Methods", "*", "Access-Control-Max-Age", "5")},
		{"wildcard origin", wildcardOrigin, "OPTIONS",
			hdr("Origin", "https://foobar.com:12345", "Access-Control-Request-Method", "PUT"), true,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://foobar.com:12345", "Access-Control-Allow-Methods", "PUT", "Access-Control-Max-Age", "5")},
		{"wildcard with credentials echoes", wildcardAuth, "OPTIONS",
			hdr("Origin", "https://other.foo.com", "Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "x-header-1, x-header-2"), true,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://other.foo.com", "Access-Control-Allow-Credentials", "true",
				"Access-Control-Allow-Methods", "PUT", "Access-Control-Allow-Headers", "x-header-1, x-header-2", "Access-Control-Max-Age", "5")},
		{"wildcard with credentials and no request headers", wildcardAuth, "OPTIONS",
			hdr("Origin", "https://other.foo.com", "Access-Control-Request-Method", "PUT"), true,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://other.foo.com", "Access-Control-Allow-Credentials", "true",
				"Access-Control-Allow-Methods", "PUT", "Access-Control-Max-Age", "5")},
		{"wildcard without credentials", wildcardUnauth, "OPTIONS",
			hdr("Origin", "https://other.foo.com", "Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "x-header-1"), true,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://other.foo.com",
				"Access-Control-Allow-Methods", "*", "Access-Control-Allow-Headers", "*", "Access-Control-Max-Age", "5")},
		{"simple with credentials", wildcardAuth, "GET", hdr("Origin", "https://other.foo.com", "Authorization", "Bearer test"), false,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://other.foo.com", "Access-Control-Allow-Credentials", "true")},
		{"simple without credentials", wildcardUnauth, "GET", hdr("Origin", "https://other.foo.com", "Authorization", "Bearer test"), false,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://other.foo.com")},
		{"expose * dropped with credentials", &gatewayv1.CORS{AllowOrigins: []string{"*"}, ExposeHeaders: []string{"*", "x-a"}, AllowCredentials: true}, "GET",
			hdr("Origin", "https://a.example"), false,
			hdr("Vary", "Origin", "Access-Control-Allow-Origin", "https://a.example", "Access-Control-Allow-Credentials", "true", "Access-Control-Expose-Headers", "x-a")},
		{"null origin only with *", wildcardMethods, "GET", hdr("Origin", "null"), false, hdr("Vary", "Origin")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := Compile(c.c).Evaluate(c.method, c.req)
			if res.Preflight != c.wantPreflight {
				t.Errorf("preflight %v, want %v", res.Preflight, c.wantPreflight)
			}
			if d := cmp.Diff(c.want, res.Header); d != "" {
				t.Errorf("headers (-want +got):\n%s", d)
			}
		})
	}
}

func TestFilter(t *testing.T) {
	chain, err := filter.Compile([]*gatewayv1.Filter{{Kind: &gatewayv1.Filter_Cors{Cors: multiple}}})
	if err != nil {
		t.Fatal(err)
	}
	pre := &filter.Request{Method: "OPTIONS", Header: hdr("Origin", "https://www.foo.com", "Access-Control-Request-Method", "GET")}
	rep := chain.OnRequest(pre)
	if rep == nil || rep.Status != http.StatusOK || rep.Header.Get("Access-Control-Allow-Origin") != "https://www.foo.com" {
		t.Fatalf("preflight reply %+v", rep)
	}
	simple := &filter.Request{Method: "GET", Header: hdr("Origin", "https://www.foo.com")}
	if rep := chain.OnRequest(simple); rep != nil {
		t.Fatalf("simple request answered directly: %+v", rep)
	}
	if got := simple.ResponseHeader.Get("Access-Control-Allow-Origin"); got != "https://www.foo.com" {
		t.Errorf("response Access-Control-Allow-Origin %q", got)
	}
}

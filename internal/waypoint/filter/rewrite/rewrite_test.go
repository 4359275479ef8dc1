package rewrite

import (
	"net/http"
	"testing"

	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

func full(s string) *gatewayv1.PathModifier {
	return &gatewayv1.PathModifier{Kind: &gatewayv1.PathModifier_ReplaceFullPath{ReplaceFullPath: s}}
}

func pre(s string) *gatewayv1.PathModifier {
	return &gatewayv1.PathModifier{Kind: &gatewayv1.PathModifier_ReplacePrefixMatch{ReplacePrefixMatch: s}}
}

func TestRewrite(t *testing.T) {
	cases := []struct {
		name               string
		u                  *gatewayv1.URLRewrite
		host, path, prefix string
		wantHost, wantPath string
	}{
		// Conformance httproute-rewrite-path.
		{"prefix", &gatewayv1.URLRewrite{Path: pre("/one")}, "gw", "/prefix/one/two", "/prefix/one", "gw", "/one/two"},
		{"full", &gatewayv1.URLRewrite{Path: full("/one")}, "gw", "/full/one/two", "/full/one", "gw", "/one"},
		{"full with headers route", &gatewayv1.URLRewrite{Path: full("/test")}, "gw", "/full/rewrite-path-and-modify-headers/test", "/full/rewrite-path-and-modify-headers", "gw", "/test"},
		{"prefix with headers route", &gatewayv1.URLRewrite{Path: pre("/prefix")}, "gw", "/prefix/rewrite-path-and-modify-headers/one", "/prefix/rewrite-path-and-modify-headers", "gw", "/prefix/one"},
		{"strip prefix", &gatewayv1.URLRewrite{Path: pre("/")}, "gw", "/strip-prefix/three", "/strip-prefix", "gw", "/three"},
		{"strip whole path", &gatewayv1.URLRewrite{Path: pre("/")}, "gw", "/strip-prefix", "/strip-prefix", "gw", "/"},
		// Conformance httproute-rewrite-host.
		{"host", &gatewayv1.URLRewrite{Hostname: "one.example.org"}, "rewrite.example:8080", "/one", "", "one.example.org", "/one"},
		{"host and path", &gatewayv1.URLRewrite{Hostname: "example.org", Path: pre("/example")}, "rewrite.example", "/rewrite/x", "/rewrite", "example.org", "/example/x"},
		{"nothing", &gatewayv1.URLRewrite{}, "gw", "/a", "/a", "gw", "/a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, p := Rewrite(c.u, c.host, c.path, c.prefix, c.prefix != "")
			if h != c.wantHost || p != c.wantPath {
				t.Errorf("Rewrite = %q %q, want %q %q", h, p, c.wantHost, c.wantPath)
			}
		})
	}
}

func TestFilter(t *testing.T) {
	chain, err := filter.Compile([]*gatewayv1.Filter{{Kind: &gatewayv1.Filter_UrlRewrite{UrlRewrite: &gatewayv1.URLRewrite{Hostname: "new", Path: pre("/b")}}}})
	if err != nil {
		t.Fatal(err)
	}
	r := &filter.Request{Host: "old", Path: "/a/x", Prefix: "/a", PrefixMatch: true, Header: http.Header{}}
	if rep := chain.OnRequest(r); rep != nil {
		t.Fatalf("reply %+v", rep)
	}
	if r.Host != "new" || r.Path != "/b/x" {
		t.Errorf("request now %q %q", r.Host, r.Path)
	}
}

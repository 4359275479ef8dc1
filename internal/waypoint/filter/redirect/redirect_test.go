package redirect

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

func TestLocation(t *testing.T) {
	http80 := Input{Scheme: "http", Host: "gw.example", Path: "/p", ListenerPort: 80}
	http8080 := Input{Scheme: "http", Host: "gw.example:8080", Path: "/p", ListenerPort: 8080}
	https443 := Input{Scheme: "https", Host: "example.org", Path: "/p", ListenerPort: 443}
	with := func(in Input, path, prefix string) Input {
		in.Path, in.Prefix, in.PrefixMatch = path, prefix, prefix != ""
		return in
	}
	cases := []struct {
		name       string
		in         Input
		r          *gatewayv1.Redirect
		want       string
		wantStatus int
	}{
		// Conformance httproute-redirect-port-and-scheme, listener on 80.
		{"80 scheme nil port nil", http80, &gatewayv1.Redirect{Hostname: "example.org"}, "http://example.org/p", 302},
		{"80 scheme nil port 80", http80, &gatewayv1.Redirect{Hostname: "example.org", Port: 80}, "http://example.org/p", 302},
		{"80 scheme nil port 8080", http80, &gatewayv1.Redirect{Hostname: "example.org", Port: 8080}, "http://example.org:8080/p", 302},
		{"80 scheme https port nil", http80, &gatewayv1.Redirect{Hostname: "example.org", Scheme: "https"}, "https://example.org/p", 302},
		{"80 scheme https port 443", http80, &gatewayv1.Redirect{Hostname: "example.org", Scheme: "https", Port: 443}, "https://example.org/p", 302},
		{"80 scheme https port 8443", http80, &gatewayv1.Redirect{Hostname: "example.org", Scheme: "https", Port: 8443}, "https://example.org:8443/p", 302},
		// Listener on 8080: no scheme and no port keeps the listener port.
		{"8080 scheme nil port nil", http8080, &gatewayv1.Redirect{Hostname: "example.org"}, "http://example.org:8080/p", 302},
		{"8080 scheme nil port 80", http8080, &gatewayv1.Redirect{Hostname: "example.org", Port: 80}, "http://example.org/p", 302},
		{"8080 scheme https port nil", http8080, &gatewayv1.Redirect{Hostname: "example.org", Scheme: "https"}, "https://example.org/p", 302},
		// HTTPS listener on 443.
		{"443 scheme nil port nil", https443, &gatewayv1.Redirect{}, "https://example.org/p", 302},
		{"443 scheme nil port 443", https443, &gatewayv1.Redirect{Port: 443}, "https://example.org/p", 302},
		{"443 scheme nil port 8443", https443, &gatewayv1.Redirect{Port: 8443}, "https://example.org:8443/p", 302},
		{"443 scheme http port nil", https443, &gatewayv1.Redirect{Scheme: "http"}, "http://example.org/p", 302},
		{"443 scheme http port 80", https443, &gatewayv1.Redirect{Scheme: "http", Port: 80}, "http://example.org/p", 302},
		{"443 scheme http port 8080", https443, &gatewayv1.Redirect{Scheme: "http", Port: 8080}, "http://example.org:8080/p", 302},
		// httproute-redirect-scheme / -host-and-status.
		{"scheme https 301", Input{Scheme: "http", Host: "example.org", Path: "/", ListenerPort: 80}, &gatewayv1.Redirect{Scheme: "https", StatusCode: 301}, "https://example.org/", 301},
		{"hostname", Input{Scheme: "http", Host: "gw", Path: "/hostname-redirect", ListenerPort: 80}, &gatewayv1.Redirect{Hostname: "example.org"}, "http://example.org/hostname-redirect", 302},
		{"host and status", Input{Scheme: "http", Host: "gw", Path: "/host-and-status", ListenerPort: 80}, &gatewayv1.Redirect{Hostname: "example.org", StatusCode: 301}, "http://example.org/host-and-status", 301},
		{"303", http80, &gatewayv1.Redirect{StatusCode: 303}, "http://gw.example/p", 303},
		{"307", http80, &gatewayv1.Redirect{StatusCode: 307}, "http://gw.example/p", 307},
		{"308", http80, &gatewayv1.Redirect{StatusCode: 308}, "http://gw.example/p", 308},
		// Host header port is dropped; the listener port rule applies.
		{"request host port dropped", Input{Scheme: "http", Host: "gw.example:80", Path: "/p", ListenerPort: 80}, &gatewayv1.Redirect{}, "http://gw.example/p", 302},
		// Conformance httproute-redirect-path.
		{"prefix", with(http80, "/original-prefix/lemon", "/original-prefix"), &gatewayv1.Redirect{Path: pre("/replacement-prefix")}, "http://gw.example/replacement-prefix/lemon", 302},
		{"full", with(http80, "/full/path/original", "/full"), &gatewayv1.Redirect{Path: full("/full-path-replacement")}, "http://gw.example/full-path-replacement", 302},
		{"path and host", with(http80, "/path-and-host", "/path-and-host"), &gatewayv1.Redirect{Hostname: "example.org", Path: pre("/replacement-prefix")}, "http://example.org/replacement-prefix", 302},
		{"path and status", with(http80, "/path-and-status", "/path-and-status"), &gatewayv1.Redirect{Path: pre("/replacement-prefix"), StatusCode: 301}, "http://gw.example/replacement-prefix", 301},
		{"full path and host", with(http80, "/full-path-and-host", "/full-path-and-host"), &gatewayv1.Redirect{Hostname: "example.org", Path: full("/replacement-full")}, "http://example.org/replacement-full", 302},
		{"full path and status", with(http80, "/full-path-and-status", "/full-path-and-status"), &gatewayv1.Redirect{Path: full("/replacement-full"), StatusCode: 301}, "http://gw.example/replacement-full", 301},
		// The query string is kept.
		{"query kept", Input{Scheme: "http", Host: "gw", Path: "/a", RawQuery: "x=1&y=2", ListenerPort: 80}, &gatewayv1.Redirect{Scheme: "https"}, "https://gw/a?x=1&y=2", 302},
		// IPv6 request host.
		{"ipv6 host", Input{Scheme: "http", Host: "[2001:db8::1]:8080", Path: "/", ListenerPort: 8080}, &gatewayv1.Redirect{}, "http://[2001:db8::1]:8080/", 302},
		{"ipv6 host default port", Input{Scheme: "http", Host: "[2001:db8::1]", Path: "/", ListenerPort: 80}, &gatewayv1.Redirect{Scheme: "https"}, "https://[2001:db8::1]/", 302},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			loc, status := Location(c.in, c.r)
			if loc != c.want || status != c.wantStatus {
				t.Errorf("Location = %q %d, want %q %d", loc, status, c.want, c.wantStatus)
			}
		})
	}
}

func TestFilterRepliesAndValidates(t *testing.T) {
	chain, err := filter.Compile([]*gatewayv1.Filter{{Kind: &gatewayv1.Filter_RequestRedirect{RequestRedirect: &gatewayv1.Redirect{Scheme: "https", StatusCode: 301}}}})
	if err != nil {
		t.Fatal(err)
	}
	rep := chain.OnRequest(&filter.Request{Scheme: "http", Host: "a.example", Path: "/x", ListenerPort: 80, Header: http.Header{}})
	if rep == nil || rep.Status != 301 || rep.Header.Get("Location") != "https://a.example/x" {
		t.Fatalf("reply %+v", rep)
	}
	for _, bad := range []*gatewayv1.Redirect{{StatusCode: 300}, {StatusCode: 200}, {Scheme: "ftp"}} {
		if _, err := filter.Compile([]*gatewayv1.Filter{{Kind: &gatewayv1.Filter_RequestRedirect{RequestRedirect: bad}}}); err == nil {
			t.Errorf("redirect %v compiled", bad)
		}
	}
}

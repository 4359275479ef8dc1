package route

import (
	"fmt"
	"net/http"
	"testing"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// benchTable is 1,000 routes under one host in precedence order: exact
// paths, then prefixes, some with header and query matches, a regex every
// 50 routes, and a catch-all at the end; plus 100 other hosts.
func benchTable(b *testing.B) *Table {
	var routes []*gatewayv1.Route
	for i := range 300 {
		routes = append(routes, rt(fmt.Sprintf("exact-%d", i), path(exact, fmt.Sprintf("/api/v1/exact/%d", i))))
	}
	for i := range 20 {
		routes = append(routes, rt(fmt.Sprintf("regex-%d", i), path(regex, fmt.Sprintf("/re/%d/[a-z]+", i))))
	}
	for i := range 679 {
		opts := []func(*gatewayv1.RouteMatch){path(prefix, fmt.Sprintf("/svc/%d", i))}
		switch i % 3 {
		case 1:
			opts = append(opts, header(exact, "x-tenant-region", "eu"))
		case 2:
			opts = append(opts, query(exact, "v", "2"), method("GET"))
		}
		routes = append(routes, rt(fmt.Sprintf("prefix-%d", i), opts...))
	}
	routes = append(routes, rt("catch-all"))
	vhs := []*gatewayv1.VirtualHost{{Hostname: "api.example.com", Routes: routes}}
	for i := range 100 {
		vhs = append(vhs, &gatewayv1.VirtualHost{Hostname: fmt.Sprintf("h%d.example.com", i), Routes: []*gatewayv1.Route{rt("x")}})
	}
	vhs = append(vhs, &gatewayv1.VirtualHost{Hostname: "*.example.com", Routes: []*gatewayv1.Route{rt("wild")}})
	tb, err := CompileListener(&gatewayv1.Listener{Name: "http", VirtualHosts: vhs})
	if err != nil {
		b.Fatal(err)
	}
	if tb.Len() != 1000+100+1 {
		b.Fatalf("%d routes", tb.Len())
	}
	return tb
}

func BenchmarkMatch1000(b *testing.B) {
	tb := benchTable(b)
	cases := []struct {
		name, host, target string
		headers            http.Header
		want               string
	}{
		{"first", "api.example.com", "/api/v1/exact/0", nil, "exact-0"},
		{"exact-mid", "api.example.com", "/api/v1/exact/150", nil, "exact-150"},
		{"prefix-header-mid", "API.example.com:443", "/svc/334/items", http.Header{"X-Tenant-Region": {"eu"}}, "prefix-334"},
		{"prefix-query-late", "api.example.com", "/svc/677/x?a=1&v=2", nil, "prefix-677"},
		{"catch-all", "api.example.com", "/nothing/here", nil, "catch-all"},
		{"wildcard-host", "x.y.example.com", "/", nil, "wild"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p, q, _ := cut(c.target)
			h := c.headers
			if h == nil {
				h = http.Header{}
			}
			r := &Request{Host: c.host, Path: p, RawQuery: q, Method: "GET", Header: h}
			if got := matched(tb, r); got != c.want {
				b.Fatalf("matched %q, want %q", got, c.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				tb.Match(r)
			}
		})
	}
}

func cut(target string) (string, string, bool) {
	for i := range len(target) {
		if target[i] == '?' {
			return target[:i], target[i+1:], true
		}
	}
	return target, "", false
}

func BenchmarkCompile1000(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchTable(b)
	}
}

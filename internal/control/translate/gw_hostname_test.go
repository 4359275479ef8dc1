package translate

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIntersectHost(t *testing.T) {
	tests := []struct {
		listener, route string
		want            string
		ok              bool
	}{
		{"", "", "*", true},
		{"", "foo.example.com", "foo.example.com", true},
		{"foo.example.com", "", "foo.example.com", true},
		{"foo.example.com", "foo.example.com", "foo.example.com", true},
		{"foo.example.com", "bar.example.com", "", false},
		{"*.example.com", "foo.example.com", "foo.example.com", true},
		{"*.example.com", "a.b.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", "", false},
		{"foo.example.com", "*.example.com", "foo.example.com", true},
		{"*.example.com", "*.foo.example.com", "*.foo.example.com", true},
		{"*.foo.example.com", "*.example.com", "*.foo.example.com", true},
		{"*.example.com", "*.example.com", "*.example.com", true},
		{"*.example.com", "*.example.org", "", false},
		{"*.example.com", "test.example.net", "", false},
	}
	for _, tt := range tests {
		got, ok := intersectHost(tt.listener, tt.route)
		if got != tt.want || ok != tt.ok {
			t.Errorf("intersectHost(%q, %q) = %q, %v; want %q, %v", tt.listener, tt.route, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRouteHostsIgnoresNonMatching(t *testing.T) {
	got := routeHosts("*.example.com", []string{"test.example.com", "test.example.net", "test.example.com"})
	if diff := cmp.Diff([]string{"test.example.com"}, got); diff != "" {
		t.Errorf("routeHosts (-want +got):\n%s", diff)
	}
	if got := routeHosts("*.example.com", []string{"example.com"}); len(got) != 0 {
		t.Errorf("routeHosts with no intersection = %v, want none", got)
	}
}

func TestCompareHosts(t *testing.T) {
	hosts := []string{"*", "*.example.com", "foo.example.com", "*.foo.example.com", "a.example.com"}
	slices.SortFunc(hosts, compareHosts)
	want := []string{"foo.example.com", "a.example.com", "*.foo.example.com", "*.example.com", "*"}
	if diff := cmp.Diff(want, hosts); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

func TestValidHostname(t *testing.T) {
	for h, want := range map[string]bool{
		"example.com": true, "*.example.com": true, "a-b.c": true,
		"": false, "10.0.0.1": false, "Example.com": false, "*": false, "a..b": false, "-a.b": false, "foo.*.com": false,
	} {
		if got := validHostname(h); got != want {
			t.Errorf("validHostname(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestParseGatewayDuration(t *testing.T) {
	for in, ok := range map[string]bool{"1h": true, "500ms": true, "1m30s": true, "0s": true, "1.5s": false, "1d": false, "-1s": false, "100000s": false, "": false} {
		_, err := parseGatewayDuration(gwDuration(in))
		if (err == nil) != ok {
			t.Errorf("parseGatewayDuration(%q) error = %v, want ok=%v", in, err, ok)
		}
	}
}

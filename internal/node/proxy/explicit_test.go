package proxy_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambitmesh/ambit/internal/control/xds"
	"github.com/ambitmesh/ambit/internal/node/proxy"
)

func TestParseExplicit(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    proxy.Explicit
		wantErr bool
	}{
		{in: "127.0.0.1:9080=10.96.0.10:80", want: proxy.Explicit{Listen: netip.MustParseAddrPort("127.0.0.1:9080"), Target: netip.MustParseAddrPort("10.96.0.10:80")}},
		{in: "127.0.0.1:9080=10.96.0.10:80@shop/web-1", want: proxy.Explicit{Listen: netip.MustParseAddrPort("127.0.0.1:9080"), Target: netip.MustParseAddrPort("10.96.0.10:80"), Source: "shop/web-1"}},
		{in: "[::1]:9080=[fd00::10]:80", want: proxy.Explicit{Listen: netip.MustParseAddrPort("[::1]:9080"), Target: netip.MustParseAddrPort("[fd00::10]:80")}},
		{in: "127.0.0.1:9080", wantErr: true},
		{in: "127.0.0.1:9080=web.shop:80", wantErr: true},
		{in: "localhost:9080=10.96.0.10:80", wantErr: true},
		{in: "127.0.0.1:9080=10.96.0.10:80@web-1", wantErr: true},
		{in: "127.0.0.1:9080=10.96.0.10:80@shop/web/1", wantErr: true},
		{in: "127.0.0.1:9080=10.96.0.10:80@shop/", wantErr: true},
	} {
		got, err := proxy.ParseExplicit(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseExplicit(%q) err = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr {
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("ParseExplicit(%q) (-want +got):\n%s", tc.in, diff)
			}
		}
	}
}

func TestCheckWorkloadKey(t *testing.T) {
	if err := proxy.CheckWorkloadKey("shop/web-1"); err != nil {
		t.Errorf("CheckWorkloadKey(shop/web-1) = %v; want nil", err)
	}
	for _, key := range []string{"", "web-1", "/web-1", "shop/", "a/b/c", "shop/web 1"} {
		err := proxy.CheckWorkloadKey(key)
		if !errors.Is(err, proxy.ErrBadRequest) || !strings.Contains(err.Error(), "want <namespace>/<name>") {
			t.Errorf("CheckWorkloadKey(%q) = %v; want ErrBadRequest saying what a key looks like", key, err)
		}
	}
}

// The node proxy names its types from the generated code; they must be the
// ones the control plane serves to nodes.
func TestTypeURLsAreNodeTypes(t *testing.T) {
	sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	if diff := cmp.Diff(sorted(xds.NodeTypes), sorted(proxy.TypeURLs)); diff != "" {
		t.Errorf("proxy.TypeURLs vs xds.NodeTypes (-control +node):\n%s", diff)
	}
}

func TestParseHTTPProxy(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    proxy.HTTPProxy
		wantErr bool
	}{
		{in: "127.0.0.1:15080", want: proxy.HTTPProxy{Listen: netip.MustParseAddrPort("127.0.0.1:15080")}},
		{in: "127.0.0.1:15080@shop/web-1", want: proxy.HTTPProxy{Listen: netip.MustParseAddrPort("127.0.0.1:15080"), Source: "shop/web-1"}},
		{in: "localhost:15080", wantErr: true},
		{in: "127.0.0.1:15080@web-1", wantErr: true},
		{in: "127.0.0.1:15080@a/b/c", wantErr: true},
	} {
		got, err := proxy.ParseHTTPProxy(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseHTTPProxy(%q) err = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr {
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("ParseHTTPProxy(%q) (-want +got):\n%s", tc.in, diff)
			}
		}
	}
}

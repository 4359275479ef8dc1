package lb

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

func TestHTTPRequestCookie(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		cookie  string
		want    string
		wantOK  bool
	}{
		{name: "absent", headers: nil, cookie: "s"},
		{name: "only", headers: []string{"s=1"}, cookie: "s", want: "1", wantOK: true},
		{name: "among others", headers: []string{"a=1; s=2; b=3"}, cookie: "s", want: "2", wantOK: true},
		{name: "no space", headers: []string{"a=1;s=2"}, cookie: "s", want: "2", wantOK: true},
		{name: "prefix is not a match", headers: []string{"ss=1; s_=2"}, cookie: "s"},
		{name: "quoted", headers: []string{`s="v"`}, cookie: "s", want: "v", wantOK: true},
		{name: "empty value", headers: []string{"s="}, cookie: "s", want: "", wantOK: true},
		{name: "second header line", headers: []string{"a=1", "s=9"}, cookie: "s", want: "9", wantOK: true},
		{name: "first wins", headers: []string{"s=1; s=2"}, cookie: "s", want: "1", wantOK: true},
		{name: "no equals", headers: []string{"s; t=1"}, cookie: "s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.headers {
				h.Add("Cookie", v)
			}
			r := &HTTPRequest{Req: &http.Request{Header: h}}
			got, ok := r.Cookie(tt.cookie)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Cookie(%q) = %q, %v; want %q, %v", tt.cookie, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestHTTPRequestHeader(t *testing.T) {
	r := &HTTPRequest{Req: &http.Request{Host: "api.example", Header: http.Header{"X-Tenant": {"eu", "us"}, "X-Empty": {""}}}}
	tests := []struct {
		name   string
		want   string
		wantOK bool
	}{
		{name: "X-Tenant", want: "eu", wantOK: true},
		{name: "X-Empty", want: "", wantOK: true},
		{name: "X-Absent"},
		{name: "Host", want: "api.example", wantOK: true},
	}
	for _, tt := range tests {
		got, ok := r.Header(tt.name)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("Header(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
	// Policies are configured in any case and canonicalized once, so a
	// lower-case name in config finds the header.
	b := mustNew(t, Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashHeader, Name: "x-tenant"}}, Seed: 1}, endpoints(8))
	eu := &HTTPRequest{Req: &http.Request{Header: http.Header{"X-Tenant": {"eu"}}}}
	first, _ := b.Pick(eu)
	for range 20 {
		// Without the header the key is random; with it, fixed.
		ep, _ := b.Pick(eu)
		if ep.ID != first.ID {
			t.Fatalf("x-tenant: eu went to %s and %s", first.ID, ep.ID)
		}
	}
}

func TestFromBackend(t *testing.T) {
	v4 := []byte{10, 1, 0, 5}
	v6 := netip.MustParseAddr("fd00::5").AsSlice()
	mapped := netip.MustParseAddr("::ffff:10.1.0.6").AsSlice()
	ports := func(sp, tp uint32) []*workloadv1.PortMapping {
		return []*workloadv1.PortMapping{{ServicePort: 9090, TargetPort: 9091}, {ServicePort: sp, TargetPort: tp}}
	}
	b := &gatewayv1.Backend{Namespace: "shop", Name: "cart", Endpoints: []*gatewayv1.Endpoint{
		{Workload: &gatewayv1.ObjectRef{Namespace: "shop", Name: "cart-1"}, Addresses: [][]byte{v6, v4}, Ports: ports(80, 8080),
			Locality: &workloadv1.Locality{Region: "eu", Zone: "a", Subzone: "r1"}},
		{Addresses: [][]byte{mapped}, Ports: ports(80, 8081)},                                                                // no workload: ID is the address
		{Workload: &gatewayv1.ObjectRef{Namespace: "shop", Name: "cart-3"}, Addresses: [][]byte{v4}, Ports: ports(81, 8080)}, // port 80 not mapped
		{Workload: &gatewayv1.ObjectRef{Namespace: "shop", Name: "cart-4"}, Addresses: [][]byte{{1, 2, 3}}, Ports: ports(80, 8080)},
		{Workload: &gatewayv1.ObjectRef{Namespace: "shop", Name: "cart-1"}, Addresses: [][]byte{v4}, Ports: ports(80, 8080)}, // duplicate
		{Workload: &gatewayv1.ObjectRef{Namespace: "shop", Name: "cart-6"}, Addresses: [][]byte{v6}, Ports: ports(80, 8080)}, // v6 only
	}}
	got := FromBackend(b, 80, false)
	want := []Endpoint{
		{ID: "shop/cart-1", Addr: netip.MustParseAddrPort("10.1.0.5:8080"), Locality: Locality{Region: "eu", Zone: "a", Subzone: "r1"}, Value: b.Endpoints[0]},
		{ID: "10.1.0.6:8081", Addr: netip.MustParseAddrPort("10.1.0.6:8081"), Value: b.Endpoints[1]},
		{ID: "shop/cart-6", Addr: netip.MustParseAddrPort("[fd00::5]:8080"), Value: b.Endpoints[5]},
	}
	opts := cmp.Options{cmpopts.IgnoreUnexported(Endpoint{}), cmpopts.EquateComparable(netip.AddrPort{}), cmp.Comparer(func(a, b *gatewayv1.Endpoint) bool { return a == b })}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("FromBackend (-want +got):\n%s", diff)
	}
	if got := FromBackend(b, 80, true); got[0].Addr != netip.MustParseAddrPort("[fd00::5]:8080") {
		t.Errorf("preferring IPv6, cart-1 got %v", got[0].Addr)
	}
	if bal := mustNew(t, Config{}, got); bal.Stats().Endpoints != 3 {
		t.Errorf("balancer from FromBackend has %d endpoints, want 3", bal.Stats().Endpoints)
	}
}

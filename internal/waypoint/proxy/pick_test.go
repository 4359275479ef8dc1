package proxy

import (
	"fmt"
	"net/netip"
	"testing"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// A waypoint's TCP pass-through honours a Service's source-ip hash: every
// connection of a client goes to one endpoint, which its metrics describe
// by the endpoint's workload.
func TestPickEndpointHashesSourceIP(t *testing.T) {
	var eps []netip.AddrPort
	for i := range 8 {
		eps = append(eps, netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:5432", i+1)))
	}
	b := backend("db", eps...)
	for _, ep := range b.Endpoints {
		ep.Identity = "spiffe://cluster.local/ns/default/sa/db"
		ep.Labels = map[string]string{"app": "orders-db", "version": "v7"}
	}
	b.LoadBalancer = &gatewayv1.LoadBalancer{Policy: "ConsistentHash", Hash: &gatewayv1.HashKey{SourceIp: true}}
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if err := e.Apply(nil, nil, []*gatewayv1.Backend{b}); err != nil {
		t.Fatal(err)
	}
	for _, client := range []string{"192.168.1.7", "192.168.1.8", "fd00::9"} {
		src := netip.MustParseAddr(client)
		first, dst, done, ok := e.PickEndpoint("default/db", 80, src)
		if !ok {
			t.Fatal("no endpoint picked")
		}
		if dst.Workload == "" || dst.Namespace != "default" || dst.Principal != "spiffe://cluster.local/ns/default/sa/db" ||
			dst.CanonicalService != "orders-db" || dst.Version != "v7" {
			t.Errorf("destination %+v, want the endpoint's workload, identity and labels", dst)
		}
		done()
		for range 20 {
			ep, _, done, _ := e.PickEndpoint("default/db", 80, src)
			done()
			if ep != first {
				t.Fatalf("client %s went to %s, then to %s; want one endpoint", client, first, ep)
			}
		}
	}
}

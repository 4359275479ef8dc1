package proxy

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/ambitmesh/ambit/internal/waypoint/lb"
	"github.com/ambitmesh/ambit/internal/waypoint/route"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// WorkloadHandler serves a waypoint's HTTP traffic addressed directly to a
// bound workload ("<ns>/<name>" at ep, with its SPIFFE identity): the
// policies that target the waypoint itself, then passed through to ep
// (HTTPRoutes attach to Services, not to workloads).
func (e *Engine) WorkloadHandler(workload string, ep netip.AddrPort, identity string) http.Handler {
	ck := workload + "@" + ep.String() + "@" + identity
	key := portKey(workload, uint32(ep.Port()))
	table := func(c *config) *route.Table { return c.passthrough[key] }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.serveConfig(w, r, uint32(ep.Port()), "", true, e.workloadConfig(ck, key, workload, ep, identity), table)
	})
}

// workloadConfig is a configuration holding only the pass-through route
// (under key) to one workload address, built on first use and kept under
// ck until the next Apply (which may have moved the workload).
func (e *Engine) workloadConfig(ck, key, workload string, ep netip.AddrPort, identity string) *config {
	if c, ok := e.workloads.Load(ck); ok {
		return c.(*config)
	}
	ns, name, _ := strings.Cut(workload, "/")
	port := uint32(ep.Port())
	b := &gatewayv1.Backend{Namespace: ns, Name: name, Endpoints: []*gatewayv1.Endpoint{{
		Workload:  &gatewayv1.ObjectRef{Namespace: ns, Name: name},
		Addresses: [][]byte{ep.Addr().AsSlice()},
		Identity:  identity,
		Ports:     []*workloadv1.PortMapping{{ServicePort: port, TargetPort: port}},
	}}}
	r := passthroughRouteOf("Workload", b, port)
	t, _ := route.CompileRouteTable(&gatewayv1.RouteTable{Routes: []*gatewayv1.Route{r}})
	bal, _ := lb.New(e.cfg.Balancer) // checked by New
	_ = bal.Update(lb.FromBackend(b, port, e.cfg.PreferIPv6))
	c := &config{
		passthrough: map[string]*route.Table{key: t},
		routes:      map[*gatewayv1.Route]*compiledRoute{r: compileRoute(r)},
		backends:    map[balKey]*upstream{{workload, port}: {backend: b, port: port, bal: bal}},
	}
	actual, _ := e.workloads.LoadOrStore(ck, c)
	return actual.(*config)
}

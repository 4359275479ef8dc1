// Package controlplane benchmarks the control plane's xDS side against a
// synthetic mesh (see bench/README.md). The generator is deterministic so
// runs are comparable.
package controlplane

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/ambitmesh/ambit/internal/control/model"
)

// Size describes a synthetic mesh.
type Size struct {
	Workloads  int // spread evenly over Services
	Services   int
	Routes     int // HTTPRoutes: half on the ingress gateway, half GAMMA routes on waypoints
	Nodes      int
	Namespaces int
	Waypoints  int // services with an odd index are bound to a waypoint
}

// Default is the size the issue asks for.
var Default = Size{Workloads: 10000, Services: 1000, Routes: 1000, Nodes: 50, Namespaces: 20, Waypoints: 10}

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// Mesh builds the synthetic mesh, sorted like the translator's output.
func Mesh(sz Size) *model.Mesh {
	m := &model.Mesh{TrustDomain: "cluster.local", RootNamespace: "ambit-system", ClusterDomain: "cluster.local", MTLSMode: model.MTLSStrict}
	ns := func(i int) string { return fmt.Sprintf("ns-%02d", i%sz.Namespaces) }
	svcRef := func(s int) model.Ref { return model.Ref{Namespace: ns(s), Name: fmt.Sprintf("svc-%04d", s)} }
	wpRef := func(s int) model.Ref {
		return model.Ref{Namespace: "waypoints", Name: fmt.Sprintf("wp-%02d", s%sz.Waypoints)}
	}

	perSvc := sz.Workloads / sz.Services
	m.Workloads = make([]model.Workload, 0, sz.Workloads)
	m.Services = make([]model.Service, 0, sz.Services)
	for s := 0; s < sz.Services; s++ {
		ref := svcRef(s)
		svc := model.Service{
			Ref:      ref,
			Hostname: ref.Name + "." + ref.Namespace + ".svc.cluster.local",
			VIPs:     []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(s >> 8), byte(s)})},
			Ports:    []model.ServicePort{{Name: "http", Port: 80, Protocol: "TCP", AppProtocol: "http", TargetPort: 8080}},
			Selector: map[string]string{"app": ref.Name},
		}
		if s%2 == 1 && sz.Waypoints > 0 {
			svc.Waypoint = &model.WaypointBinding{Gateway: wpRef(s), From: "service"}
		}
		for k := 0; k < perSvc; k++ {
			i := s*perSvc + k
			w := model.Workload{
				Ref:            model.Ref{Namespace: ref.Namespace, Name: fmt.Sprintf("%s-%d", ref.Name, k)},
				UID:            fmt.Sprintf("uid-%06d", i),
				ServiceAccount: ref.Name,
				Identity:       "spiffe://cluster.local/ns/" + ref.Namespace + "/sa/" + ref.Name,
				Addresses:      []netip.Addr{addr(i + 1)},
				Node:           fmt.Sprintf("node-%02d", i%sz.Nodes),
				Labels:         map[string]string{"app": ref.Name, "version": "v1"},
				Locality:       model.Locality{Region: "r1", Zone: fmt.Sprintf("z%d", i%3)},
			}
			m.Workloads = append(m.Workloads, w)
			svc.Endpoints = append(svc.Endpoints, model.Endpoint{
				Workload: w.Ref, Addresses: w.Addresses, Node: w.Node, Identity: w.Identity, Locality: w.Locality,
				Ports: []model.PortMapping{{ServicePort: 80, TargetPort: 8080}},
			})
		}
		m.Services = append(m.Services, svc)
	}

	ingress := model.Gateway{
		Ref: model.Ref{Namespace: "ingress", Name: "gw"}, Class: model.ClassIngress,
		Identity: "spiffe://cluster.local/ns/ingress/sa/gw",
	}
	listener := model.Listener{Name: "http", Port: 80, Protocol: "HTTP"}
	waypoints := make([]model.Gateway, sz.Waypoints)
	for i := range waypoints {
		ref := wpRef(i)
		waypoints[i] = model.Gateway{Ref: ref, Class: model.ClassWaypoint, Identity: "spiffe://cluster.local/ns/waypoints/sa/" + ref.Name,
			WaypointFor: "service", Listeners: []model.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}}}
	}
	for r := 0; r < sz.Routes; r++ {
		s := r % sz.Services
		ref := svcRef(s)
		route := model.Route{
			Source: model.RouteSource{Kind: "HTTPRoute", Ref: model.Ref{Namespace: ref.Namespace, Name: fmt.Sprintf("route-%04d", r)}},
			Match:  model.RouteMatch{Path: &model.PathMatch{Type: model.MatchPathPrefix, Value: "/"}},
			Filters: []model.Filter{{Type: "RequestHeaderModifier", RequestHeaderModifier: &model.HeaderModifier{
				Set: []model.Header{{Name: "x-route", Value: fmt.Sprint(r)}}}}},
			Backends: []model.Backend{
				{Service: ref, Port: 80, Weight: 90},
				{Service: svcRef((s + 2) % sz.Services), Port: 80, Weight: 10},
			},
			Timeouts: model.Timeouts{Request: 15 * time.Second},
		}
		if r%2 == 0 || sz.Waypoints == 0 {
			listener.VirtualHosts = append(listener.VirtualHosts, model.VirtualHost{
				Hostname: fmt.Sprintf("%s.example.com", ref.Name), Routes: []model.Route{route}})
			continue
		}
		wp := &waypoints[s%sz.Waypoints]
		wp.MeshRoutes = append(wp.MeshRoutes, model.ServiceRoutes{Service: ref, Port: 80, Routes: []model.Route{route}})
	}
	ingress.Listeners = []model.Listener{listener}
	m.Gateways = append([]model.Gateway{ingress}, waypoints...)

	for n := 0; n < sz.Namespaces; n++ {
		name := fmt.Sprintf("ns-%02d", n)
		m.Policies = append(m.Policies, model.Policy{
			Ref: model.Ref{Namespace: name, Name: "allow-mesh"}, Action: "ALLOW", Scope: model.ScopeNamespace,
			Rules: []model.PolicyRule{{From: []model.PolicySource{{Namespaces: []string{name, "ingress"}}}}},
		})
	}
	m.Policies = append(m.Policies, model.Policy{
		Ref: model.Ref{Namespace: "ambit-system", Name: "deny-blocked"}, Action: "DENY", Scope: model.ScopeMesh,
		Rules: []model.PolicyRule{{From: []model.PolicySource{{IPBlocks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}}}},
	})

	sortRefs(m.Workloads, func(w model.Workload) model.Ref { return w.Ref })
	sortRefs(m.Services, func(s model.Service) model.Ref { return s.Ref })
	sortRefs(m.Gateways, func(g model.Gateway) model.Ref { return g.Ref })
	sortRefs(m.Policies, func(p model.Policy) model.Ref { return p.Ref })
	return m
}

func sortRefs[T any](s []T, ref func(T) model.Ref) {
	slices.SortFunc(s, func(a, b T) int {
		ra, rb := ref(a), ref(b)
		return cmp.Or(cmp.Compare(ra.Namespace, rb.Namespace), cmp.Compare(ra.Name, rb.Name))
	})
}

// MoveEndpoint returns a copy of m in which workload index w has address ip,
// in the workload and in the endpoints that reference it: the smallest
// change that reaches every node proxy. Unchanged parts are shared with m.
func MoveEndpoint(m *model.Mesh, w int, ip netip.Addr) *model.Mesh {
	out := *m
	out.Workloads = slices.Clone(m.Workloads)
	wl := &out.Workloads[w]
	wl.Addresses = []netip.Addr{ip}
	out.Services = slices.Clone(m.Services)
	for i := range out.Services {
		s := &out.Services[i]
		for j := range s.Endpoints {
			if s.Endpoints[j].Workload == wl.Ref {
				s.Endpoints = slices.Clone(s.Endpoints)
				s.Endpoints[j].Addresses = wl.Addresses
			}
		}
	}
	return &out
}

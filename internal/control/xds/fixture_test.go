package xds

import (
	"net/netip"
	"time"

	"github.com/ambitmesh/ambit/internal/control/model"
)

// testMesh is a small mesh exercising every view rule:
//   - nodes n1 (ns a: web-1, db-1) and n2 (ns a: web-2, ns b: api-1), n3 has
//     no workloads;
//   - services a/web (web-1, web-2) bound to waypoint a/wp, a/db, b/api;
//   - policies of every scope;
//   - waypoint a/wp with a GAMMA route for a/web mirroring to b/api, and
//     ingress gateway b/gw routing to b/api and to a missing service.
func testMesh() *model.Mesh {
	addr := netip.MustParseAddr
	wl := func(ns, name, node, ip string, labels map[string]string) model.Workload {
		return model.Workload{
			Ref:            model.Ref{Namespace: ns, Name: name},
			UID:            "uid-" + name,
			ServiceAccount: "sa-" + name,
			Identity:       "spiffe://cluster.local/ns/" + ns + "/sa/sa-" + name,
			Addresses:      []netip.Addr{addr(ip)},
			Node:           node,
			Labels:         labels,
			Locality:       model.Locality{Region: "r1", Zone: "z-" + node},
		}
	}
	ep := func(w model.Workload, sp, tp int32) model.Endpoint {
		return model.Endpoint{
			Workload: w.Ref, Addresses: w.Addresses, Node: w.Node, Identity: w.Identity, Locality: w.Locality,
			Ports: []model.PortMapping{{ServicePort: sp, TargetPort: tp}},
		}
	}
	web1 := wl("a", "web-1", "n1", "10.0.1.1", map[string]string{"app": "web"})
	db1 := wl("a", "db-1", "n1", "10.0.1.2", map[string]string{"app": "db"})
	web2 := wl("a", "web-2", "n2", "10.0.2.1", map[string]string{"app": "web"})
	api1 := wl("b", "api-1", "n2", "10.0.2.2", map[string]string{"app": "api"})
	wp := &model.WaypointBinding{Gateway: model.Ref{Namespace: "a", Name: "wp"}, From: "service"}
	svc := func(ns, name, vip string, eps ...model.Endpoint) model.Service {
		return model.Service{
			Ref:       model.Ref{Namespace: ns, Name: name},
			Hostname:  name + "." + ns + ".svc.cluster.local",
			VIPs:      []netip.Addr{addr(vip)},
			Ports:     []model.ServicePort{{Name: "http", Port: 80, Protocol: "TCP", TargetPort: 8080}},
			Endpoints: eps,
		}
	}
	web := svc("a", "web", "10.96.0.1", ep(web1, 80, 8080), ep(web2, 80, 8080))
	web.Waypoint = wp
	route := func(kind string, ref model.Ref, backends ...model.Backend) model.Route {
		return model.Route{
			Source:   model.RouteSource{Kind: kind, Ref: ref},
			Match:    model.RouteMatch{Path: &model.PathMatch{Type: model.MatchPathPrefix, Value: "/"}},
			Backends: backends,
		}
	}
	webRoute := route("HTTPRoute", model.Ref{Namespace: "a", Name: "web-route"},
		model.Backend{Service: model.Ref{Namespace: "a", Name: "web"}, Port: 80, Weight: 1})
	webRoute.Filters = []model.Filter{{Type: "RequestMirror", RequestMirror: &model.Mirror{
		Backend: model.Backend{Service: model.Ref{Namespace: "b", Name: "api"}, Port: 80, Weight: 1}, Numerator: 1, Denominator: 10,
	}}}
	webRoute.Timeouts = model.Timeouts{Request: 5 * time.Second}
	webRoute.Retry = &model.Retry{Codes: []int{503}, Attempts: 2, Backoff: 100 * time.Millisecond}
	ingressRoute := route("HTTPRoute", model.Ref{Namespace: "b", Name: "ingress"},
		model.Backend{Service: model.Ref{Namespace: "b", Name: "api"}, Port: 80, Weight: 9},
		model.Backend{Weight: 1, Invalid: "BackendNotFound: Service b/gone not found"})
	ingressRoute.Match.Headers = []model.StringMatch{{Type: model.MatchExact, Name: "x-env", Value: "prod"}}
	ingressRoute.Filters = []model.Filter{{Type: "RequestHeaderModifier", RequestHeaderModifier: &model.HeaderModifier{
		Set: []model.Header{{Name: "x-via", Value: "gw"}}, Remove: []string{"x-debug"},
	}}}

	return &model.Mesh{
		TrustDomain:   "cluster.local",
		RootNamespace: "ambit-system",
		ClusterDomain: "cluster.local",
		MTLSMode:      model.MTLSStrict,
		Workloads:     []model.Workload{db1, web1, web2, api1},
		Services: []model.Service{
			svc("a", "db", "10.96.0.2", ep(db1, 5432, 5432)),
			web,
			svc("b", "api", "10.96.0.3", ep(api1, 80, 9090)),
		},
		Gateways: []model.Gateway{
			{
				Ref: model.Ref{Namespace: "a", Name: "wp"}, Class: model.ClassWaypoint,
				Identity: "spiffe://cluster.local/ns/a/sa/wp", WaypointFor: "service",
				Listeners: []model.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}},
				MeshRoutes: []model.ServiceRoutes{{
					Service: model.Ref{Namespace: "a", Name: "web"}, Port: 80, Routes: []model.Route{webRoute},
				}},
			},
			{
				Ref: model.Ref{Namespace: "b", Name: "gw"}, Class: model.ClassIngress,
				Identity: "spiffe://cluster.local/ns/b/sa/gw",
				Listeners: []model.Listener{{
					Name: "http", Port: 80, Protocol: "HTTP",
					VirtualHosts: []model.VirtualHost{{Hostname: "*", Routes: []model.Route{ingressRoute}}},
				}},
			},
		},
		Policies: []model.Policy{
			{Ref: model.Ref{Namespace: "a", Name: "ns-allow"}, Action: "ALLOW", Scope: model.ScopeNamespace,
				Rules: []model.PolicyRule{{From: []model.PolicySource{{Namespaces: []string{"a"}, IPBlocks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}}}},
			{Ref: model.Ref{Namespace: "a", Name: "wp-l7"}, Action: "DENY", Scope: model.ScopeTargets,
				Targets: []model.PolicyTarget{{Kind: "Service", Ref: model.Ref{Namespace: "a", Name: "web"}}},
				Rules:   []model.PolicyRule{{To: []model.PolicyOperation{{Methods: []string{"DELETE"}, Ports: []int32{80}}}}}},
			{Ref: model.Ref{Namespace: "ambit-system", Name: "mesh-deny"}, Action: "DENY", Scope: model.ScopeMesh,
				Rules: []model.PolicyRule{{When: []model.PolicyCondition{{Key: "source.ip", Values: []string{"192.0.2.1"}}}}}},
			{Ref: model.Ref{Namespace: "b", Name: "api-only"}, Action: "ALLOW", Scope: model.ScopeWorkloads,
				Selector: map[string]string{"app": "api"}, Workloads: []model.Ref{{Namespace: "b", Name: "api-1"}}},
			{Ref: model.Ref{Namespace: "b", Name: "gw-policy"}, Action: "AUDIT", Scope: model.ScopeTargets,
				Targets: []model.PolicyTarget{{Kind: "Gateway", Ref: model.Ref{Namespace: "b", Name: "gw"}}}},
		},
	}
}

// withMovedWorkload returns a copy of m in which workload a/web-2 (and its
// endpoint in a/web) has a new address: a one-endpoint change.
func withMovedWorkload(m *model.Mesh, ip string) *model.Mesh {
	out := *m
	out.Workloads = append([]model.Workload(nil), m.Workloads...)
	out.Services = append([]model.Service(nil), m.Services...)
	a := []netip.Addr{netip.MustParseAddr(ip)}
	for i := range out.Workloads {
		if out.Workloads[i].Ref == (model.Ref{Namespace: "a", Name: "web-2"}) {
			out.Workloads[i].Addresses = a
		}
	}
	for i := range out.Services {
		s := &out.Services[i]
		s.Endpoints = append([]model.Endpoint(nil), s.Endpoints...)
		for j := range s.Endpoints {
			if s.Endpoints[j].Workload == (model.Ref{Namespace: "a", Name: "web-2"}) {
				s.Endpoints[j].Addresses = a
			}
		}
	}
	return &out
}

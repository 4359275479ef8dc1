package xds

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/ambitmesh/ambit/internal/control/model"
)

// TestMemoEqualityCoversEveryField fails when a model type the memos compare
// gains a field: a field the equality ignores would let a change go unsent.
func TestMemoEqualityCoversEveryField(t *testing.T) {
	for _, tt := range []struct {
		typ    reflect.Type
		fields int
	}{
		{reflect.TypeFor[model.Workload](), 11},
		{reflect.TypeFor[model.Service](), 10},
		{reflect.TypeFor[model.BackendTLS](), 6},
		{reflect.TypeFor[model.Endpoint](), 8},
	} {
		if n := tt.typ.NumField(); n != tt.fields {
			t.Errorf("model.%s has %d fields, memo.go compares %d: update workloadEqual/serviceEqual/endpointEqual/backendTLSEqual and this test",
				tt.typ.Name(), n, tt.fields)
		}
	}
}

func TestMemoEquality(t *testing.T) {
	base := testMesh()
	w := base.Workloads[0]
	s := base.Services[1]
	tests := []struct {
		name   string
		mutW   func(*model.Workload)
		mutS   func(*model.Service)
		differ bool
	}{
		{name: "identical copy"},
		{name: "workload address", mutW: func(w *model.Workload) { w.Addresses = []netip.Addr{netip.MustParseAddr("10.9.9.9")} }, differ: true},
		{name: "workload label", mutW: func(w *model.Workload) { w.Labels = map[string]string{"app": "other"} }, differ: true},
		{name: "workload waypoint", mutW: func(w *model.Workload) { w.Waypoint = &model.WaypointBinding{From: "workload"} }, differ: true},
		{name: "workload locality", mutW: func(w *model.Workload) { w.Locality.Subzone = "x" }, differ: true},
		{name: "service endpoint port", mutS: func(s *model.Service) {
			s.Endpoints = append([]model.Endpoint(nil), s.Endpoints...)
			s.Endpoints[0].Ports = []model.PortMapping{{ServicePort: 80, TargetPort: 1}}
		}, differ: true},
		{name: "service endpoint labels", mutS: func(s *model.Service) {
			s.Endpoints = append([]model.Endpoint(nil), s.Endpoints...)
			s.Endpoints[0].Labels = map[string]string{"version": "v9"}
		}, differ: true},
		{name: "service waypoint removed", mutS: func(s *model.Service) { s.Waypoint = nil }, differ: true},
		{name: "service backend TLS", mutS: func(s *model.Service) { s.TLS = []model.BackendTLS{{Port: 80, SNI: "a"}} }, differ: true},
		{name: "service VIP", mutS: func(s *model.Service) { s.VIPs = nil }, differ: true},
		{name: "service load balancer", mutS: func(s *model.Service) { s.LoadBalancer = &model.LoadBalancer{Policy: model.LBRandom} }, differ: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w2, s2 := w, s
			if tt.mutW != nil {
				tt.mutW(&w2)
			}
			if tt.mutS != nil {
				tt.mutS(&s2)
			}
			if got := !workloadEqual(&w, &w2) || !serviceEqual(&s, &s2); got != tt.differ {
				t.Errorf("differ = %v, want %v", got, tt.differ)
			}
		})
	}
}

func TestLoadBalancerEqual(t *testing.T) {
	hash := func(h string) *model.LoadBalancer {
		return &model.LoadBalancer{Policy: model.LBConsistentHash, Hash: &model.HashKey{Header: h}}
	}
	for _, tt := range []struct {
		a, b *model.LoadBalancer
		want bool
	}{
		{nil, nil, true},
		{nil, &model.LoadBalancer{Policy: model.LBRoundRobin}, false},
		{hash("x-a"), hash("x-a"), true},
		{hash("x-a"), hash("x-b"), false},
		{hash("x-a"), &model.LoadBalancer{Policy: model.LBConsistentHash}, false},
	} {
		if got := loadBalancerEqual(tt.a, tt.b); got != tt.want {
			t.Errorf("loadBalancerEqual(%+v, %+v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

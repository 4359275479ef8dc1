package xds

import (
	"bytes"
	"maps"
	"reflect"
	"slices"

	"github.com/ambitmesh/ambit/internal/control/model"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// Marshaling dominates ComputeViews, and between two translations almost
// every Workload and Service is unchanged. The memos remember, per object,
// the model value a resource was built from, so an equal object reuses the
// resource without building or marshaling anything. The model is immutable
// once built, so keeping pointers into the previous mesh is safe.
//
// The equality functions must compare every field; TestMemoEqualityCoversEveryField
// fails when a model field is added without updating them.

// backing is one service a workload backs, with its port mapping.
type backing struct {
	service string // "ns/name"
	svc     int    // index in mesh.Services: backings are in that order
	ports   []model.PortMapping
}

// workloadMemo and serviceMemo sit at the index of their model object in
// Views.src.
type workloadMemo struct {
	backs []backing
	res   *Resource
}

type serviceMemo struct {
	svc     *Resource
	backend *Resource // built on first use by a gateway view
}

func portLists(bs []backing) map[string]*workloadv1.PortList {
	if len(bs) == 0 {
		return nil
	}
	out := make(map[string]*workloadv1.PortList, len(bs))
	for _, b := range bs {
		out[b.service] = &workloadv1.PortList{Ports: portMappings(b.ports)}
	}
	return out
}

func backingsEqual(a, b []backing) bool {
	return slices.EqualFunc(a, b, func(x, y backing) bool {
		return x.service == y.service && slices.Equal(x.ports, y.ports)
	})
}

func waypointEqual(a, b *model.WaypointBinding) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func workloadEqual(a, b *model.Workload) bool {
	if a == b {
		return true
	}
	return a.Ref == b.Ref && a.UID == b.UID && a.ServiceAccount == b.ServiceAccount && a.Identity == b.Identity &&
		slices.Equal(a.Addresses, b.Addresses) && a.Node == b.Node && a.Network == b.Network &&
		mapsEqual(a.Labels, b.Labels) && a.Locality == b.Locality && mapsEqual(a.Ports, b.Ports) &&
		waypointEqual(a.Waypoint, b.Waypoint)
}

func endpointEqual(a, b model.Endpoint) bool {
	return a.Workload == b.Workload && slices.Equal(a.Addresses, b.Addresses) && a.Node == b.Node &&
		a.Network == b.Network && a.Identity == b.Identity && a.Locality == b.Locality && slices.Equal(a.Ports, b.Ports) &&
		mapsEqual(a.Labels, b.Labels)
}

func serviceEqual(a, b *model.Service) bool {
	if a == b {
		return true
	}
	return a.Ref == b.Ref && a.Hostname == b.Hostname && slices.Equal(a.VIPs, b.VIPs) && slices.Equal(a.Ports, b.Ports) &&
		mapsEqual(a.Selector, b.Selector) && mapsEqual(a.Labels, b.Labels) &&
		slices.EqualFunc(a.Endpoints, b.Endpoints, endpointEqual) && waypointEqual(a.Waypoint, b.Waypoint) &&
		loadBalancerEqual(a.LoadBalancer, b.LoadBalancer) && slices.EqualFunc(a.TLS, b.TLS, backendTLSEqual)
}

func backendTLSEqual(a, b model.BackendTLS) bool {
	return a.Port == b.Port && a.Policy == b.Policy && a.SNI == b.SNI && bytes.Equal(a.CAPEM, b.CAPEM) &&
		a.SystemRoots == b.SystemRoots && slices.Equal(a.SubjectAltNames, b.SubjectAltNames)
}

func loadBalancerEqual(a, b *model.LoadBalancer) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Policy == b.Policy && (a.Hash == b.Hash || a.Hash != nil && b.Hash != nil && *a.Hash == *b.Hash)
}

// mapsEqual is maps.Equal, short-cut for the same map: a retranslation
// shares the maps of unchanged objects with the previous model.
func mapsEqual[M ~map[K]V, K, V comparable](a, b M) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer() || maps.Equal(a, b))
}

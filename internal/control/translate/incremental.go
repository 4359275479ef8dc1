package translate

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/ambitmesh/ambit/api/v1alpha1"
	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

// Retranslate returns what Translate(res) returns, given prev =
// Translate(prevRes). The common change of a running mesh, Workloads edited
// in place (an address, node, port, service account moves), costs O(the
// edit) plus a copy of the model's slices instead of a full translation: the
// edited workloads, their status and their endpoints are patched into prev.
// Anything else (another kind changed, a workload added, removed,
// relabelled, rejected or in an address conflict) is translated in full.
//
// Sources patch their snapshots, so an unchanged kind is the very same
// slice and an unchanged object the very same pointer; that is what makes
// finding the edit cheap. prev and prevRes are not modified.
func Retranslate(prev *Result, prevRes, res *resources.Resources) *Result {
	if r, ok := patchWorkloads(prev, prevRes, res); ok {
		return r
	}
	return Translate(res)
}

// patchWorkloads is Retranslate's fast path; ok is false when it does not
// apply.
func patchWorkloads(prev *Result, prevRes, res *resources.Resources) (_ *Result, ok bool) {
	if prev == nil || prevRes == nil || !onlyWorkloadsDiffer(prevRes, res) ||
		len(prevRes.Workloads) != len(res.Workloads) {
		return nil, false
	}
	var edited []int // indices into res.Workloads
	for i, w := range res.Workloads {
		if old := prevRes.Workloads[i]; old != w {
			if old.Namespace != w.Namespace || old.Name != w.Name || !maps.Equal(old.Labels, w.Labels) {
				return nil, false // added, removed or relabelled: services, policies and waypoints may move
			}
			edited = append(edited, i)
		}
	}
	if len(edited) == 0 {
		return &Result{Mesh: prev.Mesh, Status: prev.Status, SourceErrors: res.Errors}, true
	}

	// Validate the edited workloads with the translator's own code. Address
	// conflicts among them are found there; those with any other workload
	// below.
	mini := &translator{
		res:       &resources.Resources{MeshConfig: res.MeshConfig},
		mesh:      &model.Mesh{},
		status:    map[status.ObjectRef]*status.Object{},
		workloads: map[model.Ref]*model.Workload{},
	}
	for _, i := range edited {
		mini.res.Workloads = append(mini.res.Workloads, res.Workloads[i])
	}
	mini.meshSettings()
	mini.translateWorkloads()
	if len(mini.mesh.Workloads) != len(edited) {
		return nil, false // one was rejected
	}

	mesh := *prev.Mesh
	mesh.Workloads = slices.Clone(prev.Mesh.Workloads)
	mesh.Services = slices.Clone(prev.Mesh.Services)
	st := slices.Clone(prev.Status)
	type netAddr struct {
		network string
		addr    netip.Addr
	}
	claimed := map[netAddr]bool{}
	changed := map[model.Ref]*model.Workload{}
	for j := range mini.mesh.Workloads {
		w := &mini.mesh.Workloads[j]
		k, found := slices.BinarySearchFunc(mesh.Workloads, w.Ref, func(m model.Workload, r model.Ref) int { return compareRef(m.Ref, r) })
		if !found {
			return nil, false // it was rejected before
		}
		old := &mesh.Workloads[k]
		for _, a := range old.Addresses {
			claimed[netAddr{old.Network, a}] = true
		}
		for _, a := range w.Addresses {
			claimed[netAddr{w.Network, a}] = true
		}
		// Same labels, namespace objects and gateways: same binding.
		w.Waypoint = old.Waypoint
		*old = *w
		changed[w.Ref] = old

		ref := status.ObjectRef{Group: v1alpha1.GroupVersion.Group, Kind: "Workload", Namespace: w.Namespace, Name: w.Name}
		s, found := slices.BinarySearchFunc(st, ref, func(o status.Object, r status.ObjectRef) int { return o.ObjectRef.Compare(r) })
		if !found {
			return nil, false
		}
		conds := slices.Clone(mini.status[ref].Conditions)
		for _, c := range st[s].Conditions {
			if c.Type == ConditionWaypointBound {
				c.ObservedGeneration = conds[0].ObservedGeneration
				setCondition(&conds, c)
			}
		}
		st[s].Conditions = conds
	}
	// An address the edit frees or takes must be nobody else's: otherwise
	// which workload owns it (and which is rejected) may change.
	for i, w := range res.Workloads {
		if prevRes.Workloads[i] != w {
			continue // edited
		}
		for _, a := range w.Spec.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil && claimed[netAddr{w.Spec.Network, ip.Unmap()}] {
				return nil, false
			}
		}
	}
	for i := range mesh.Services {
		s := &mesh.Services[i]
		copied := false
		for e := range s.Endpoints {
			w, ok := changed[s.Endpoints[e].Workload]
			if !ok {
				continue
			}
			if !copied {
				s.Endpoints, copied = slices.Clone(s.Endpoints), true
			}
			s.Endpoints[e] = endpoint(s, w)
		}
	}
	return &Result{Mesh: &mesh, Status: st, SourceErrors: res.Errors}, true
}

// onlyWorkloadsDiffer reports whether every kind but Workloads is the same
// slice (or object) in both snapshots.
func onlyWorkloadsDiffer(a, b *resources.Resources) bool {
	return a.MeshConfig == b.MeshConfig &&
		same(a.Namespaces, b.Namespaces) && same(a.Services, b.Services) &&
		same(a.ServiceAccounts, b.ServiceAccounts) && same(a.Secrets, b.Secrets) &&
		same(a.ConfigMaps, b.ConfigMaps) && same(a.AuthorizationPolicies, b.AuthorizationPolicies) &&
		same(a.GatewayClasses, b.GatewayClasses) && same(a.Gateways, b.Gateways) &&
		same(a.HTTPRoutes, b.HTTPRoutes) && same(a.GRPCRoutes, b.GRPCRoutes) &&
		same(a.TLSRoutes, b.TLSRoutes) && same(a.TCPRoutes, b.TCPRoutes) &&
		same(a.ReferenceGrants, b.ReferenceGrants) && same(a.BackendTLSPolicies, b.BackendTLSPolicies)
}

// same is true when a and b hold the same objects in the same order.
func same[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

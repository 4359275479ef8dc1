package xds

import (
	"cmp"
	"maps"
	"slices"

	"github.com/ambitmesh/ambit/internal/control/model"
)

// patch computes b.next from b.prev when mesh differs from the mesh prev was
// computed from only by Workloads and Services edited in place: the same
// objects in the same order, on the same nodes and waypoints, with the very
// same Gateway and Policy slices (what translate.Retranslate gives for
// endpoint changes). It converts only the changed workloads and services
// and patches only the sets that hold them, so a one-endpoint change costs
// O(change) rather than O(mesh); the views are those ComputeViews would
// compute in full. It returns false, leaving the rest to the full
// computation, when it does not apply.
func (b *builder) patch(mesh *model.Mesh) bool {
	p, v := b.prev, b.next
	if p == nil || p.wmemo == nil || p.incomplete ||
		len(mesh.Workloads) != len(p.src.Workloads) || len(mesh.Services) != len(p.src.Services) ||
		!sameSlice(mesh.Gateways, p.src.Gateways) || !sameSlice(mesh.Policies, p.src.Policies) ||
		mesh.MTLSMode != p.src.MTLSMode || mesh.RootNamespace != p.src.RootNamespace {
		return false
	}
	var cw, cs []int
	for i := range mesh.Workloads {
		old, w := &p.src.Workloads[i], &mesh.Workloads[i]
		if workloadEqual(old, w) {
			continue
		}
		if old.Ref != w.Ref || old.Node != w.Node || !waypointEqual(old.Waypoint, w.Waypoint) {
			return false // node authorization or waypoint views change
		}
		cw = append(cw, i)
	}
	for j := range mesh.Services {
		old, s := &p.src.Services[j], &mesh.Services[j]
		if serviceEqual(old, s) {
			continue
		}
		if old.Ref != s.Ref || !waypointEqual(old.Waypoint, s.Waypoint) {
			return false
		}
		cs = append(cs, j)
	}
	for i := range mesh.Gateways {
		if p.gws[&mesh.Gateways[i]] == nil || p.gateways[mesh.Gateways[i].Ref] == nil {
			return false
		}
	}

	// A changed service changes the backings of the workloads in its
	// endpoints, before and after.
	dirty := map[int]bool{}
	for _, i := range cw {
		dirty[i] = true
	}
	changedSvc := make(map[string]bool, len(cs))
	added := map[int][]backing{}
	for _, j := range cs {
		key := mesh.Services[j].Ref.String()
		changedSvc[key] = true
		for _, e := range p.src.Services[j].Endpoints {
			i, ok := p.widx[e.Workload]
			if !ok {
				return false
			}
			dirty[i] = true
		}
		for _, e := range mesh.Services[j].Endpoints {
			i, ok := p.widx[e.Workload]
			if !ok {
				return false
			}
			dirty[i] = true
			added[i] = append(added[i], backing{service: key, svc: j, ports: e.Ports})
		}
	}

	errs := len(b.errs)
	bail := func() bool { b.errs = b.errs[:errs]; return false }
	v.widx, v.sidx = p.widx, p.sidx
	v.wmemo, v.smemo = slices.Clone(p.wmemo), slices.Clone(p.smemo)
	var workloads []*Resource
	bound := map[model.Ref][]*Resource{}
	for _, i := range slices.Sorted(maps.Keys(dirty)) {
		w, pm := &mesh.Workloads[i], p.wmemo[i]
		var bk []backing
		for _, x := range pm.backs {
			if !changedSvc[x.service] {
				bk = append(bk, x)
			}
		}
		bk = append(bk, added[i]...)
		slices.SortStableFunc(bk, func(x, y backing) int { return cmp.Compare(x.svc, y.svc) })
		r := pm.res
		if !workloadEqual(&p.src.Workloads[i], w) || !backingsEqual(pm.backs, bk) {
			if r = b.resource(TypeWorkload, w.Ref.String(), workloadProto(w, portLists(bk))); r == nil {
				return bail()
			}
		}
		v.wmemo[i] = workloadMemo{backs: bk, res: r}
		if r != pm.res {
			workloads = append(workloads, r)
			if w.Waypoint != nil {
				bound[w.Waypoint.Gateway] = append(bound[w.Waypoint.Gateway], r)
			}
		}
	}
	var services []*Resource
	for _, j := range cs {
		s := &mesh.Services[j]
		r := b.resource(TypeService, s.Ref.String(), serviceProto(s))
		if r == nil {
			return bail()
		}
		v.smemo[j] = serviceMemo{svc: r}
		services = append(services, r)
	}
	gateways := maps.Clone(p.gateways)
	changedSets := map[string]*ResourceSet{}
	patchSet := func(key string, prev *ResourceSet, changed []*Resource) *ResourceSet {
		s, diff := prev.with(changed)
		s = linked(prev, s, diff)
		changedSets[key] = s
		return s
	}
	for i := range mesh.Gateways {
		g := &mesh.Gateways[i]
		gm := p.gws[g]
		var backends []*Resource
		for _, j := range cs {
			s := &mesh.Services[j]
			if gm.routed[s.Ref] || g.Class == model.ClassWaypoint && s.Waypoint != nil && s.Waypoint.Gateway == g.Ref {
				r := b.backend(s.Ref)
				if r == nil {
					return bail()
				}
				backends = append(backends, r)
			}
		}
		if len(backends) == 0 && len(bound[g.Ref]) == 0 {
			continue
		}
		key := "gateway/" + g.Ref.String() + "/"
		gv := *p.gateways[g.Ref]
		gv.Backends = patchSet(key+"backends", gv.Backends, backends)
		gv.Workloads = patchSet(key+"workloads", gv.Workloads, bound[g.Ref])
		gateways[g.Ref] = &gv
	}
	v.Workloads = patchSet("workloads", p.Workloads, workloads)
	v.Services = patchSet("services", p.Services, services)

	// Nothing else changed: policies, nodes and gateways are the same.
	v.gateways = gateways
	v.nodeAuthz, v.meshAuthz, v.empty, v.gws = p.nodeAuthz, p.meshAuthz, p.empty, p.gws
	sets := maps.Clone(p.sets)
	maps.Copy(sets, v.sets) // the trust bundle's
	maps.Copy(sets, changedSets)
	v.sets = sets
	v.otherErrs = p.otherErrs
	b.errs = append(b.errs, p.otherErrs...)
	return true
}

// sameSlice reports whether a and b are the very same slice.
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

package xds

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambitmesh/ambit/internal/control/model"
)

// modelEdit changes a copy of a mesh the way translate.Retranslate does:
// new Workloads and Services slices, everything else shared.
type modelEdit struct {
	name  string
	local bool // the views are patched, not recomputed
	apply func(r *rand.Rand, m *model.Mesh)
}

// setEndpoint replaces the endpoint of w in every service holding it.
func setEndpoint(m *model.Mesh, ref model.Ref, f func(e *model.Endpoint)) {
	for i := range m.Services {
		s := &m.Services[i]
		for j := range s.Endpoints {
			if s.Endpoints[j].Workload == ref {
				s.Endpoints = slices.Clone(s.Endpoints)
				f(&s.Endpoints[j])
			}
		}
	}
}

var modelEdits = []modelEdit{
	{name: "address", local: true, apply: func(r *rand.Rand, m *model.Mesh) {
		w := &m.Workloads[r.IntN(len(m.Workloads))]
		w.Addresses = []netip.Addr{netip.AddrFrom4([4]byte{10, 9, byte(r.IntN(256)), byte(r.IntN(256))})}
		setEndpoint(m, w.Ref, func(e *model.Endpoint) { e.Addresses = w.Addresses })
	}},
	{name: "endpoint ports", local: true, apply: func(r *rand.Rand, m *model.Mesh) {
		ref := m.Workloads[r.IntN(len(m.Workloads))].Ref
		setEndpoint(m, ref, func(e *model.Endpoint) {
			e.Ports = []model.PortMapping{{ServicePort: 80, TargetPort: int32(8000 + r.IntN(100))}}
		})
	}},
	{name: "endpoint leaves or joins a service", local: true, apply: func(r *rand.Rand, m *model.Mesh) {
		s := &m.Services[r.IntN(len(m.Services))]
		w := m.Workloads[r.IntN(len(m.Workloads))]
		if i := slices.IndexFunc(s.Endpoints, func(e model.Endpoint) bool { return e.Workload == w.Ref }); i >= 0 {
			s.Endpoints = slices.Delete(slices.Clone(s.Endpoints), i, i+1)
			return
		}
		s.Endpoints = append(slices.Clip(s.Endpoints), model.Endpoint{Workload: w.Ref, Addresses: w.Addresses, Node: w.Node,
			Identity: w.Identity, Ports: []model.PortMapping{{ServicePort: 80, TargetPort: 8080}}})
	}},
	{name: "service port", local: true, apply: func(r *rand.Rand, m *model.Mesh) {
		s := &m.Services[r.IntN(len(m.Services))]
		s.Ports = []model.ServicePort{{Name: "http", Port: 80, Protocol: "TCP", TargetPort: int32(8000 + r.IntN(100))}}
	}},
	{name: "node", apply: func(r *rand.Rand, m *model.Mesh) {
		w := &m.Workloads[r.IntN(len(m.Workloads))]
		w.Node = []string{"n1", "n2", "n3"}[r.IntN(3)]
		setEndpoint(m, w.Ref, func(e *model.Endpoint) { e.Node = w.Node })
	}},
	{name: "policy", apply: func(r *rand.Rand, m *model.Mesh) {
		m.Policies = slices.Clone(m.Policies)
		m.Policies[r.IntN(len(m.Policies))].Action = []string{"ALLOW", "DENY", "AUDIT"}[r.IntN(3)]
	}},
}

var viewIDs = []string{"node/n1", "node/n2", "node/n3", "gateway/a/wp", "gateway/b/gw"}

// TestPatchedViewsEqualFullViews applies random model edits and checks after
// each that ComputeViews from the previous views gives, for every proxy and
// type, the same set as computing from scratch, that edits of endpoints
// and services are patched, and that a set reports exactly the names that
// differ from the previous one.
func TestPatchedViewsEqualFullViews(t *testing.T) {
	for seed := range uint64(10) {
		r := rand.New(rand.NewPCG(seed, 2))
		m := testMesh()
		prev, err := ComputeViews(m, nil)
		if err != nil {
			t.Fatal(err)
		}
		patched := 0
		for step := range 30 {
			e := modelEdits[r.IntN(len(modelEdits))]
			next := *m
			next.Workloads, next.Services = slices.Clone(m.Workloads), slices.Clone(m.Services)
			e.apply(r, &next)
			got, err := ComputeViews(&next, prev)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ComputeViews(&next, nil)
			if err != nil {
				t.Fatal(err)
			}
			isPatched := reflect.ValueOf(got.widx).UnsafePointer() == reflect.ValueOf(prev.widx).UnsafePointer()
			if isPatched {
				patched++
			} else if e.local {
				t.Errorf("seed %d step %d: %s edit was computed in full, want patched", seed, step, e.name)
			}
			for _, id := range viewIDs {
				pid := mustParse(t, id)
				for _, typ := range typeOrder {
					g, w, p := got.Set(pid, typ), want.Set(pid, typ), prev.Set(pid, typ)
					if g.Version != w.Version || !maps.Equal(g.versions, w.versions) || !slices.Equal(g.names, w.names) {
						t.Fatalf("seed %d step %d (%s): %s %s: got %v, want %v", seed, step, e.name, id, typ, g.versions, w.versions)
					}
					if g.Version == p.Version {
						continue
					}
					names, ok := g.changesSince(p.Version)
					var diff []string
					for n := range w.Items {
						if p.versions[n] != w.versions[n] {
							diff = append(diff, n)
						}
					}
					for n := range p.Items {
						if _, ok := w.Items[n]; !ok {
							diff = append(diff, n)
						}
					}
					slices.Sort(diff)
					// A set without history (say a node's first workload) makes the
					// server compare in full; a patched view always has it.
					if !ok && !isPatched {
						continue
					}
					if !ok || !cmp.Equal(names, diff) {
						t.Fatalf("seed %d step %d (%s): %s %s: changes since previous = %v (known %v), want %v", seed, step, e.name, id, typ, names, ok, diff)
					}
				}
			}
			m, prev = &next, got
		}
		if patched == 0 {
			t.Errorf("seed %d: no edit was patched", seed)
		}
	}
}

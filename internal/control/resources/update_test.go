package resources

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/api/v1alpha1"
)

// TestUpdateMatchesBuild applies random puts and removes to a snapshot and
// checks each result against Build over the same objects, and that the
// snapshot patched is left as it was.
func TestUpdateMatchesBuild(t *testing.T) {
	type key struct{ kind, ns, name string }
	newObj := func(k key, version int) Object {
		var o Object
		switch k.kind {
		case "Service":
			o = &corev1.Service{}
		case "Workload":
			o = &v1alpha1.Workload{}
		default:
			o = &gwv1.HTTPRoute{}
		}
		o.GetObjectKind().SetGroupVersionKind(kindsByGroupKind[groupKind(k.kind)].gvk())
		o.SetNamespace(k.ns)
		o.SetName(k.name)
		o.SetGeneration(int64(version))
		return o
	}
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[key]Object{}
	build := func() *Resources {
		var ds []Decoded
		for _, o := range live {
			ds = append(ds, Decoded{Object: o})
		}
		return Build(ds)
	}
	r := build()
	for step := range 300 {
		before := build()
		var put, remove []Object
		// Mostly small changes, sometimes a large one.
		n := 1 + rng.IntN(4)
		if step%50 == 0 {
			n = 200
		}
		touched := map[key]bool{}
		for range n {
			k := key{[]string{"Service", "Workload", "HTTPRoute"}[rng.IntN(3)], fmt.Sprintf("ns-%d", rng.IntN(5)), fmt.Sprintf("o-%03d", rng.IntN(60))}
			if touched[k] {
				continue
			}
			touched[k] = true
			if old, ok := live[k]; ok && rng.IntN(3) == 0 {
				remove = append(remove, old)
				delete(live, k)
				continue
			}
			o := newObj(k, step)
			put = append(put, o)
			live[k] = o
		}
		got, ok := r.Update(put, remove)
		if !ok {
			t.Fatalf("step %d: Update refused supported kinds", step)
		}
		if want := build(); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: Update differs from Build:\n got %v\nwant %v", step, refs(got), refs(want))
		}
		if !reflect.DeepEqual(r, before) {
			t.Fatalf("step %d: Update modified the snapshot it patched", step)
		}
		r = got
	}
}

func groupKind(kind string) schema.GroupKind {
	for gk := range kindsByGroupKind {
		if gk.Kind == kind {
			return gk
		}
	}
	panic("no kind " + kind)
}

func refs(r *Resources) []string {
	var out []string
	for _, o := range r.Services {
		out = append(out, "Service "+o.Namespace+"/"+o.Name)
	}
	for _, o := range r.Workloads {
		out = append(out, "Workload "+o.Namespace+"/"+o.Name)
	}
	for _, o := range r.HTTPRoutes {
		out = append(out, "HTTPRoute "+o.Namespace+"/"+o.Name)
	}
	return out
}

// TestUpdateEveryKind makes sure Update has a place for every kind the
// decoder returns except MeshConfig, which callers set themselves.
func TestUpdateEveryKind(t *testing.T) {
	for _, k := range kinds {
		o := k.newObj()
		o.GetObjectKind().SetGroupVersionKind(k.gvk())
		o.SetName("x")
		got, ok := (&Resources{}).Update([]Object{o}, nil)
		if k.kind == "MeshConfig" {
			if ok {
				t.Errorf("Update accepted a MeshConfig")
			}
			continue
		}
		if !ok {
			t.Errorf("Update has no place for %s", k.kind)
			continue
		}
		want := Build([]Decoded{{Object: o}})
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Update of one %s differs from Build", k.kind)
		}
		back, _ := got.Update(nil, []Object{o})
		if !reflect.DeepEqual(back, &Resources{}) {
			t.Errorf("removing the %s again left %+v", k.kind, back)
		}
	}
}

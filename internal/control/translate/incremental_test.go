package translate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/api/v1alpha1"
	"github.com/ambitmesh/ambit/internal/control/resources"
)

// incrementalMesh is a small mesh where every rule a workload edit can
// touch is in play: services selecting by label (one with a named target
// port), a namespace bound to a waypoint, a workload bound by its own label,
// selector, namespace and mesh policies, a GAMMA route.
func incrementalMesh(t *testing.T) *resources.Resources {
	t.Helper()
	var b strings.Builder
	doc := func(format string, args ...any) { fmt.Fprintf(&b, "---\n"+format+"\n", args...) }
	doc("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {ambit.dev/use-waypoint: wp}}")
	doc("apiVersion: v1\nkind: Namespace\nmetadata: {name: billing}")
	doc("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: shop, labels: {ambit.dev/waypoint-for: all}}\n" +
		"spec: {gatewayClassName: ambit-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}")
	for _, ns := range []string{"shop", "billing"} {
		for _, app := range []string{"web", "api", "db"} {
			doc("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec: {selector: {app: %s}, ports: [{name: http, port: 80, targetPort: http}, {name: admin, port: 9000}]}", app, ns, app)
		}
	}
	doc("apiVersion: v1\nkind: Service\nmetadata: {name: web-v2, namespace: shop}\nspec: {selector: {app: web, version: v2}, ports: [{port: 8080}]}")
	for i := range 24 {
		ns := []string{"shop", "billing"}[i%2]
		app := []string{"web", "api", "db"}[i%3]
		labels := fmt.Sprintf("{app: %s, version: v%d}", app, 1+i%2)
		if i == 5 {
			labels = fmt.Sprintf("{app: %s, ambit.dev/use-waypoint: wp, ambit.dev/use-waypoint-namespace: shop}", app)
		}
		doc("apiVersion: ambit.dev/v1alpha1\nkind: Workload\nmetadata: {name: w%02d, namespace: %s, labels: %s}\n"+
			"spec: {serviceAccount: %s, addresses: [10.1.0.%d], node: node-%d, ports: {http: %d}}", i, ns, labels, app, i+1, i%3, 8000+i)
	}
	doc("apiVersion: ambit.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: api-only, namespace: shop}\n" +
		"spec: {selector: {matchLabels: {app: api}}, action: ALLOW, rules: [{from: [{source: {namespaces: [shop]}}]}]}")
	doc("apiVersion: ambit.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: ns-wide, namespace: billing}\n" +
		"spec: {action: DENY, rules: [{to: [{operation: {ports: [\"9000\"]}}]}]}")
	doc("apiVersion: ambit.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: mesh, namespace: ambit-system}\n" +
		"spec: {action: AUDIT, rules: [{}]}")
	doc("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: split, namespace: shop}\n" +
		"spec: {parentRefs: [{group: \"\", kind: Service, name: web, port: 80}], rules: [{backendRefs: [{name: web, port: 80, weight: 80}, {name: web-v2, port: 8080, weight: 20}]}]}")
	objs, errs := resources.Decode("mesh.yaml", []byte(b.String()))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	res := resources.Build(objs)
	res.Sort()
	return res
}

// A random edit, applied the way sources apply one: resources.Update with
// a new object replacing the old (objects are never modified in place).
type edit struct {
	name  string
	apply func(r *rand.Rand, res *resources.Resources) *resources.Resources
	// local edits are ones Retranslate patches rather than re-translating.
	local bool
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func patchRes(t *testing.T, res *resources.Resources, put, remove []resources.Object) *resources.Resources {
	t.Helper()
	n, ok := res.Update(put, remove)
	if !ok {
		t.Fatal("resources.Update refused the edit")
	}
	return n
}

func edits(t *testing.T) []edit {
	editWorkload := func(f func(r *rand.Rand, w *v1alpha1.Workload)) func(*rand.Rand, *resources.Resources) *resources.Resources {
		return func(r *rand.Rand, res *resources.Resources) *resources.Resources {
			w := pick(r, res.Workloads).DeepCopy()
			f(r, w)
			return patchRes(t, res, []resources.Object{w}, nil)
		}
	}
	free := func(r *rand.Rand) string {
		return netip.AddrFrom4([4]byte{10, 2, byte(r.IntN(4)), byte(1 + r.IntN(250))}).String()
	}
	return []edit{
		{name: "address", local: true, apply: editWorkload(func(r *rand.Rand, w *v1alpha1.Workload) { w.Spec.Addresses = []string{free(r)} })},
		{name: "node, port, service account", local: true, apply: editWorkload(func(r *rand.Rand, w *v1alpha1.Workload) {
			w.Spec.Node = fmt.Sprintf("node-%d", r.IntN(5))
			w.Spec.Ports = map[string]int32{"http": int32(9000 + r.IntN(100))}
			w.Spec.ServiceAccount = pick(r, []string{"web", "api", "other"})
			w.Generation++
		})},
		{name: "address taken", apply: editWorkload(func(r *rand.Rand, w *v1alpha1.Workload) {
			w.Spec.Addresses = []string{fmt.Sprintf("10.1.0.%d", 1+r.IntN(24))}
		})},
		{name: "address invalid", apply: editWorkload(func(r *rand.Rand, w *v1alpha1.Workload) { w.Spec.Addresses = []string{"not-an-ip"} })},
		{name: "relabel", apply: editWorkload(func(r *rand.Rand, w *v1alpha1.Workload) {
			w.Labels = map[string]string{"app": pick(r, []string{"web", "api", "db"}), "version": pick(r, []string{"v1", "v2"})}
		})},
		{name: "delete workload", apply: func(r *rand.Rand, res *resources.Resources) *resources.Resources {
			if len(res.Workloads) < 5 {
				return res
			}
			return patchRes(t, res, nil, []resources.Object{pick(r, res.Workloads)})
		}},
		{name: "add workload", apply: func(r *rand.Rand, res *resources.Resources) *resources.Resources {
			w := pick(r, res.Workloads).DeepCopy()
			w.Name = fmt.Sprintf("new-%d", r.IntN(1000))
			w.Spec.Addresses = []string{free(r)}
			return patchRes(t, res, []resources.Object{w}, nil)
		}},
		{name: "policy", apply: func(r *rand.Rand, res *resources.Resources) *resources.Resources {
			p := pick(r, res.AuthorizationPolicies).DeepCopy()
			p.Spec.Action = pick(r, []v1alpha1.AuthorizationAction{v1alpha1.ActionAllow, v1alpha1.ActionDeny, v1alpha1.ActionAudit})
			return patchRes(t, res, []resources.Object{p}, nil)
		}},
		{name: "route", apply: func(r *rand.Rand, res *resources.Resources) *resources.Resources {
			h := pick(r, res.HTTPRoutes).DeepCopy()
			w := int32(r.IntN(100))
			h.Spec.Rules[0].BackendRefs[0].Weight = &w
			h.Spec.Rules[0].BackendRefs[1].Name = gwv1.ObjectName(pick(r, []string{"web-v2", "api", "missing"}))
			return patchRes(t, res, []resources.Object{h}, nil)
		}},
	}
}

// TestRetranslateEqualsTranslate applies random edits one after the other
// and checks after each that Retranslate from the previous result gives
// exactly what a full Translate gives, and that workload-local edits take
// the patch path.
func TestRetranslateEqualsTranslate(t *testing.T) {
	opts := cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 1))
		res := incrementalMesh(t)
		prev := Translate(res)
		if rej := prev.Rejected(); len(rej) > 0 {
			t.Fatalf("base mesh has rejected objects: %v", rej)
		}
		all := edits(t)
		patched := 0
		for step := range 40 {
			e := pick(r, all)
			next := e.apply(r, res)
			got := Retranslate(prev, res, next)
			want := Translate(next)
			if diff := cmp.Diff(want, got, opts); diff != "" {
				t.Fatalf("seed %d step %d (%s): Retranslate differs from Translate (-want +got):\n%s", seed, step, e.name, diff)
			}
			if _, ok := patchWorkloads(prev, res, next); ok {
				patched++
			} else if e.local && len(prev.Rejected()) == 0 {
				t.Errorf("seed %d step %d: %s edit on a clean mesh was translated in full, want patched", seed, step, e.name)
			}
			prev, res = got, next
		}
		if patched == 0 {
			t.Errorf("seed %d: no edit took the patch path", seed)
		}
	}
}

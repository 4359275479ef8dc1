package translate

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

// TestServiceLoadBalancerAnnotations: valid annotations become the
// Service's LoadBalancer with a True condition; invalid ones leave the
// default, keep the Service in the mesh and say why (naming the
// annotation), so `ambit status` shows it.
func TestServiceLoadBalancerAnnotations(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        *model.LoadBalancer
		problem     string // substring of the False condition's message
	}{
		{name: "none"},
		{name: "round robin", annotations: map[string]string{AnnotationLBPolicy: "RoundRobin"}, want: &model.LoadBalancer{Policy: model.LBRoundRobin}},
		{name: "Istio spelling", annotations: map[string]string{AnnotationLBPolicy: "ROUND_ROBIN"}, want: &model.LoadBalancer{Policy: model.LBRoundRobin}},
		{name: "kebab case", annotations: map[string]string{AnnotationLBPolicy: "least-request"}, want: &model.LoadBalancer{Policy: model.LBLeastRequest}},
		{name: "random", annotations: map[string]string{AnnotationLBPolicy: "Random"}, want: &model.LoadBalancer{Policy: model.LBRandom}},
		{name: "header hash", annotations: map[string]string{AnnotationLBPolicy: "ConsistentHash", AnnotationLBHash: "header:X-User"},
			want: &model.LoadBalancer{Policy: model.LBConsistentHash, Hash: &model.HashKey{Header: "x-user"}}},
		{name: "hash alone means consistent hash", annotations: map[string]string{AnnotationLBHash: "source-ip"},
			want: &model.LoadBalancer{Policy: model.LBConsistentHash, Hash: &model.HashKey{SourceIP: true}}},
		{name: "generated cookie", annotations: map[string]string{AnnotationLBHash: "cookie:session; ttl=1h; path=/"},
			want: &model.LoadBalancer{Policy: model.LBConsistentHash, Hash: &model.HashKey{Cookie: "session", CookieTTL: time.Hour, CookiePath: "/"}}},
		{name: "unknown policy", annotations: map[string]string{AnnotationLBPolicy: "fastest"}, problem: `annotation ambit.dev/lb-policy: "fastest" is not a load balancing policy`},
		{name: "hash without key", annotations: map[string]string{AnnotationLBPolicy: "ConsistentHash"}, problem: "ConsistentHash needs annotation ambit.dev/lb-hash"},
		{name: "key with another policy", annotations: map[string]string{AnnotationLBPolicy: "Random", AnnotationLBHash: "source-ip"}, problem: "only used by ConsistentHash"},
		{name: "bad header name", annotations: map[string]string{AnnotationLBHash: "header:x user"}, problem: `"x user" is not a valid header name`},
		{name: "bad ttl", annotations: map[string]string{AnnotationLBHash: "cookie:s;ttl=-1s"}, problem: "ttl=-1s: want a positive duration"},
		{name: "unknown kind", annotations: map[string]string{AnnotationLBHash: "query:q"}, problem: `key kind "query"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := &resources.Resources{Services: []*corev1.Service{{
				ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "app", Annotations: tc.annotations},
				Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
			}}}
			res.Sort()
			r := Translate(res)
			if len(r.Mesh.Services) != 1 {
				t.Fatalf("services %+v, want the one Service in the mesh", r.Mesh.Services)
			}
			if diff := cmp.Diff(tc.want, r.Mesh.Services[0].LoadBalancer); diff != "" {
				t.Errorf("load balancer (-want +got):\n%s", diff)
			}
			var cond *status.Condition
			var obj *status.Object
			for i := range r.Status {
				for j, c := range r.Status[i].Conditions {
					if c.Type == ConditionLoadBalancer {
						obj, cond = &r.Status[i], &r.Status[i].Conditions[j]
					}
				}
			}
			switch {
			case tc.annotations == nil:
				if cond != nil {
					t.Errorf("condition %+v on a Service without annotations", cond)
				}
			case tc.problem != "":
				if cond == nil || cond.Status != status.False || !strings.Contains(cond.Message, tc.problem) || !obj.Rejected() {
					t.Errorf("condition %+v, want False naming %q and shown as a problem", cond, tc.problem)
				}
			default:
				if cond == nil || cond.Status != status.True || obj.Rejected() {
					t.Errorf("condition %+v, want True", cond)
				}
			}
		})
	}
}

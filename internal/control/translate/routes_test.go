package translate

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

func ptr[T any](v T) *T { return &v }

// An invalid route is refused on its own: the valid one next to it is
// served and is the only one counted on the listener.
func TestInvalidRouteDoesNotAffectOthers(t *testing.T) {
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: "web", Name: name} }
	route := func(name, regex string) *gwv1.HTTPRoute {
		r := &gwv1.HTTPRoute{ObjectMeta: meta(name)}
		r.Spec.ParentRefs = []gwv1.ParentReference{{Name: "edge"}}
		r.Spec.Rules = []gwv1.HTTPRouteRule{{
			Matches:     []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchRegularExpression), Value: ptr(regex)}}},
			BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "app", Port: ptr[int32](80)}}}},
		}}
		return r
	}
	res := &resources.Resources{
		Services: []*corev1.Service{{ObjectMeta: meta("app"), Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}},
		Gateways: []*gwv1.Gateway{{ObjectMeta: meta("edge"), Spec: gwv1.GatewaySpec{GatewayClassName: ClassNameIngress,
			Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}}},
		HTTPRoutes: []*gwv1.HTTPRoute{route("bad", "/(unclosed"), route("good", "/ok/[0-9]+")},
	}
	res.Sort()
	r := Translate(res)

	accepted := map[string]string{}
	var attached int32 = -1
	for _, o := range r.Status {
		switch o.Kind {
		case KindHTTPRoute:
			accepted[o.Name] = o.Parents[0].Conditions[0].Status + "/" + o.Parents[0].Conditions[0].Reason
		case "Gateway":
			attached = o.Listeners[0].AttachedRoutes
		}
	}
	want := map[string]string{"bad": status.False + "/UnsupportedValue", "good": status.True + "/Accepted"}
	if diff := cmp.Diff(want, accepted); diff != "" {
		t.Errorf("route acceptance (-want +got):\n%s", diff)
	}
	if attached != 1 {
		t.Errorf("attachedRoutes = %d, want 1", attached)
	}
	if len(r.Mesh.Gateways) != 1 || len(r.Mesh.Gateways[0].Listeners) != 1 {
		t.Fatalf("want one gateway with one listener, got %+v", r.Mesh.Gateways)
	}
	vhs := r.Mesh.Gateways[0].Listeners[0].VirtualHosts
	if len(vhs) != 1 || len(vhs[0].Routes) != 1 || vhs[0].Routes[0].Source.Name != "good" {
		t.Errorf("virtual hosts = %+v, want only route good", vhs)
	}
}

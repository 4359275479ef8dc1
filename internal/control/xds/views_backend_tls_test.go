package xds

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambitmesh/ambit/internal/control/model"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// A BackendTLSPolicy's settings ride on the Backend, so only the gateways
// whose routes use the Service receive them (the CA bundle included).
func TestBackendTLSReachesOnlyUsers(t *testing.T) {
	m := testMesh()
	tls := []model.BackendTLS{{Port: 80, Policy: model.Ref{Namespace: "b", Name: "api-tls"}, SNI: "api.example",
		CAPEM: []byte("pem"), SubjectAltNames: []model.SubjectAltName{{URI: "spiffe://x/ns/b/sa/api"}}}}
	for i := range m.Services {
		if s := &m.Services[i]; s.Ref == (model.Ref{Namespace: "b", Name: "api"}) || s.Ref == (model.Ref{Namespace: "a", Name: "db"}) {
			s.TLS = tls
		}
	}
	v, err := ComputeViews(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	backendOf := func(id, name string) *gatewayv1.Backend {
		r := v.Set(mustParse(t, id), TypeBackend).Items[name]
		if r == nil {
			return nil
		}
		var b gatewayv1.Backend
		if err := r.wire.GetResource().UnmarshalTo(&b); err != nil {
			t.Fatal(err)
		}
		return &b
	}
	want := []*gatewayv1.BackendTLS{{Port: 80, Policy: &gatewayv1.ObjectRef{Namespace: "b", Name: "api-tls"}, Sni: "api.example",
		CaPem: []byte("pem"), SubjectAltNames: []*gatewayv1.SubjectAltName{{Uri: "spiffe://x/ns/b/sa/api"}}}}
	for _, id := range []string{"gateway/b/gw", "gateway/a/wp"} {
		if diff := cmp.Diff(want, backendOf(id, "b/api").GetTls(), cmpProto()); diff != "" {
			t.Errorf("%s: TLS of backend b/api (-want +got):\n%s", id, diff)
		}
	}
	if got := backendOf("gateway/a/wp", "a/web").GetTls(); got != nil {
		t.Errorf("a/web has no policy but carries TLS %v", got)
	}
	for _, id := range []string{"gateway/b/gw", "gateway/a/wp"} {
		if backendOf(id, "a/db") != nil {
			t.Errorf("%s received backend a/db, which none of its routes uses", id)
		}
	}
}

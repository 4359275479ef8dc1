package xds

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambitmesh/ambit/internal/control/model"
	authzv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/views.golden.json from the current views")

func TestParseProxyID(t *testing.T) {
	tests := []struct {
		in      string
		want    ProxyID
		wantErr bool
	}{
		{in: "node/n1", want: ProxyID{Kind: KindNode, Node: "n1"}},
		{in: "gateway/a/wp", want: ProxyID{Kind: KindGateway, Gateway: model.Ref{Namespace: "a", Name: "wp"}}},
		{in: "node/", wantErr: true},
		{in: "node/a/b", wantErr: true},
		{in: "gateway/a", wantErr: true},
		{in: "gateway/a/b/c", wantErr: true},
		{in: "gateway//b", wantErr: true},
		{in: "sidecar/x", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseProxyID(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadNodeID) {
					t.Fatalf("ParseProxyID(%q) error = %v, want ErrBadNodeID", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ParseProxyID(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func mustParse(t *testing.T, id string) ProxyID {
	t.Helper()
	p, err := ParseProxyID(id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// viewNames lists, per type, the resource names proxy id receives.
func viewNames(t *testing.T, v *Views, id string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, typ := range typeOrder {
		if names := v.Set(mustParse(t, id), typ).Names(); len(names) > 0 {
			out[typ[strings.LastIndex(typ, ".")+1:]] = names
		}
	}
	return out
}

func TestViewMembership(t *testing.T) {
	v, err := ComputeViews(testMesh(), nil)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string][]string{
		"Service":  {"a/db", "a/web", "b/api"},
		"Workload": {"a/db-1", "a/web-1", "a/web-2", "b/api-1"},
	}
	with := func(authz ...string) map[string][]string {
		m := map[string][]string{"Service": all["Service"], "Workload": all["Workload"]}
		m["Authorization"] = authz
		return m
	}
	tests := []struct {
		id   string
		want map[string][]string
	}{
		// n1 runs namespace a only: mesh and namespace-a policies.
		{"node/n1", with("a/ns-allow", "ambit-system/ambit-strict-mtls", "ambit-system/mesh-deny")},
		// n2 also runs b/api-1, selected by b/api-only.
		{"node/n2", with("a/ns-allow", "ambit-system/ambit-strict-mtls", "ambit-system/mesh-deny", "b/api-only")},
		// A node without workloads still gets mesh-wide policy.
		{"node/n3", with("ambit-system/ambit-strict-mtls", "ambit-system/mesh-deny")},
		// The waypoint: its listener, the route table of its bound service,
		// that service and the mirror target as backends, the policy
		// targeting its bound service.
		{"gateway/a/wp", map[string][]string{
			"Listener": {"mesh"}, "RouteTable": {"a/web:80"}, "Backend": {"a/web", "b/api"}, "Authorization": {"a/wp-l7"},
		}},
		// The ingress gateway: the unresolved backend is not a Backend.
		{"gateway/b/gw", map[string][]string{
			"Listener": {"http"}, "Backend": {"b/api"}, "Authorization": {"b/gw-policy"},
		}},
		{"gateway/x/unknown", map[string][]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, viewNames(t, v, tt.id)); diff != "" {
				t.Errorf("view of %s (-want +got):\n%s", tt.id, diff)
			}
		})
	}
}

func TestWorkloadCarriesItsServices(t *testing.T) {
	v, err := ComputeViews(testMesh(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := v.Workloads.Items["a/web-2"]
	var got workloadv1.Workload
	if err := r.wire.GetResource().UnmarshalTo(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]*workloadv1.PortList{"a/web": {Ports: []*workloadv1.PortMapping{{ServicePort: 80, TargetPort: 8080}}}}
	if diff := cmp.Diff(want, got.GetServices(), cmpProto()); diff != "" {
		t.Errorf("services of a/web-2 (-want +got):\n%s", diff)
	}
	if n := got.GetNamespace() + "/" + got.GetName(); n != r.Name {
		t.Errorf("resource name %q does not match content %q", r.Name, n)
	}
}

func TestViewsShareResourcesAndVersions(t *testing.T) {
	m := testMesh()
	v1, err := ComputeViews(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Every node proxy sees the same Workload object: marshaled once.
	n1, n2 := v1.Set(mustParse(t, "node/n1"), TypeWorkload), v1.Set(mustParse(t, "node/n2"), TypeWorkload)
	if n1 != n2 {
		t.Error("node proxies do not share the Workload set")
	}
	// The mesh policy resource is shared between node views.
	a1 := v1.Set(mustParse(t, "node/n1"), TypeAuthorization).Items["ambit-system/mesh-deny"]
	a3 := v1.Set(mustParse(t, "node/n3"), TypeAuthorization).Items["ambit-system/mesh-deny"]
	if a1 == nil || a1 != a3 {
		t.Errorf("mesh policy resources differ between nodes: %p vs %p", a1, a3)
	}
	// Same input without history: same versions (content hashes).
	fresh, err := ComputeViews(testMesh(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Workloads.Version != v1.Workloads.Version || fresh.Workloads.Items["a/web-1"].Version != v1.Workloads.Items["a/web-1"].Version {
		t.Error("versions are not a pure function of content")
	}
	// Same input with history: the very same sets.
	v2, err := ComputeViews(testMesh(), v1)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Workloads != v1.Workloads || v2.Services != v1.Services {
		t.Error("an unchanged view was rebuilt instead of reused")
	}
}

func TestOneEndpointChangeTouchesOneWorkload(t *testing.T) {
	v1, err := ComputeViews(testMesh(), nil)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := ComputeViews(withMovedWorkload(testMesh(), "10.0.2.99"), v1)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Services != v1.Services {
		t.Error("Service set changed on an endpoint move")
	}
	names, ok := v2.Workloads.changesSince(v1.Workloads.Version)
	if !ok {
		t.Fatal("Workload set does not remember the previous version")
	}
	if diff := cmp.Diff([]string{"a/web-2"}, names); diff != "" {
		t.Errorf("changed workloads (-want +got):\n%s", diff)
	}
	for n, r := range v2.Workloads.Items {
		if n != "a/web-2" && r != v1.Workloads.Items[n] {
			t.Errorf("unchanged workload %s was re-created", n)
		}
	}
	// The waypoint's backend a/web carries endpoints, so it changes too.
	wp := mustParse(t, "gateway/a/wp")
	names, ok = v2.Set(wp, TypeBackend).changesSince(v1.Set(wp, TypeBackend).Version)
	if !ok || !cmp.Equal([]string{"a/web"}, names) {
		t.Errorf("waypoint backend changes = %v, %v; want [a/web], true", names, ok)
	}
	// Two steps back is remembered too.
	v3, err := ComputeViews(withMovedWorkload(testMesh(), "10.0.2.100"), v2)
	if err != nil {
		t.Fatal(err)
	}
	if names, ok := v3.Workloads.changesSince(v1.Workloads.Version); !ok || !cmp.Equal([]string{"a/web-2"}, names) {
		t.Errorf("changes since two versions back = %v, %v", names, ok)
	}
}

func TestBadObjectIsDroppedOthersServed(t *testing.T) {
	m := testMesh()
	m.Policies[0].Action = "PERMIT"
	m.Gateways[1].Listeners[0].VirtualHosts[0].Routes[0].Match.Path.Type = "Glob"
	v, err := ComputeViews(m, nil)
	if err == nil {
		t.Fatal("no error for an invalid action and match type")
	}
	for _, want := range []string{`AuthorizationPolicy a/ns-allow: action "PERMIT"`, `Gateway b/gw listener "http"`, `path type "Glob"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	got := viewNames(t, v, "node/n1")["Authorization"]
	if diff := cmp.Diff([]string{"ambit-system/ambit-strict-mtls", "ambit-system/mesh-deny"}, got); diff != "" {
		t.Errorf("authorization of n1 (-want +got):\n%s", diff)
	}
	if len(v.Workloads.Items) != 4 {
		t.Errorf("workloads = %d, want 4", len(v.Workloads.Items))
	}
}

// TestGoldenViews pins the content of every resource of every view of
// testMesh. Run with -update after an intended change and review the diff.
func TestGoldenViews(t *testing.T) {
	v, err := ComputeViews(testMesh(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]map[string]any{}
	for _, id := range []string{"node/n1", "node/n2", "gateway/a/wp", "gateway/b/gw"} {
		out[id] = map[string]map[string]any{}
		for _, typ := range typeOrder {
			set := v.Set(mustParse(t, id), typ)
			if len(set.Items) == 0 {
				continue
			}
			byName := map[string]any{}
			for n, r := range set.Items {
				byName[n] = protoAsJSON(t, r.wire.GetResource())
			}
			out[id][typ] = byName
		}
	}
	got, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const path = "testdata/views.golden.json"
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, diff)
	}
}

// protoAsJSON decodes an Any into a plain value; protojson's output is
// deliberately unstable in whitespace, so it is re-encoded by encoding/json.
func protoAsJSON(t *testing.T, a *anypb.Any) any {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func cmpProto() cmp.Option { return protocmp.Transform() }

func TestTrustBundleGoesToEveryProxy(t *testing.T) {
	mesh := &model.Mesh{
		TrustDomain: "cluster.local",
		Workloads:   []model.Workload{{Ref: model.Ref{Namespace: "ns", Name: "w"}, Node: "n1", Identity: "spiffe://cluster.local/ns/ns/sa/default"}},
		Gateways:    []model.Gateway{{Ref: model.Ref{Namespace: "ns", Name: "wp"}, Class: model.ClassWaypoint}},
		TrustBundle: &model.TrustBundle{TrustDomain: "cluster.local", Generation: 1, RootsPEM: [][]byte{[]byte("root-1")}},
	}
	v1, err := ComputeViews(mesh, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"node/n1", "node/other", "gateway/ns/wp"} {
		s := v1.Set(mustParse(t, id), TypeTrustBundle)
		if got := s.Names(); len(got) != 1 || got[0] != "cluster.local" {
			t.Errorf("%s trust bundle names = %v, want [cluster.local]", id, got)
		}
	}
	// A rotation (second root) changes exactly the bundle.
	rotated := *mesh
	rotated.TrustBundle = &model.TrustBundle{TrustDomain: "cluster.local", Generation: 2, RootsPEM: [][]byte{[]byte("root-1"), []byte("root-2")}}
	v2, err := ComputeViews(&rotated, v1)
	if err != nil {
		t.Fatal(err)
	}
	if v1.TrustBundle.Version == v2.TrustBundle.Version {
		t.Error("bundle version did not change with a new root")
	}
	if v1.Workloads != v2.Workloads {
		t.Error("a bundle change rebuilt the workload set")
	}
	names, ok := v2.TrustBundle.changesSince(v1.TrustBundle.Version)
	if !ok || len(names) != 1 || names[0] != "cluster.local" {
		t.Errorf("changes since previous bundle = %v, %v", names, ok)
	}
}

func TestStrictMTLSBecomesMeshDenyForPlaintext(t *testing.T) {
	mesh := &model.Mesh{
		RootNamespace: "ambit-system",
		Workloads:     []model.Workload{{Ref: model.Ref{Namespace: "ns", Name: "w"}, Node: "n1"}},
	}
	v, err := ComputeViews(mesh, nil)
	if err != nil {
		t.Fatal(err)
	}
	if names := v.Set(mustParse(t, "node/n1"), TypeAuthorization).Names(); len(names) != 0 {
		t.Fatalf("PERMISSIVE mesh serves policies %v, want none", names)
	}
	mesh.MTLSMode = model.MTLSStrict
	v, err = ComputeViews(mesh, v)
	if err != nil {
		t.Fatal(err)
	}
	want := "ambit-system/" + StrictMTLSPolicyName
	for _, id := range []string{"node/n1", "node/elsewhere"} {
		set := v.Set(mustParse(t, id), TypeAuthorization)
		if names := set.Names(); len(names) != 1 || names[0] != want {
			t.Fatalf("%s: STRICT mesh serves policies %v, want [%s]", id, names, want)
		}
		got, ok := set.Items[want].Message.(*authzv1.Authorization)
		if !ok {
			t.Fatalf("%s is a %T", want, set.Items[want].Message)
		}
		if got.GetAction() != authzv1.Action_ACTION_DENY || len(got.GetRules()) != 1 ||
			len(got.GetRules()[0].GetFrom()) != 1 || got.GetRules()[0].GetFrom()[0].GetNotPrincipals()[0] != "*" {
			t.Errorf("strict policy = %v, want DENY from notPrincipals [*]", got)
		}
	}
}

// Serving certificates are secret: each goes to the gateway whose
// listeners use it and to no other proxy.
func TestSecretsGoOnlyToTheirGateway(t *testing.T) {
	m := testMesh()
	cert := func(ns, name string) model.Certificate {
		return model.Certificate{Ref: model.Ref{Namespace: ns, Name: name}, CertPEM: []byte("crt " + name), KeyPEM: []byte("key " + name)}
	}
	https := func(certs ...model.Ref) model.Listener {
		return model.Listener{Name: "https", Port: 443, Protocol: "HTTPS", TLS: &model.ListenerTLS{Mode: "Terminate", Certificates: certs}}
	}
	m.Gateways[1].Listeners = append(m.Gateways[1].Listeners, https(model.Ref{Namespace: "b", Name: "gw-cert"}))
	m.Gateways[1].Certificates = []model.Certificate{cert("b", "gw-cert")}
	m.Gateways = append(m.Gateways, model.Gateway{
		Ref: model.Ref{Namespace: "c", Name: "other"}, Class: model.ClassIngress, Identity: "spiffe://cluster.local/ns/c/sa/other",
		Listeners:    []model.Listener{https(model.Ref{Namespace: "c", Name: "other-cert"})},
		Certificates: []model.Certificate{cert("c", "other-cert")},
	})
	v, err := ComputeViews(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string][]string{
		"gateway/b/gw": {"b/gw-cert"}, "gateway/c/other": {"c/other-cert"}, "gateway/a/wp": {}, "node/n1": {}, "node/n3": {},
	} {
		if got := v.Set(mustParse(t, id), TypeSecret).Names(); !cmp.Equal(got, want) {
			t.Errorf("%s receives secrets %v, want %v", id, got, want)
		}
	}
	r := v.Set(mustParse(t, "gateway/c/other"), TypeSecret).Items["c/other-cert"]
	want := &gatewayv1.Secret{Namespace: "c", Name: "other-cert", CertificateChainPem: []byte("crt other-cert"), PrivateKeyPem: []byte("key other-cert")}
	if diff := cmp.Diff(want, r.Message, cmpProto()); diff != "" {
		t.Errorf("secret resource (-want +got):\n%s", diff)
	}
}

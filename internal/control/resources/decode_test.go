package resources

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/api/v1alpha1"
)

// summary is what the tests compare about a decoded object.
type summary struct {
	Ref, APIVersion, GoType string
	Document                int
}

func summarise(objs []Decoded) []summary {
	var out []summary
	for _, o := range objs {
		out = append(out, summary{
			Ref:        o.Ref(),
			APIVersion: o.GetObjectKind().GroupVersionKind().GroupVersion().String(),
			GoType:     fmt.Sprintf("%T", o.Object),
			Document:   o.Document,
		})
	}
	return out
}

func TestDecodeAllKinds(t *testing.T) {
	data, err := os.ReadFile("testdata/all-kinds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := Decode("all-kinds.yaml", data)
	if len(errs) > 0 {
		t.Fatalf("unexpected errors: %v", errs)
	}
	// Document 1 is the comment header; older versions come out as the v1 types.
	want := []summary{
		{"MeshConfig mesh", "ambit.dev/v1alpha1", "*v1alpha1.MeshConfig", 2},
		{"Namespace shop", "v1", "*v1.Namespace", 3},
		{"ServiceAccount shop/web", "v1", "*v1.ServiceAccount", 4},
		{"Secret shop/web-tls", "v1", "*v1.Secret", 5},
		{"Service shop/web", "v1", "*v1.Service", 6},
		{"Workload shop/web-1", "ambit.dev/v1alpha1", "*v1alpha1.Workload", 7},
		{"AuthorizationPolicy shop/allow-frontend", "ambit.dev/v1alpha1", "*v1alpha1.AuthorizationPolicy", 8},
		{"GatewayClass ambit", "gateway.networking.k8s.io/v1", "*v1.GatewayClass", 9},
		{"Gateway shop/ingress", "gateway.networking.k8s.io/v1", "*v1.Gateway", 10},
		{"HTTPRoute shop/web", "gateway.networking.k8s.io/v1", "*v1.HTTPRoute", 11},
		{"GRPCRoute shop/api", "gateway.networking.k8s.io/v1", "*v1.GRPCRoute", 12},
		{"TLSRoute shop/tls", "gateway.networking.k8s.io/v1", "*v1.TLSRoute", 13},
		{"TCPRoute shop/db", "gateway.networking.k8s.io/v1", "*v1.TCPRoute", 14},
		{"ReferenceGrant backend/from-shop", "gateway.networking.k8s.io/v1", "*v1.ReferenceGrant", 15},
		{"ConfigMap shop/web-ca", "v1", "*v1.ConfigMap", 16},
		{"BackendTLSPolicy shop/web", "gateway.networking.k8s.io/v1", "*v1.BackendTLSPolicy", 17},
	}
	if diff := cmp.Diff(want, summarise(objs)); diff != "" {
		t.Errorf("decoded objects (-want +got):\n%s", diff)
	}

	r := Build(objs)
	if len(r.Errors) > 0 {
		t.Fatalf("Build errors: %v", r.Errors)
	}
	counts := map[string]int{
		"Namespaces": len(r.Namespaces), "Services": len(r.Services), "ServiceAccounts": len(r.ServiceAccounts),
		"Secrets": len(r.Secrets), "Workloads": len(r.Workloads), "AuthorizationPolicies": len(r.AuthorizationPolicies),
		"GatewayClasses": len(r.GatewayClasses), "Gateways": len(r.Gateways), "HTTPRoutes": len(r.HTTPRoutes),
		"GRPCRoutes": len(r.GRPCRoutes), "TLSRoutes": len(r.TLSRoutes), "TCPRoutes": len(r.TCPRoutes),
		"ReferenceGrants": len(r.ReferenceGrants), "ConfigMaps": len(r.ConfigMaps), "BackendTLSPolicies": len(r.BackendTLSPolicies),
	}
	for field, n := range counts {
		if n != 1 {
			t.Errorf("Resources.%s has %d objects, want 1", field, n)
		}
	}
	if r.MeshConfig == nil || r.MeshConfig.Spec.TrustDomain != "example.org" {
		t.Errorf("MeshConfig = %+v, want the one from the file", r.MeshConfig)
	}
	// Spot-check that fields arrive, not just names.
	if got := r.HTTPRoutes[0].Spec.Rules[0].BackendRefs[0].Name; got != "web" {
		t.Errorf("HTTPRoute backendRef name = %q, want web", got)
	}
	if got := r.Workloads[0].Spec.Ports["http"]; got != 8080 {
		t.Errorf("Workload port http = %d, want 8080", got)
	}
	if got := r.Secrets[0].StringData["tls.key"]; got != "-----BEGIN PRIVATE KEY-----" {
		t.Errorf("Secret stringData = %q", got)
	}
}

func TestDecodeList(t *testing.T) {
	data, err := os.ReadFile("testdata/list.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := Decode("list.yaml", data)
	if len(errs) > 0 {
		t.Fatalf("unexpected errors: %v", errs)
	}
	want := []summary{
		{"Service default/a", "v1", "*v1.Service", 1},
		{"HTTPRoute other/a", "gateway.networking.k8s.io/v1", "*v1.HTTPRoute", 1},
	}
	if diff := cmp.Diff(want, summarise(objs)); diff != "" {
		t.Errorf("decoded objects (-want +got):\n%s", diff)
	}
}

func TestDecodeSkipsEmptyDocuments(t *testing.T) {
	for _, in := range []string{
		"",
		"\n\n",
		"---\n",
		"---\n---\n---\n",
		"# only a comment\n",
		"---\n# a comment\n---\n\n---  # trailing comment\n",
		"null\n",
		"~\n",
	} {
		objs, errs := Decode("f.yaml", []byte(in))
		if len(objs) > 0 || len(errs) > 0 {
			t.Errorf("Decode(%q) = %d objects, errors %v; want nothing", in, len(objs), errs)
		}
	}
}

const svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantErrs []string // SourceError.Error() of each
		wantObjs []string // Refs of the objects still decoded
	}{
		{
			name:     "invalid YAML reports the line in the file",
			in:       svc + "---\n" + "apiVersion: v1\nkind: Service\nmetadata:\n  name: [web\n",
			wantErrs: []string{`f.yaml: document 2: invalid YAML: line 9: did not find expected ',' or ']'`},
			wantObjs: []string{"Service default/web"},
		},
		{
			name:     "tab indentation",
			in:       "# comment\n---\n" + svc + "\tlabels: {}\n",
			wantErrs: []string{`f.yaml: document 2: invalid YAML: line 7: found a tab character that violates indentation`},
		},
		{
			name: "line numbers survive CRLF and repeated separators",
			in:   strings.ReplaceAll("---\n---\n"+svc+"---\nfoo: [\n", "\n", "\r\n"),
			// The reader returns the leading "---" as an empty document 1.
			wantErrs: []string{`f.yaml: document 3: invalid YAML: line 8: did not find expected node content`},
			wantObjs: []string{"Service default/web"},
		},
		{
			name:     "bad document separator",
			in:       svc + "--- kind: Service\n" + svc,
			wantErrs: []string{`f.yaml: document 1: invalid YAML: line 5: invalid Yaml document separator: kind: Service; a document separator is "---", optionally followed by a comment`},
		},
		{
			name:     "duplicate key",
			in:       svc + "  name: api\n",
			wantErrs: []string{`f.yaml: document 1: invalid YAML: line 5: duplicate key "name"`},
		},
		{
			name:     "unknown kind",
			in:       "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n",
			wantErrs: []string{`f.yaml: document 1: Pod web: unknown kind "Pod" in apiVersion "v1"; supported kinds: ` + supportedKinds},
		},
		{
			name:     "kind in the wrong group",
			in:       "apiVersion: gateway.networking.k8s.io/v1\nkind: Service\nmetadata:\n  name: web\n",
			wantErrs: []string{`f.yaml: document 1: Service web: unknown kind "Service" in apiVersion "gateway.networking.k8s.io/v1"; supported kinds: ` + supportedKinds},
		},
		{
			name:     "unknown apiVersion",
			in:       "apiVersion: gateway.networking.k8s.io/v1alpha1\nkind: HTTPRoute\nmetadata:\n  name: web\n",
			wantErrs: []string{`f.yaml: document 1: HTTPRoute default/web: unsupported apiVersion "gateway.networking.k8s.io/v1alpha1" for HTTPRoute; use gateway.networking.k8s.io/v1 or gateway.networking.k8s.io/v1beta1`},
		},
		{
			name:     "invalid apiVersion",
			in:       "apiVersion: a/b/c\nkind: Service\nmetadata:\n  name: web\n",
			wantErrs: []string{`f.yaml: document 1: Service web: invalid apiVersion "a/b/c": unexpected GroupVersion string: a/b/c`},
		},
		{
			name:     "missing apiVersion",
			in:       "kind: Service\nmetadata:\n  name: web\n",
			wantErrs: []string{`f.yaml: document 1: Service default/web: apiVersion is required`},
		},
		{
			name:     "apiVersion in the wrong case",
			in:       "apiversion: v1\nKind: Service\nmetadata:\n  name: web\n",
			wantErrs: []string{`f.yaml: document 1: object web: apiVersion and kind are required ("apiVersion" is spelled "apiversion", "kind" is spelled "Kind"; field names are case-sensitive); supported kinds: ` + supportedKinds},
		},
		{
			name:     "missing kind",
			in:       "apiVersion: v1\nmetadata:\n  name: web\n",
			wantErrs: []string{`f.yaml: document 1: object web: kind is required; supported kinds: ` + supportedKinds},
		},
		{
			name:     "unknown field",
			in:       "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web\nspec:\n  rules:\n  - matchs: []\n",
			wantErrs: []string{`f.yaml: document 1: HTTPRoute default/web: unknown field "spec.rules[0].matchs"`},
		},
		{
			name: "every unknown field is reported",
			in:   svc + "spec:\n  portz: []\n  selectr: {}\n",
			wantErrs: []string{
				`f.yaml: document 1: Service default/web: unknown field "spec.portz"`,
				`f.yaml: document 1: Service default/web: unknown field "spec.selectr"`,
			},
		},
		{
			name:     "field with the wrong case",
			in:       svc + "spec:\n  clusterIp: 10.0.0.1\n",
			wantErrs: []string{`f.yaml: document 1: Service default/web: unknown field "spec.clusterIp"`},
		},
		{
			name:     "wrong type",
			in:       svc + "spec:\n  ports:\n  - port: http\n",
			wantErrs: []string{`f.yaml: document 1: Service default/web: field "spec.ports.port": found a string, expected a number`},
		},
		{
			name:     "YAML boolean where a string belongs",
			in:       svc + "  labels:\n    enabled: yes\n",
			wantErrs: []string{`f.yaml: document 1: Service default/web: field "metadata.labels": found true or false, expected a string (quote the value: YAML reads yes, no, on, off, y and n as booleans)`},
		},
		{
			name:     "missing name",
			in:       "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: shop\n",
			wantErrs: []string{`f.yaml: document 1: Service shop/<unnamed>: metadata.name is required`},
		},
		{
			name:     "generateName",
			in:       "apiVersion: v1\nkind: Service\nmetadata:\n  generateName: web-\n",
			wantErrs: []string{`f.yaml: document 1: Service default/<unnamed>: metadata.name is required (metadata.generateName is not supported outside the API server)`},
		},
		{
			name:     "invalid name",
			in:       "apiVersion: v1\nkind: Service\nmetadata:\n  name: Web_1\n",
			wantErrs: []string{`f.yaml: document 1: Service default/Web_1: metadata.name "Web_1": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		},
		{
			name:     "namespace on a cluster-scoped kind",
			in:       "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: ambit\n  namespace: shop\nspec:\n  controllerName: ambit.dev/x\n",
			wantErrs: []string{`f.yaml: document 1: GatewayClass shop/ambit: GatewayClass is cluster-scoped; remove metadata.namespace "shop"`},
		},
		{
			name:     "namespace on a MeshConfig",
			in:       "apiVersion: ambit.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: mesh\n  namespace: ambit-system\n",
			wantErrs: []string{`f.yaml: document 1: MeshConfig ambit-system/mesh: MeshConfig is cluster-scoped; remove metadata.namespace "ambit-system"`},
		},
		{
			name:     "not a mapping",
			in:       "- apiVersion: v1\n  kind: Service\n",
			wantErrs: []string{`f.yaml: document 1: expected a Kubernetes object (a mapping with apiVersion, kind and metadata), found a list`},
		},
		{
			name:     "a scalar",
			in:       svc + "---\nhello\n",
			wantErrs: []string{`f.yaml: document 2: expected a Kubernetes object (a mapping with apiVersion, kind and metadata), found a string`},
			wantObjs: []string{"Service default/web"},
		},
		{
			name: "List with a bad item keeps the good ones",
			in: "apiVersion: v1\nkind: List\nitems:\n" +
				"- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: shop\n" +
				"- apiVersion: v1\n  kind: Service\n  metadata:\n    name: web\n  spec:\n    bogus: 1\n" +
				"- 42\n",
			wantErrs: []string{
				`f.yaml: document 1: List: items[2]: expected a Kubernetes object (a mapping with apiVersion, kind and metadata), found a scalar value`,
				`f.yaml: document 1: Service default/web: List items[1]: unknown field "spec.bogus"`,
			},
			wantObjs: []string{"Namespace shop"},
		},
		{
			name:     "List with an unknown field",
			in:       "apiVersion: v1\nkind: List\nitemz: []\n",
			wantErrs: []string{`f.yaml: document 1: List: unknown field "itemz"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, errs := Decode("f.yaml", []byte(tt.in))
			var gotErrs, gotObjs []string
			for _, e := range errs {
				gotErrs = append(gotErrs, e.Error())
			}
			for _, o := range objs {
				gotObjs = append(gotObjs, o.Ref())
			}
			// Errors come in document order; sort like Resources does for a stable comparison.
			r := &Resources{Errors: errs}
			r.Sort()
			gotErrs = gotErrs[:0]
			for _, e := range r.Errors {
				gotErrs = append(gotErrs, e.Error())
			}
			if diff := cmp.Diff(tt.wantErrs, gotErrs); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantObjs, gotObjs); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeDefaultsNamespace(t *testing.T) {
	objs, errs := Decode("f.yaml", []byte(svc+"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := objs[0].GetNamespace(); got != DefaultNamespace {
		t.Errorf("Service namespace = %q, want %q", got, DefaultNamespace)
	}
	if got := objs[1].GetNamespace(); got != "" {
		t.Errorf("Namespace namespace = %q, want empty (cluster-scoped)", got)
	}
}

func decodeAll(t *testing.T, files ...[2]string) []Decoded {
	t.Helper()
	var all []Decoded
	for _, f := range files {
		objs, errs := Decode(f[0], []byte(f[1]))
		if len(errs) > 0 {
			t.Fatalf("decode %s: %v", f[0], errs)
		}
		all = append(all, objs...)
	}
	return all
}

func TestBuildDuplicates(t *testing.T) {
	objs := decodeAll(t,
		[2]string{"a.yaml", svc + "spec:\n  clusterIP: 10.0.0.1\n---\n" +
			// Same name, different kind or namespace: not duplicates.
			"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n---\n" +
			"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: other\n"},
		[2]string{"b.yaml", "# header\n---\n" + svc + "spec:\n  clusterIP: 10.0.0.2\n"},
	)
	r := Build(objs)
	want := []string{`b.yaml: document 2: Service default/web: duplicate object: already defined in a.yaml document 1, which is used; remove one of them`}
	var got []string
	for _, e := range r.Errors {
		got = append(got, e.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if len(r.Services) != 2 || len(r.ServiceAccounts) != 1 {
		t.Fatalf("got %d Services and %d ServiceAccounts, want 2 and 1", len(r.Services), len(r.ServiceAccounts))
	}
	if s := r.Service("default", "web"); s == nil || s.Spec.ClusterIP != "10.0.0.1" {
		t.Errorf("Service default/web = %+v, want the first one (clusterIP 10.0.0.1)", s)
	}
}

func TestBuildOneMeshConfig(t *testing.T) {
	mc := func(name, td string) string {
		return "apiVersion: ambit.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: " + name + "\nspec:\n  trustDomain: " + td + "\n"
	}
	// "b" comes first in the input but "a" wins: the choice must not depend on file order.
	r := Build(decodeAll(t, [2]string{"x.yaml", mc("b", "b.org")}, [2]string{"y.yaml", mc("c", "c.org") + "---\n" + mc("a", "a.org")}))
	if r.MeshConfig == nil || r.MeshConfig.Name != "a" || r.MeshConfig.Spec.TrustDomain != "a.org" {
		t.Fatalf("MeshConfig = %+v, want a", r.MeshConfig)
	}
	want := []string{
		`x.yaml: document 1: MeshConfig b: only one MeshConfig is allowed; using "a" from y.yaml document 2 (first by name) and ignoring this one`,
		`y.yaml: document 1: MeshConfig c: only one MeshConfig is allowed; using "a" from y.yaml document 2 (first by name) and ignoring this one`,
	}
	var got []string
	for _, e := range r.Errors {
		got = append(got, e.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

func TestBuildSorts(t *testing.T) {
	var in strings.Builder
	for _, n := range []string{"zeta", "alpha", "mid"} {
		for _, ns := range []string{"b", "a"} {
			fmt.Fprintf(&in, "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: %s\n  namespace: %s\n", n, ns)
		}
	}
	fmt.Fprintf(&in, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: z\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n")
	r := Build(decodeAll(t, [2]string{"f.yaml", in.String()}))
	var got []string
	for _, o := range r.HTTPRoutes {
		got = append(got, o.Namespace+"/"+o.Name)
	}
	want := []string{"a/alpha", "a/mid", "a/zeta", "b/alpha", "b/mid", "b/zeta"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HTTPRoute order (-want +got):\n%s", diff)
	}
	if r.Namespace("a") == nil || r.Namespace("z") == nil || r.Namespaces[0].Name != "a" {
		t.Errorf("Namespaces not sorted or not found: %v", r.Namespaces)
	}
}

// FuzzDecode checks that no input crashes the decoder and that whatever it
// returns obeys its contract.
func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{svc, svc + "---\n---\n", "apiVersion: v1\nkind: List\nitems: [1, {kind: Namespace}]\n", "--- x\n", "a: &a [*a]\n", "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"s\"}}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, errs := Decode("fuzz.yaml", data)
		for _, o := range objs {
			gvk := o.GetObjectKind().GroupVersionKind()
			info := kindsByGroupKind[gvk.GroupKind()]
			if info == nil || gvk.Version != info.versions[0] {
				t.Fatalf("object with unsupported or non-canonical GVK %v", gvk)
			}
			if o.GetName() == "" {
				t.Fatalf("object without a name: %s", o.Ref())
			}
			if info.cluster != (o.GetNamespace() == "") {
				t.Fatalf("%s: namespace %q on a kind with cluster=%v", o.Ref(), o.GetNamespace(), info.cluster)
			}
			if o.Source != "fuzz.yaml" || o.Document < 1 {
				t.Fatalf("%s: bad position %s", o.Ref(), o.Where())
			}
		}
		for _, e := range errs {
			if e.Source != "fuzz.yaml" || e.Document < 1 || e.Message == "" {
				t.Fatalf("error without position or message: %+v", e)
			}
		}
		r := Build(objs)
		if r.MeshConfig != nil && len(objs) == 0 {
			t.Fatal("MeshConfig out of nothing")
		}
	})
}

// Guard the Go types the registry hands out against drift in Resources.
var (
	_ Object = (*corev1.Service)(nil)
	_ Object = (*gwv1.HTTPRoute)(nil)
	_ Object = (*v1alpha1.Workload)(nil)
)

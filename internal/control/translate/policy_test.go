package translate

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambitmesh/ambit/api/v1alpha1"
	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

const policyTestRoot = "ambit-system"

var policyCmpOpts = cmpopts.EquateComparable(netip.Prefix{})

// policyTestTranslator builds the state translatePolicies reads (the
// outputs of the earlier stages) directly, so these tests pin the policy
// stage alone; the golden cases cover the whole pipeline.
func policyTestTranslator(policies ...*v1alpha1.AuthorizationPolicy) *translator {
	wl := func(ns, name string, labels map[string]string) model.Workload {
		return model.Workload{Ref: model.Ref{Namespace: ns, Name: name}, Labels: labels}
	}
	t := &translator{
		res: &resources.Resources{AuthorizationPolicies: policies},
		mesh: &model.Mesh{
			RootNamespace: policyTestRoot,
			Workloads: []model.Workload{
				wl("default", "api-1", map[string]string{"app": "api"}),
				wl("default", "api-2", map[string]string{"app": "api", "tier": "gold"}),
				wl("default", "web-1", map[string]string{"app": "web"}),
				wl("other", "api-3", map[string]string{"app": "api"}),
			},
			Services: []model.Service{
				{Ref: model.Ref{Namespace: "default", Name: "api"}, Waypoint: &model.WaypointBinding{Gateway: model.Ref{Namespace: "default", Name: "waypoint"}, From: "service"}},
				{Ref: model.Ref{Namespace: "default", Name: "plain"}},
			},
			Gateways: []model.Gateway{
				{Ref: model.Ref{Namespace: "default", Name: "waypoint"}, Class: model.ClassWaypoint},
				{Ref: model.Ref{Namespace: "default", Name: "ingress"}, Class: model.ClassIngress},
			},
		},
		status:    map[status.ObjectRef]*status.Object{},
		workloads: map[model.Ref]*model.Workload{},
		services:  map[model.Ref]*model.Service{},
		gateways:  map[model.Ref]*model.Gateway{},
	}
	for i := range t.mesh.Workloads {
		t.workloads[t.mesh.Workloads[i].Ref] = &t.mesh.Workloads[i]
	}
	for i := range t.mesh.Services {
		t.services[t.mesh.Services[i].Ref] = &t.mesh.Services[i]
	}
	for i := range t.mesh.Gateways {
		t.gateways[t.mesh.Gateways[i].Ref] = &t.mesh.Gateways[i]
	}
	return t
}

func policyObj(ns, name string, spec v1alpha1.AuthorizationPolicySpec) *v1alpha1.AuthorizationPolicy {
	return &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

// runPolicy translates one policy and returns its model entry and conditions.
func runPolicy(t *testing.T, ap *v1alpha1.AuthorizationPolicy) (model.Policy, []status.Condition) {
	t.Helper()
	tr := policyTestTranslator(ap)
	tr.translatePolicies()
	if len(tr.mesh.Policies) != 1 {
		t.Fatalf("got %d policies in the model, want 1 (a policy must never disappear)", len(tr.mesh.Policies))
	}
	o := tr.status[status.ObjectRef{Group: "ambit.dev", Kind: "AuthorizationPolicy", Namespace: ap.Namespace, Name: ap.Name}]
	if o == nil {
		t.Fatalf("no status for %s/%s", ap.Namespace, ap.Name)
	}
	return tr.mesh.Policies[0], o.Conditions
}

func policyCond(conds []status.Condition, typ string) *status.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

func TestPolicyScope(t *testing.T) {
	ref := func(ns, name string) model.Ref { return model.Ref{Namespace: ns, Name: name} }
	gwRef := func(name string) v1alpha1.PolicyTargetReference {
		return v1alpha1.PolicyTargetReference{Group: gatewayGroup, Kind: "Gateway", Name: name}
	}
	svcRef := func(name string) v1alpha1.PolicyTargetReference {
		return v1alpha1.PolicyTargetReference{Kind: "Service", Name: name}
	}
	sel := func(kv ...string) *v1alpha1.WorkloadSelector {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return &v1alpha1.WorkloadSelector{MatchLabels: m}
	}
	tests := []struct {
		name       string
		ns         string
		spec       v1alpha1.AuthorizationPolicySpec
		wantScope  model.PolicyScope
		wantWL     []model.Ref
		wantTarget []model.PolicyTarget
		wantReason string
		wantMsg    string // substring of the Accepted message
	}{
		{name: "mesh-wide", ns: policyTestRoot, wantScope: model.ScopeMesh, wantReason: "Accepted"},
		{name: "namespace", ns: "default", wantScope: model.ScopeNamespace, wantReason: "Accepted"},
		{name: "empty selector is namespace-wide", ns: "default", spec: v1alpha1.AuthorizationPolicySpec{Selector: &v1alpha1.WorkloadSelector{}},
			wantScope: model.ScopeNamespace, wantReason: "Accepted"},
		{name: "selector in own namespace", ns: "default", spec: v1alpha1.AuthorizationPolicySpec{Selector: sel("app", "api")},
			wantScope: model.ScopeWorkloads, wantWL: []model.Ref{ref("default", "api-1"), ref("default", "api-2")}, wantReason: "Accepted"},
		{name: "selector with two labels", ns: "default", spec: v1alpha1.AuthorizationPolicySpec{Selector: sel("app", "api", "tier", "gold")},
			wantScope: model.ScopeWorkloads, wantWL: []model.Ref{ref("default", "api-2")}, wantReason: "Accepted"},
		{name: "selector in root namespace spans namespaces", ns: policyTestRoot, spec: v1alpha1.AuthorizationPolicySpec{Selector: sel("app", "api")},
			wantScope: model.ScopeWorkloads, wantWL: []model.Ref{ref("default", "api-1"), ref("default", "api-2"), ref("other", "api-3")}, wantReason: "Accepted"},
		{name: "selector matching nothing", ns: "other", spec: v1alpha1.AuthorizationPolicySpec{Selector: sel("app", "web")},
			wantScope: model.ScopeWorkloads, wantReason: "Accepted"},
		{name: "invalid selector label", ns: "default", spec: v1alpha1.AuthorizationPolicySpec{Selector: sel("app", "a b")},
			wantScope: model.ScopeWorkloads, wantReason: "Invalid", wantMsg: `spec.selector.matchLabels[app]: "a b" is not a label value`},
		{name: "targets sorted and deduplicated", ns: "default",
			spec:      v1alpha1.AuthorizationPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{svcRef("api"), gwRef("waypoint"), svcRef("api")}},
			wantScope: model.ScopeTargets, wantReason: "Accepted",
			wantTarget: []model.PolicyTarget{{Kind: "Gateway", Ref: ref("default", "waypoint")}, {Kind: "Service", Ref: ref("default", "api")}}},
		{name: "service target with explicit namespace and core group", ns: "default",
			spec:      v1alpha1.AuthorizationPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Group: "core", Kind: "Service", Name: "api", Namespace: "default"}}},
			wantScope: model.ScopeTargets, wantReason: "Accepted",
			wantTarget: []model.PolicyTarget{{Kind: "Service", Ref: ref("default", "api")}}},
		{name: "missing targets keep the policy and the found ones", ns: "default",
			spec:      v1alpha1.AuthorizationPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{gwRef("nope"), svcRef("api"), svcRef("gone")}},
			wantScope: model.ScopeTargets, wantReason: "TargetNotFound",
			wantTarget: []model.PolicyTarget{{Kind: "Service", Ref: ref("default", "api")}},
			wantMsg:    "spec.targetRefs[0]: Gateway default/nope does not exist\nspec.targetRefs[2]: Service default/gone does not exist"},
		{name: "ingress gateway is not a waypoint", ns: "default",
			spec:      v1alpha1.AuthorizationPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{gwRef("ingress")}},
			wantScope: model.ScopeTargets, wantReason: "TargetNotFound", wantMsg: "Gateway default/ingress is not a waypoint"},
		{name: "cross-namespace target", ns: "default",
			spec:      v1alpha1.AuthorizationPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Service", Name: "api", Namespace: "other"}}},
			wantScope: model.ScopeTargets, wantReason: "Invalid",
			wantMsg: `spec.targetRefs[0].namespace: "other": a policy may only target objects in its own namespace "default"`},
		{name: "unsupported target kind", ns: "default",
			spec:      v1alpha1.AuthorizationPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Deployment", Name: "api"}}},
			wantScope: model.ScopeTargets, wantReason: "Invalid", wantMsg: `spec.targetRefs[0].kind: "Deployment" is not supported`},
		{name: "gateway without group", ns: "default",
			spec:      v1alpha1.AuthorizationPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Gateway", Name: "waypoint"}}},
			wantScope: model.ScopeTargets, wantReason: "Invalid", wantMsg: `spec.targetRefs[0].group: "": kind Gateway needs group "gateway.networking.k8s.io"`},
		{name: "selector and targetRefs: selector wins", ns: "default",
			spec:      v1alpha1.AuthorizationPolicySpec{Selector: sel("app", "web"), TargetRefs: []v1alpha1.PolicyTargetReference{gwRef("waypoint")}},
			wantScope: model.ScopeWorkloads, wantWL: []model.Ref{ref("default", "web-1")}, wantReason: "Invalid",
			wantMsg: "spec.targetRefs: selector and targetRefs are mutually exclusive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, conds := runPolicy(t, policyObj(tc.ns, "p", tc.spec))
			if p.Scope != tc.wantScope {
				t.Errorf("scope = %q, want %q", p.Scope, tc.wantScope)
			}
			if diff := cmp.Diff(tc.wantWL, p.Workloads); diff != "" {
				t.Errorf("workloads (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantTarget, p.Targets); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
			acc := policyCond(conds, "Accepted")
			if acc == nil {
				t.Fatal("no Accepted condition")
			}
			if acc.Reason != tc.wantReason {
				t.Errorf("Accepted reason = %q (%s), want %q", acc.Reason, acc.Message, tc.wantReason)
			}
			if wantStatus := map[bool]string{true: "True", false: "False"}[tc.wantReason == "Accepted"]; acc.Status != wantStatus {
				t.Errorf("Accepted status = %q, want %q", acc.Status, wantStatus)
			}
			if !strings.Contains(acc.Message, tc.wantMsg) {
				t.Errorf("Accepted message %q does not contain %q", acc.Message, tc.wantMsg)
			}
		})
	}
}

func TestPolicyServiceTargetWithoutWaypoint(t *testing.T) {
	_, conds := runPolicy(t, policyObj("default", "p", v1alpha1.AuthorizationPolicySpec{
		TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Service", Name: "plain"}, {Kind: "Service", Name: "api"}},
	}))
	wr := policyCond(conds, "WaypointRequired")
	if wr == nil || wr.Status != "True" || wr.Reason != "ServiceNotBound" {
		t.Fatalf("WaypointRequired = %+v, want True/ServiceNotBound", wr)
	}
	if !strings.Contains(wr.Message, "Service default/plain has no waypoint") || strings.Contains(wr.Message, "default/api") {
		t.Errorf("message %q should name only the unbound service default/plain", wr.Message)
	}
	if acc := policyCond(conds, "Accepted"); acc == nil || acc.Status != "True" {
		t.Errorf("Accepted = %+v, want True", acc)
	}
}

func TestPolicyActions(t *testing.T) {
	rules := []v1alpha1.Rule{{}}
	tests := []struct {
		action     v1alpha1.AuthorizationAction
		wantAction string
		wantReason string
	}{
		{"", "ALLOW", "Accepted"},
		{"ALLOW", "ALLOW", "Accepted"},
		{"DENY", "DENY", "Accepted"},
		{"AUDIT", "AUDIT", "Accepted"},
		// Fail closed: what an unsupported action would have restricted stays restricted.
		{"CUSTOM", "DENY", "UnsupportedValue"},
		{"deny", "DENY", "UnsupportedValue"},
	}
	for _, tc := range tests {
		t.Run(string(tc.action), func(t *testing.T) {
			p, conds := runPolicy(t, policyObj("default", "p", v1alpha1.AuthorizationPolicySpec{Action: tc.action, Rules: rules}))
			if p.Action != tc.wantAction {
				t.Errorf("action = %q, want %q", p.Action, tc.wantAction)
			}
			acc := policyCond(conds, "Accepted")
			rejected := tc.wantReason != "Accepted"
			if acc.Reason != tc.wantReason || rejected != strings.HasPrefix(acc.Message, "spec.action: ") {
				t.Errorf("Accepted = %+v, want reason %q naming spec.action when rejected", acc, tc.wantReason)
			}
			if diff := cmp.Diff([]model.PolicyRule{{}}, p.Rules); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPolicyUnsupportedRanksFirst: with several kinds of problem the reason
// is the most consequential one and the message lists every problem.
func TestPolicyUnsupportedRanksFirst(t *testing.T) {
	_, conds := runPolicy(t, policyObj("default", "p", v1alpha1.AuthorizationPolicySpec{
		Action:     "CUSTOM",
		TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Service", Name: "gone"}},
		Rules:      []v1alpha1.Rule{{To: []v1alpha1.RuleTo{{Operation: v1alpha1.Operation{Ports: []string{"0"}}}}}},
	}))
	acc := policyCond(conds, "Accepted")
	if acc.Reason != "UnsupportedValue" {
		t.Errorf("reason = %q, want UnsupportedValue", acc.Reason)
	}
	lines := strings.Split(acc.Message, "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "spec.action:") ||
		!strings.HasPrefix(lines[1], "spec.rules[0].to[0].operation.ports[0]:") || !strings.HasPrefix(lines[2], "spec.targetRefs[0]:") {
		t.Errorf("message lines = %q, want action, rule, target problems in that order", lines)
	}
}

// TestPolicyRuleValidation: each class of malformed value is reported at
// its field path; the rule is kept, reduced to its Invalid message, and the
// policy's other rules are untouched.
func TestPolicyRuleValidation(t *testing.T) {
	src := func(s v1alpha1.Source) v1alpha1.Rule { return v1alpha1.Rule{From: []v1alpha1.RuleFrom{{Source: s}}} }
	op := func(o v1alpha1.Operation) v1alpha1.Rule { return v1alpha1.Rule{To: []v1alpha1.RuleTo{{Operation: o}}} }
	when := func(cs ...v1alpha1.Condition) v1alpha1.Rule { return v1alpha1.Rule{When: cs} }
	tests := []struct {
		name    string
		rule    v1alpha1.Rule
		wantErr string
	}{
		{"cidr prefix too long", src(v1alpha1.Source{IPBlocks: []string{"10.0.0.0/8", "10.0.0.0/33"}}),
			`spec.rules[0].from[0].source.ipBlocks[1]: "10.0.0.0/33" is not an IP address or CIDR`},
		{"ip garbage", src(v1alpha1.Source{NotIPBlocks: []string{"10.0.0"}}),
			`spec.rules[0].from[0].source.notIpBlocks[0]: "10.0.0" is not an IP address or CIDR`},
		{"ip with zone", src(v1alpha1.Source{IPBlocks: []string{"fe80::1%eth0"}}),
			`spec.rules[0].from[0].source.ipBlocks[0]: "fe80::1%eth0" is not an IP address or CIDR`},
		{"principal with spiffe prefix", src(v1alpha1.Source{Principals: []string{"spiffe://cluster.local/ns/a/sa/b"}}),
			`spec.rules[0].from[0].source.principals[0]: "spiffe://cluster.local/ns/a/sa/b": write principals without the "spiffe://" prefix, e.g. "cluster.local/ns/a/sa/b"`},
		{"principal not in td/ns/sa form", src(v1alpha1.Source{Principals: []string{"default/frontend"}}),
			`spec.rules[0].from[0].source.principals[0]: "default/frontend" is not a principal`},
		{"principal with inner star", src(v1alpha1.Source{NotPrincipals: []string{"cluster.local/ns/*/sa/b"}}),
			`spec.rules[0].from[0].source.notPrincipals[0]: "cluster.local/ns/*/sa/b" has a '*' that is not at the start or the end`},
		{"principal with stars at both ends", src(v1alpha1.Source{Principals: []string{"*frontend*"}}),
			`spec.rules[0].from[0].source.principals[0]: "*frontend*" has a '*' that is not at the start or the end`},
		{"empty principal", src(v1alpha1.Source{Principals: []string{""}}),
			`spec.rules[0].from[0].source.principals[0]: must not be empty`},
		{"namespace uppercase", src(v1alpha1.Source{Namespaces: []string{"Prod"}}),
			`spec.rules[0].from[0].source.namespaces[0]: "Prod" is not a namespace name`},
		{"namespace pattern with bad chars", src(v1alpha1.Source{NotNamespaces: []string{"team_*"}}),
			`spec.rules[0].from[0].source.notNamespaces[0]: "team_*" is not a namespace name`},
		{"empty source", src(v1alpha1.Source{}),
			`spec.rules[0].from[0].source: must set at least one of`},
		{"port zero", op(v1alpha1.Operation{Ports: []string{"0"}}),
			`spec.rules[0].to[0].operation.ports[0]: "0" is not a port number (1-65535)`},
		{"port too big", op(v1alpha1.Operation{NotPorts: []string{"65536"}}),
			`spec.rules[0].to[0].operation.notPorts[0]: "65536" is not a port number (1-65535)`},
		{"port name", op(v1alpha1.Operation{Ports: []string{"http"}}),
			`spec.rules[0].to[0].operation.ports[0]: "http" is not a port number (1-65535)`},
		{"port with sign", op(v1alpha1.Operation{Ports: []string{"+80"}}),
			`spec.rules[0].to[0].operation.ports[0]: "+80" is not a port number (1-65535)`},
		{"lowercase method", op(v1alpha1.Operation{Methods: []string{"get"}}),
			`spec.rules[0].to[0].operation.methods[0]: "get" is not an HTTP method; methods are uppercase tokens such as GET or POST`},
		{"relative path", op(v1alpha1.Operation{Paths: []string{"api/v1"}}),
			`spec.rules[0].to[0].operation.paths[0]: "api/v1" is not a path; start it with '/'`},
		{"path template", op(v1alpha1.Operation{NotPaths: []string{"/a/{*}/b"}}),
			`spec.rules[0].to[0].operation.notPaths[0]: "/a/{*}/b": path templates ({*}, {**}) are not supported`},
		{"path with query", op(v1alpha1.Operation{Paths: []string{"/a?b=c"}}),
			`spec.rules[0].to[0].operation.paths[0]: "/a?b=c": paths are matched without query or fragment`},
		{"host with path", op(v1alpha1.Operation{Hosts: []string{"example.com/x"}}),
			`spec.rules[0].to[0].operation.hosts[0]: "example.com/x" is not a host`},
		{"empty operation", op(v1alpha1.Operation{}),
			`spec.rules[0].to[0].operation: must set at least one of`},
		{"unknown when key", when(v1alpha1.Condition{Key: "source.foo", Values: []string{"x"}}),
			`spec.rules[0].when[0].key: "source.foo" is not a supported key; want one of source.ip,`},
		{"request.auth key", when(v1alpha1.Condition{Key: "request.auth.claims[iss]", Values: []string{"x"}}),
			`spec.rules[0].when[0].key: "request.auth.claims[iss]": request authentication (JWT) attributes are not supported`},
		{"bad header name", when(v1alpha1.Condition{Key: "request.headers[x y]", Values: []string{"x"}}),
			`spec.rules[0].when[0].key: "request.headers[x y]": "x y" is not an HTTP header name`},
		{"when without values", when(v1alpha1.Condition{Key: "source.ip"}),
			`spec.rules[0].when[0]: key "source.ip": set values or notValues`},
		{"when ip value", when(v1alpha1.Condition{Key: "destination.ip", NotValues: []string{"1.2.3.4/40"}}),
			`spec.rules[0].when[0].notValues[0]: "1.2.3.4/40" is not an IP address or CIDR`},
		{"when port value", when(v1alpha1.Condition{Key: "destination.port", Values: []string{"80", "x"}}),
			`spec.rules[0].when[0].values[1]: "x" is not a port number (1-65535)`},
		{"when principal value", when(v1alpha1.Condition{Key: "source.principal", Values: []string{"spiffe://td/ns/a/sa/b"}}),
			`spec.rules[0].when[0].values[0]: "spiffe://td/ns/a/sa/b": write principals without the "spiffe://" prefix`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			valid := v1alpha1.Rule{From: []v1alpha1.RuleFrom{{Source: v1alpha1.Source{Namespaces: []string{"ok"}}}}}
			// The bad rule is the first; the second, valid rule must be untouched.
			p, conds := runPolicy(t, policyObj("default", "p", v1alpha1.AuthorizationPolicySpec{
				Action: "DENY", Rules: []v1alpha1.Rule{tc.rule, valid},
			}))
			if len(p.Rules) != 2 {
				t.Fatalf("got %d rules, want 2", len(p.Rules))
			}
			if !strings.HasPrefix(p.Rules[0].Invalid, tc.wantErr) {
				t.Errorf("rule Invalid = %q, want prefix %q", p.Rules[0].Invalid, tc.wantErr)
			}
			if diff := cmp.Diff(model.PolicyRule{Invalid: p.Rules[0].Invalid}, p.Rules[0], policyCmpOpts); diff != "" {
				t.Errorf("an invalid rule must carry only its Invalid message (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(model.PolicyRule{From: []model.PolicySource{{Namespaces: []string{"ok"}}}}, p.Rules[1], policyCmpOpts); diff != "" {
				t.Errorf("valid rule changed (-want +got):\n%s", diff)
			}
			if p.Action != "DENY" {
				t.Errorf("action = %q, an invalid rule must not change it", p.Action)
			}
			if p.NeedsWaypoint || policyCond(conds, "WaypointRequired") != nil {
				t.Error("HTTP attributes of an invalid rule must not ask for a waypoint: the rule is enforced as a whole")
			}
			acc := policyCond(conds, "Accepted")
			if acc.Status != "False" || acc.Reason != "Invalid" || !strings.HasPrefix(acc.Message, tc.wantErr) {
				t.Errorf("Accepted = %+v, want False/Invalid starting with %q", acc, tc.wantErr)
			}
		})
	}
}

// TestPolicyValidValues: accepted values, normalised where the model's
// form differs from what users write.
func TestPolicyValidValues(t *testing.T) {
	rule := v1alpha1.Rule{
		From: []v1alpha1.RuleFrom{{Source: v1alpha1.Source{
			Principals:    []string{"cluster.local/ns/default/sa/web", "*", "cluster.local/ns/prod/*", "*/sa/admin"},
			NotPrincipals: []string{"td/ns/x/sa/y"},
			Namespaces:    []string{"default", "team-*", "*-prod"},
			IPBlocks:      []string{"10.1.2.3", "10.1.2.3/8", "fd00::1", "fd00::/64"},
			NotIPBlocks:   []string{"192.168.0.0/16"},
		}}},
		To: []v1alpha1.RuleTo{{Operation: v1alpha1.Operation{
			Ports: []string{"80", "65535"}, NotPorts: []string{"1"},
		}}},
		When: []v1alpha1.Condition{
			{Key: "source.ip", Values: []string{"10.0.0.1"}},
			{Key: "destination.port", NotValues: []string{"08080"}},
			{Key: "source.namespace", Values: []string{"default"}},
		},
	}
	p, conds := runPolicy(t, policyObj("default", "p", v1alpha1.AuthorizationPolicySpec{Rules: []v1alpha1.Rule{rule}}))
	want := model.PolicyRule{
		From: []model.PolicySource{{
			Principals:    []string{"cluster.local/ns/default/sa/web", "*", "cluster.local/ns/prod/*", "*/sa/admin"},
			NotPrincipals: []string{"td/ns/x/sa/y"},
			Namespaces:    []string{"default", "team-*", "*-prod"},
			IPBlocks: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("fd00::1/128"), netip.MustParsePrefix("fd00::/64")},
			NotIPBlocks: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")},
		}},
		To: []model.PolicyOperation{{Ports: []int32{80, 65535}, NotPorts: []int32{1}}},
		When: []model.PolicyCondition{
			{Key: "source.ip", Values: []string{"10.0.0.1/32"}},
			{Key: "destination.port", NotValues: []string{"8080"}},
			{Key: "source.namespace", Values: []string{"default"}},
		},
	}
	if diff := cmp.Diff([]model.PolicyRule{want}, p.Rules, policyCmpOpts); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	if acc := policyCond(conds, "Accepted"); acc.Status != "True" {
		t.Errorf("Accepted = %+v, want True", acc)
	}
	if p.NeedsWaypoint || policyCond(conds, "WaypointRequired") != nil {
		t.Error("an L4-only policy must not ask for a waypoint")
	}
}

func TestPolicyL7Fields(t *testing.T) {
	l7Rules := []v1alpha1.Rule{
		{To: []v1alpha1.RuleTo{{Operation: v1alpha1.Operation{Methods: []string{"GET"}, Paths: []string{"/api/*"}, Ports: []string{"8080"}}}}},
		{When: []v1alpha1.Condition{{Key: "request.headers[x-tenant]", Values: []string{"a"}}, {Key: "source.ip", Values: []string{"10.0.0.0/8"}}}},
		{From: []v1alpha1.RuleFrom{{Source: v1alpha1.Source{Namespaces: []string{"a"}}}}},
	}
	tests := []struct {
		name     string
		ns       string
		action   v1alpha1.AuthorizationAction
		selector *v1alpha1.WorkloadSelector
		targets  []v1alpha1.PolicyTargetReference
		wantNeed bool
		wantWord string // how the message describes the effect
	}{
		{name: "namespace ALLOW", ns: "default", wantNeed: true, wantWord: "never match, so the policy allows less"},
		{name: "mesh DENY", ns: policyTestRoot, action: "DENY", wantNeed: true, wantWord: "denies more than written"},
		{name: "selector ALLOW", ns: "default", selector: &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "api"}}, wantNeed: true, wantWord: "never match, so the policy allows less"},
		{name: "waypoint target", ns: "default", targets: []v1alpha1.PolicyTargetReference{{Group: gatewayGroup, Kind: "Gateway", Name: "waypoint"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, conds := runPolicy(t, policyObj(tc.ns, "p", v1alpha1.AuthorizationPolicySpec{
				Action: tc.action, Selector: tc.selector, TargetRefs: tc.targets, Rules: l7Rules,
			}))
			if p.NeedsWaypoint != tc.wantNeed {
				t.Errorf("NeedsWaypoint = %v, want %v", p.NeedsWaypoint, tc.wantNeed)
			}
			for i, r := range p.Rules {
				if r.Invalid != "" {
					t.Errorf("rule %d invalid: %s", i, r.Invalid)
				}
			}
			if acc := policyCond(conds, "Accepted"); acc.Status != "True" {
				t.Errorf("Accepted = %+v, want True: L7 fields are valid, only unenforceable at node proxies", acc)
			}
			wr := policyCond(conds, "WaypointRequired")
			if !tc.wantNeed {
				if wr != nil {
					t.Errorf("unexpected WaypointRequired %+v", wr)
				}
				return
			}
			if wr == nil || wr.Status != "True" || wr.Reason != "L7FieldsAtNodeProxy" {
				t.Fatalf("WaypointRequired = %+v, want True/L7FieldsAtNodeProxy", wr)
			}
			for _, f := range []string{"spec.rules[0].to[0].operation.methods", "spec.rules[0].to[0].operation.paths",
				"spec.rules[1].when[0] (request.headers[x-tenant])", "targetRefs", tc.wantWord} {
				if !strings.Contains(wr.Message, f) {
					t.Errorf("WaypointRequired message %q does not mention %q", wr.Message, f)
				}
			}
			for _, f := range []string{"ports", "when[1]", "rules[2]"} {
				if strings.Contains(wr.Message, f) {
					t.Errorf("WaypointRequired message %q names L4 field %q", wr.Message, f)
				}
			}
		})
	}
}

func TestPolicyStatusAndOrder(t *testing.T) {
	ap := func(ns, name string, gen int64) *v1alpha1.AuthorizationPolicy {
		p := policyObj(ns, name, v1alpha1.AuthorizationPolicySpec{})
		p.Generation = gen
		return p
	}
	// Resources are sorted by the sources; the model must be sorted anyway.
	tr := policyTestTranslator(ap("z", "a", 0), ap("default", "b", 7), ap("default", "a", 3))
	tr.translatePolicies()
	var got []string
	for _, p := range tr.mesh.Policies {
		got = append(got, p.Ref.String())
	}
	if diff := cmp.Diff([]string{"default/a", "default/b", "z/a"}, got); diff != "" {
		t.Errorf("policy order (-want +got):\n%s", diff)
	}
	for ref, wantGen := range map[model.Ref]int64{{Namespace: "default", Name: "b"}: 7, {Namespace: "default", Name: "a"}: 3, {Namespace: "z", Name: "a"}: 1} {
		o := tr.status[status.ObjectRef{Group: "ambit.dev", Kind: "AuthorizationPolicy", Namespace: ref.Namespace, Name: ref.Name}]
		if o == nil {
			t.Fatalf("no status for %s", ref)
		}
		want := []status.Condition{{Type: "Accepted", Status: "True", Reason: "Accepted",
			Message: "applies to every workload in namespace " + ref.Namespace +
				"; it has no rules, so it allows nothing by itself (requests need another ALLOW policy that matches)",
			ObservedGeneration: wantGen}}
		if diff := cmp.Diff(want, o.Conditions); diff != "" {
			t.Errorf("%s conditions (-want +got):\n%s", ref, diff)
		}
	}
}

func TestPolicyFieldErrorsAreSentinel(t *testing.T) {
	_, errs, _ := translatePolicyRule(nil, v1alpha1.Rule{To: []v1alpha1.RuleTo{{Operation: v1alpha1.Operation{Ports: []string{"x"}}}}})
	if len(errs) != 1 || !errors.Is(errs[0], ErrInvalidPolicyField) {
		t.Fatalf("errs = %v, want one wrapping ErrInvalidPolicyField", errs)
	}
}

// FuzzPolicyValues checks the value parsers never panic and that whatever
// they accept has the shape enforcers rely on.
func FuzzPolicyValues(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "fd00::1", "cluster.local/ns/a/sa/b", "*", "prefix*", "*suffix", "a*b",
		"spiffe://x", "/api/*", "GET", "65535", "0", "team-*", "{*}", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if p, err := parsePolicyPrefix(v); err == nil && (!p.IsValid() || p != p.Masked()) {
			t.Errorf("parsePolicyPrefix(%q) = %v: not a valid masked prefix", v, p)
		}
		if n, err := parsePolicyPort(v); err == nil && (n < 1 || n > 65535) {
			t.Errorf("parsePolicyPort(%q) = %d", v, n)
		}
		for name, check := range map[string]func(string) (string, error){
			"principal": checkPolicyPrincipal, "namespace": checkPolicyNamespace, "path": checkPolicyPath, "host": checkPolicyHost,
		} {
			got, err := check(v)
			if err != nil {
				continue
			}
			inner := strings.TrimSuffix(strings.TrimPrefix(got, "*"), "*")
			if got == "" || (got != "*" && strings.Contains(inner, "*")) {
				t.Errorf("%s %q accepted with an inner '*' or empty", name, v)
			}
			if strings.HasPrefix(got, "*") && strings.HasSuffix(got, "*") && got != "*" {
				t.Errorf("%s %q accepted with '*' at both ends", name, v)
			}
		}
		if got, err := checkPolicyPrincipal(v); err == nil && strings.HasPrefix(got, "spiffe://") {
			t.Errorf("principal %q accepted with spiffe:// prefix", v)
		}
	})
}

package translate

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/ambitmesh/ambit/api/v1alpha1"
	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

// AuthorizationPolicy status vocabulary. The reasons follow Gateway API
// policy attachment (GEP-713: Accepted/Invalid/TargetNotFound) and Istio
// (UnsupportedValue); WaypointRequired is ambit's own condition type.
const (
	PolicyConditionAccepted         = "Accepted"
	PolicyConditionWaypointRequired = "WaypointRequired"

	PolicyReasonAccepted         = "Accepted"
	PolicyReasonInvalid          = "Invalid"
	PolicyReasonTargetNotFound   = "TargetNotFound"
	PolicyReasonUnsupportedValue = "UnsupportedValue"
	// PolicyReasonL7AtNodeProxy: HTTP attributes in a policy enforced by node proxies.
	PolicyReasonL7AtNodeProxy = "L7FieldsAtNodeProxy"
	// PolicyReasonServiceNotBound: a Service target has no waypoint, so
	// nothing enforces the policy for it.
	PolicyReasonServiceNotBound = "ServiceNotBound"
)

// ErrInvalidPolicyField is wrapped by every field validation error of an
// AuthorizationPolicy, so callers can tell them apart with errors.Is.
var ErrInvalidPolicyField = errors.New("invalid AuthorizationPolicy field")

const (
	policyKind        = "AuthorizationPolicy"
	gatewayGroup      = "gateway.networking.k8s.io"
	policyTargetGW    = "Gateway"
	policyTargetSvc   = "Service"
	policyActionDeny  = string(v1alpha1.ActionDeny)
	policyActionAllow = string(v1alpha1.ActionAllow)
)

// policyFieldError is one validation problem at a field path.
type policyFieldError struct {
	path *field.Path
	msg  string
}

func (e *policyFieldError) Error() string { return e.path.String() + ": " + e.msg }
func (e *policyFieldError) Unwrap() error { return ErrInvalidPolicyField }

func policyErrf(path *field.Path, format string, args ...any) error {
	return &policyFieldError{path: path, msg: fmt.Sprintf(format, args...)}
}

// translatePolicies resolves every AuthorizationPolicy to its scope and
// validates it. It runs after workloads, services, gateways and waypoint
// bindings, whose indexes it reads.
//
// Invalid parts never make a policy disappear: an invalid rule stays in the
// model marked Invalid (it never matches in ALLOW and always matches in DENY,
// i.e. fails closed) and the rest of the policy still applies. Dropping a
// DENY because of a typo elsewhere in it would silently open access.
func (t *translator) translatePolicies() {
	for _, ap := range t.res.AuthorizationPolicies {
		p, conds := t.translatePolicy(ap)
		t.mesh.Policies = append(t.mesh.Policies, p)
		o := t.obj(status.ObjectRef{Group: v1alpha1.GroupVersion.Group, Kind: policyKind, Namespace: ap.Namespace, Name: ap.Name})
		for _, c := range conds {
			setCondition(&o.Conditions, c)
		}
	}
	slices.SortFunc(t.mesh.Policies, func(a, b model.Policy) int { return compareRef(a.Ref, b.Ref) })
}

// policyProblems collects a policy's problems by the reason they map to.
type policyProblems struct {
	unsupported []error // action CUSTOM or unknown
	invalid     []error // malformed fields
	notFound    []error // targets that do not resolve
}

// reason picks the Accepted=False reason: an unsupported action changes
// what the whole policy does, so it ranks first; malformed fields next; a
// target that may simply not exist yet last.
func (pp *policyProblems) reason() string {
	switch {
	case len(pp.unsupported) > 0:
		return PolicyReasonUnsupportedValue
	case len(pp.invalid) > 0:
		return PolicyReasonInvalid
	case len(pp.notFound) > 0:
		return PolicyReasonTargetNotFound
	}
	return PolicyReasonAccepted
}

func (pp *policyProblems) err() error {
	return errors.Join(slices.Concat(pp.unsupported, pp.invalid, pp.notFound)...)
}

// translatePolicy turns one AuthorizationPolicy into its model form and the
// conditions for its status.
func (t *translator) translatePolicy(ap *v1alpha1.AuthorizationPolicy) (model.Policy, []status.Condition) {
	gen := resources.Generation(ap)
	spec := field.NewPath("spec")
	p := model.Policy{Ref: model.Ref{Namespace: ap.Namespace, Name: ap.Name}}
	var pp policyProblems

	// Action. CUSTOM (external authorizer) is not supported, and neither is
	// a misspelt action. Such a policy is enforced as DENY: the requests its
	// rules match are refused, which is what Istio does when a CUSTOM
	// policy's provider is missing. Ignoring it instead would fail open.
	switch a := ap.Spec.Action; a {
	case "":
		p.Action = policyActionAllow
	case v1alpha1.ActionAllow, v1alpha1.ActionDeny, v1alpha1.ActionAudit:
		p.Action = string(a)
	case "CUSTOM":
		p.Action = policyActionDeny
		pp.unsupported = append(pp.unsupported, policyErrf(spec.Child("action"),
			"CUSTOM (external authorization) is not supported; the policy is enforced as DENY so that the requests it matches are refused; use ALLOW, DENY or AUDIT"))
	default:
		p.Action = policyActionDeny
		pp.unsupported = append(pp.unsupported, policyErrf(spec.Child("action"),
			"%q is not supported; want ALLOW, DENY or AUDIT; until fixed the policy is enforced as DENY", a))
	}

	t.policyScope(ap, &p, &pp)

	nodeEnforced := p.Scope != model.ScopeTargets
	var l7 []string
	for i, r := range ap.Spec.Rules {
		rule, ruleErrs, ruleL7 := translatePolicyRule(spec.Child("rules").Index(i), r)
		if len(ruleErrs) > 0 {
			// Only Invalid is kept: a half-parsed rule would read as a
			// narrower or broader match than the user wrote, and enforcers
			// must treat the rule as a whole (fail closed) anyway.
			rule = model.PolicyRule{Invalid: errors.Join(ruleErrs...).Error()}
			pp.invalid = append(pp.invalid, ruleErrs...)
		}
		// An invalid rule is enforced as a whole (fail closed), so its HTTP
		// attributes no longer matter.
		if nodeEnforced && rule.Invalid == "" {
			l7 = append(l7, ruleL7...)
		}
		p.Rules = append(p.Rules, rule)
	}
	p.NeedsWaypoint = len(l7) > 0

	var conds []status.Condition
	if err := pp.err(); err != nil {
		conds = append(conds, status.Condition{
			Type: PolicyConditionAccepted, Status: status.False, Reason: pp.reason(),
			Message: err.Error(), ObservedGeneration: gen,
		})
	} else {
		conds = append(conds, status.Condition{
			Type: PolicyConditionAccepted, Status: status.True, Reason: PolicyReasonAccepted,
			Message:            policyScopeMessage(&p),
			ObservedGeneration: gen,
		})
	}
	if len(l7) > 0 {
		conds = append(conds, status.Condition{
			Type: PolicyConditionWaypointRequired, Status: status.True, Reason: PolicyReasonL7AtNodeProxy,
			Message: policyL7Message(p.Action, l7), ObservedGeneration: gen,
		})
	} else if unbound := t.unboundServiceTargets(p.Targets); len(unbound) > 0 {
		conds = append(conds, status.Condition{
			Type: PolicyConditionWaypointRequired, Status: status.True, Reason: PolicyReasonServiceNotBound,
			Message: fmt.Sprintf("Service %s has no waypoint, so nothing enforces this policy for it; label the Service or its namespace with %s=<waypoint>",
				strings.Join(unbound, ", Service "), LabelUseWaypoint),
			ObservedGeneration: gen,
		})
	}
	return p, conds
}

func policyScopeMessage(p *model.Policy) string {
	msg := policyScopeText(p)
	if p.Action == policyActionAllow && len(p.Rules) == 0 {
		msg += "; it has no rules, so it allows nothing by itself (requests need another ALLOW policy that matches)"
	}
	return msg
}

func policyScopeText(p *model.Policy) string {
	switch p.Scope {
	case model.ScopeMesh:
		return "applies to every workload in the mesh"
	case model.ScopeNamespace:
		return "applies to every workload in namespace " + p.Namespace
	case model.ScopeWorkloads:
		return fmt.Sprintf("applies to the workloads its selector picks (%d now)", len(p.Workloads))
	}
	return fmt.Sprintf("applies to traffic through its %d target(s)", len(p.Targets))
}

func policyL7Message(action string, fields []string) string {
	var effect string
	switch action {
	case policyActionAllow:
		effect = "the rules using them never match, so the policy allows less than written"
	case policyActionDeny:
		effect = "the rules using them match ignoring those attributes, so the policy denies more than written"
	default:
		effect = "the rules using them match ignoring those attributes, so the policy audits more than written"
	}
	return fmt.Sprintf("node proxies cannot see HTTP attributes (%s); %s. Bind a waypoint (label %s=<waypoint> on the namespace or service) and attach the policy to it with spec.targetRefs",
		strings.Join(fields, ", "), effect, LabelUseWaypoint)
}

// policyScope sets the policy's scope with its selected workloads or
// resolved targets.
func (t *translator) policyScope(ap *v1alpha1.AuthorizationPolicy, p *model.Policy, pp *policyProblems) {
	spec := field.NewPath("spec")
	hasSelector := ap.Spec.Selector != nil && len(ap.Spec.Selector.MatchLabels) > 0
	root := ap.Namespace == t.mesh.RootNamespace

	if hasSelector && len(ap.Spec.TargetRefs) > 0 {
		// Node proxies see every connection to the selected workloads, so
		// keeping the selector keeps the policy in force wherever traffic
		// arrives; a waypoint only sees traffic routed through it.
		pp.invalid = append(pp.invalid, policyErrf(spec.Child("targetRefs"),
			"selector and targetRefs are mutually exclusive; the selector is used and targetRefs are ignored until one of them is removed"))
	}

	switch {
	case hasSelector:
		p.Scope = model.ScopeWorkloads
		p.Selector = maps.Clone(ap.Spec.Selector.MatchLabels)
		for _, k := range slices.Sorted(maps.Keys(p.Selector)) {
			v := p.Selector[k]
			path := spec.Child("selector", "matchLabels").Key(k)
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				pp.invalid = append(pp.invalid, policyErrf(path, "%q is not a label key: %s", k, strings.Join(errs, "; ")))
			}
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				pp.invalid = append(pp.invalid, policyErrf(path, "%q is not a label value: %s", v, strings.Join(errs, "; ")))
			}
		}
		labels := t.workloadLabels()
		namespaces := []string{ap.Namespace}
		if root {
			namespaces = slices.Collect(maps.Keys(labels))
		}
		for _, ns := range namespaces {
			for _, i := range labels.selected(ns, p.Selector, t.mesh.Workloads) {
				p.Workloads = append(p.Workloads, t.mesh.Workloads[i].Ref)
			}
		}
		slices.SortFunc(p.Workloads, compareRef)
	case len(ap.Spec.TargetRefs) > 0:
		p.Scope = model.ScopeTargets
		for i, tr := range ap.Spec.TargetRefs {
			target, err := t.resolvePolicyTarget(spec.Child("targetRefs").Index(i), ap.Namespace, tr)
			switch {
			case errors.Is(err, errPolicyTargetNotFound):
				pp.notFound = append(pp.notFound, err)
			case err != nil:
				pp.invalid = append(pp.invalid, err)
			default:
				p.Targets = append(p.Targets, target)
			}
		}
		slices.SortFunc(p.Targets, func(a, b model.PolicyTarget) int {
			return cmp.Or(cmp.Compare(a.Kind, b.Kind), compareRef(a.Ref, b.Ref))
		})
		p.Targets = slices.Compact(p.Targets)
	case root:
		p.Scope = model.ScopeMesh
	default:
		p.Scope = model.ScopeNamespace
	}
}

var errPolicyTargetNotFound = errors.New("policy target not found")

type policyTargetNotFound struct {
	path *field.Path
	msg  string
}

func (e *policyTargetNotFound) Error() string { return e.path.String() + ": " + e.msg }
func (e *policyTargetNotFound) Unwrap() error { return errPolicyTargetNotFound }

// resolvePolicyTarget checks one targetRef. Targets that do not resolve are
// left out of the model (nothing could enforce them); the policy itself
// stays, reported with Accepted=False/TargetNotFound, and binds as soon as
// the target appears.
func (t *translator) resolvePolicyTarget(path *field.Path, ns string, tr v1alpha1.PolicyTargetReference) (model.PolicyTarget, error) {
	if tr.Namespace != "" && tr.Namespace != ns {
		return model.PolicyTarget{}, policyErrf(path.Child("namespace"),
			"%q: a policy may only target objects in its own namespace %q", tr.Namespace, ns)
	}
	if tr.Name == "" {
		return model.PolicyTarget{}, policyErrf(path.Child("name"), "must not be empty")
	}
	ref := model.Ref{Namespace: ns, Name: tr.Name}
	notFound := func(format string, args ...any) error {
		return &policyTargetNotFound{path: path, msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case tr.Kind == policyTargetGW && tr.Group == gatewayGroup:
		gw, ok := t.gateways[ref]
		if !ok {
			if t.res.Gateway(ns, tr.Name) != nil {
				return model.PolicyTarget{}, notFound("Gateway %s is not an accepted %s Gateway (see its status)", ref, ClassNameWaypoint)
			}
			return model.PolicyTarget{}, notFound("Gateway %s does not exist", ref)
		}
		if gw.Class != model.ClassWaypoint {
			return model.PolicyTarget{}, notFound("Gateway %s is not a waypoint (gatewayClassName %s); target a waypoint Gateway or a Service", ref, ClassNameWaypoint)
		}
	case tr.Kind == policyTargetSvc && (tr.Group == "" || tr.Group == "core"):
		if _, ok := t.services[ref]; !ok {
			return model.PolicyTarget{}, notFound("Service %s does not exist", ref)
		}
	case tr.Kind == policyTargetGW:
		return model.PolicyTarget{}, policyErrf(path.Child("group"), "%q: kind Gateway needs group %q", tr.Group, gatewayGroup)
	case tr.Kind == policyTargetSvc:
		return model.PolicyTarget{}, policyErrf(path.Child("group"), "%q: kind Service needs the core group \"\"", tr.Group)
	default:
		return model.PolicyTarget{}, policyErrf(path.Child("kind"), "%q is not supported; want Gateway (group %s) or Service (group \"\")", tr.Kind, gatewayGroup)
	}
	return model.PolicyTarget{Kind: tr.Kind, Ref: ref}, nil
}

// unboundServiceTargets names the Service targets without a waypoint.
func (t *translator) unboundServiceTargets(targets []model.PolicyTarget) []string {
	var out []string
	for _, tg := range targets {
		if tg.Kind != policyTargetSvc {
			continue
		}
		if svc, ok := t.services[tg.Ref]; ok && svc.Waypoint == nil {
			out = append(out, tg.Ref.String())
		}
	}
	return out
}

// translatePolicyRule validates one rule. It returns the rule with its
// values normalised, the problems, and the paths of HTTP-only attributes in
// it.
func translatePolicyRule(path *field.Path, r v1alpha1.Rule) (model.PolicyRule, []error, []string) {
	var (
		rule model.PolicyRule
		errs []error
		l7   []string
	)
	for i, f := range r.From {
		sp := path.Child("from").Index(i).Child("source")
		s := f.Source
		var src model.PolicySource
		src.Principals = policyStrings(sp.Child("principals"), s.Principals, checkPolicyPrincipal, &errs)
		src.NotPrincipals = policyStrings(sp.Child("notPrincipals"), s.NotPrincipals, checkPolicyPrincipal, &errs)
		src.Namespaces = policyStrings(sp.Child("namespaces"), s.Namespaces, checkPolicyNamespace, &errs)
		src.NotNamespaces = policyStrings(sp.Child("notNamespaces"), s.NotNamespaces, checkPolicyNamespace, &errs)
		src.IPBlocks = policyPrefixes(sp.Child("ipBlocks"), s.IPBlocks, &errs)
		src.NotIPBlocks = policyPrefixes(sp.Child("notIpBlocks"), s.NotIPBlocks, &errs)
		if len(s.Principals)+len(s.NotPrincipals)+len(s.Namespaces)+len(s.NotNamespaces)+len(s.IPBlocks)+len(s.NotIPBlocks) == 0 {
			// Istio rejects this too: an empty source is almost always a
			// mistake (an indentation slip), and "matches anyone" is what
			// omitting `from` already says.
			errs = append(errs, policyErrf(sp, "must set at least one of principals, notPrincipals, namespaces, notNamespaces, ipBlocks, notIpBlocks; omit `from` to match any source"))
		}
		rule.From = append(rule.From, src)
	}
	for i, tt := range r.To {
		op := path.Child("to").Index(i).Child("operation")
		o := tt.Operation
		var mo model.PolicyOperation
		mo.Ports = policyPorts(op.Child("ports"), o.Ports, &errs)
		mo.NotPorts = policyPorts(op.Child("notPorts"), o.NotPorts, &errs)
		mo.Methods = policyStrings(op.Child("methods"), o.Methods, checkPolicyMethod, &errs)
		mo.NotMethods = policyStrings(op.Child("notMethods"), o.NotMethods, checkPolicyMethod, &errs)
		mo.Paths = policyStrings(op.Child("paths"), o.Paths, checkPolicyPath, &errs)
		mo.NotPaths = policyStrings(op.Child("notPaths"), o.NotPaths, checkPolicyPath, &errs)
		mo.Hosts = policyStrings(op.Child("hosts"), o.Hosts, checkPolicyHost, &errs)
		mo.NotHosts = policyStrings(op.Child("notHosts"), o.NotHosts, checkPolicyHost, &errs)
		for _, f := range []struct {
			name string
			n    int
		}{{"methods", len(o.Methods)}, {"notMethods", len(o.NotMethods)}, {"paths", len(o.Paths)},
			{"notPaths", len(o.NotPaths)}, {"hosts", len(o.Hosts)}, {"notHosts", len(o.NotHosts)}} {
			if f.n > 0 {
				l7 = append(l7, op.Child(f.name).String())
			}
		}
		if len(o.Ports)+len(o.NotPorts)+len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths)+len(o.Hosts)+len(o.NotHosts) == 0 {
			errs = append(errs, policyErrf(op, "must set at least one of ports, notPorts, methods, notMethods, paths, notPaths, hosts, notHosts; omit `to` to match any operation"))
		}
		rule.To = append(rule.To, mo)
	}
	for i, c := range r.When {
		wp := path.Child("when").Index(i)
		cond, isL7, cerrs := translatePolicyCondition(wp, c)
		errs = append(errs, cerrs...)
		if isL7 {
			l7 = append(l7, fmt.Sprintf("%s (%s)", wp.String(), c.Key))
		}
		rule.When = append(rule.When, cond)
	}
	return rule, errs, l7
}

// policyConditionKind describes how a `when` key's values are checked and
// whether node proxies can evaluate it.
type policyConditionKind struct {
	check func(string) (string, error)
	l7    bool
}

// policyConditionKeys are the Istio condition keys ambit understands. The
// L4 ones are the set ztunnel evaluates; everything else needs a waypoint.
var policyConditionKeys = map[string]policyConditionKind{
	"source.ip":        {check: checkPolicyIP},
	"source.namespace": {check: checkPolicyNamespace},
	"source.principal": {check: checkPolicyPrincipal},
	"destination.ip":   {check: checkPolicyIP},
	"destination.port": {check: checkPolicyPortString},
	// remote.ip is the original client from X-Forwarded-For / PROXY protocol.
	"remote.ip":      {check: checkPolicyIP, l7: true},
	"connection.sni": {check: checkPolicyHost, l7: true},
}

var policyConditionKeyList = "source.ip, source.namespace, source.principal, destination.ip, destination.port, remote.ip, connection.sni, request.headers[<name>]"

func translatePolicyCondition(path *field.Path, c v1alpha1.Condition) (model.PolicyCondition, bool, []error) {
	var errs []error
	kind, ok := policyConditionKeys[c.Key]
	switch {
	case ok:
	case strings.HasPrefix(c.Key, "request.headers[") && strings.HasSuffix(c.Key, "]"):
		name := strings.TrimSuffix(strings.TrimPrefix(c.Key, "request.headers["), "]")
		if msgs := validation.IsHTTPHeaderName(name); name == "" || len(msgs) > 0 {
			errs = append(errs, policyErrf(path.Child("key"), "%q: %q is not an HTTP header name", c.Key, name))
		}
		kind = policyConditionKind{check: checkPolicyNonEmpty, l7: true}
	case strings.HasPrefix(c.Key, "request.auth."):
		errs = append(errs, policyErrf(path.Child("key"), "%q: request authentication (JWT) attributes are not supported; want one of %s", c.Key, policyConditionKeyList))
		kind = policyConditionKind{check: checkPolicyNonEmpty, l7: true}
	case c.Key == "":
		errs = append(errs, policyErrf(path.Child("key"), "must not be empty; want one of %s", policyConditionKeyList))
		kind = policyConditionKind{check: checkPolicyNonEmpty}
	default:
		errs = append(errs, policyErrf(path.Child("key"), "%q is not a supported key; want one of %s", c.Key, policyConditionKeyList))
		// An unknown key may well be HTTP-level; without knowing, the rule
		// is invalid anyway, so do not also claim it needs a waypoint.
		kind = policyConditionKind{check: checkPolicyNonEmpty}
	}
	cond := model.PolicyCondition{Key: c.Key}
	cond.Values = policyStrings(path.Child("values"), c.Values, kind.check, &errs)
	cond.NotValues = policyStrings(path.Child("notValues"), c.NotValues, kind.check, &errs)
	if len(c.Values)+len(c.NotValues) == 0 {
		errs = append(errs, policyErrf(path, "key %q: set values or notValues", c.Key))
	}
	return cond, kind.l7, errs
}

// policyStrings checks each value, returning the normalised valid ones and
// appending an error naming the element's path for each invalid one.
func policyStrings(path *field.Path, values []string, check func(string) (string, error), errs *[]error) []string {
	var out []string
	for i, v := range values {
		nv, err := check(v)
		if err != nil {
			*errs = append(*errs, &policyFieldError{path: path.Index(i), msg: err.Error()})
			continue
		}
		out = append(out, nv)
	}
	return out
}

func policyPrefixes(path *field.Path, values []string, errs *[]error) []netip.Prefix {
	var out []netip.Prefix
	for i, v := range values {
		p, err := parsePolicyPrefix(v)
		if err != nil {
			*errs = append(*errs, &policyFieldError{path: path.Index(i), msg: err.Error()})
			continue
		}
		out = append(out, p)
	}
	return out
}

func policyPorts(path *field.Path, values []string, errs *[]error) []int32 {
	var out []int32
	for i, v := range values {
		p, err := parsePolicyPort(v)
		if err != nil {
			*errs = append(*errs, &policyFieldError{path: path.Index(i), msg: err.Error()})
			continue
		}
		out = append(out, p)
	}
	return out
}

// parsePolicyPrefix accepts a CIDR or a bare address (a /32 or /128).
// Prefixes are masked so that "10.1.2.3/8" and "10.0.0.0/8" are one value.
func parsePolicyPrefix(v string) (netip.Prefix, error) {
	bad := fmt.Errorf("%q is not an IP address or CIDR (e.g. 10.0.0.0/8, 10.1.2.3 or fd00::/64)", v)
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, bad
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, bad
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func checkPolicyIP(v string) (string, error) {
	p, err := parsePolicyPrefix(v)
	if err != nil {
		return "", err
	}
	return p.String(), nil
}

func parsePolicyPort(v string) (int32, error) {
	bad := fmt.Errorf("%q is not a port number (1-65535)", v)
	if v == "" || len(v) > 5 || strings.TrimLeft(v, "0123456789") != "" {
		return 0, bad
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return 0, bad
	}
	return int32(n), nil
}

func checkPolicyPortString(v string) (string, error) {
	p, err := parsePolicyPort(v)
	if err != nil {
		return "", err
	}
	return strconv.Itoa(int(p)), nil
}

// policyPattern splits a "prefix*", "*suffix" or "*" pattern into its
// literal part; a '*' anywhere else is an error.
func policyPattern(v string) (literal string, wildcard bool, err error) {
	if v == "*" {
		return "", true, nil
	}
	lit := v
	switch {
	case strings.HasPrefix(v, "*"):
		lit, wildcard = v[1:], true
	case strings.HasSuffix(v, "*"):
		lit, wildcard = v[:len(v)-1], true
	}
	if strings.Contains(lit, "*") {
		return "", false, fmt.Errorf("%q has a '*' that is not at the start or the end; want an exact value, \"prefix*\", \"*suffix\" or \"*\"", v)
	}
	if strings.ContainsFunc(lit, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", false, fmt.Errorf("%q contains whitespace or control characters", v)
	}
	return lit, wildcard, nil
}

func checkPolicyPrincipal(v string) (string, error) {
	if v == "" {
		return "", errors.New("must not be empty")
	}
	if rest, ok := strings.CutPrefix(v, "spiffe://"); ok {
		return "", fmt.Errorf("%q: write principals without the \"spiffe://\" prefix, e.g. %q", v, rest)
	}
	lit, wildcard, err := policyPattern(v)
	if err != nil {
		return "", err
	}
	if wildcard {
		return v, nil
	}
	parts := strings.Split(lit, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || slices.Contains(parts, "") {
		return "", fmt.Errorf("%q is not a principal; want \"<trust-domain>/ns/<namespace>/sa/<service-account>\" (e.g. \"cluster.local/ns/default/sa/frontend\") or a \"prefix*\"/\"*suffix\" pattern", v)
	}
	return v, nil
}

var policyNamespaceChars = regexp.MustCompile(`^[a-z0-9-]*$`)

func checkPolicyNamespace(v string) (string, error) {
	if v == "" {
		return "", errors.New("must not be empty")
	}
	lit, wildcard, err := policyPattern(v)
	if err != nil {
		return "", err
	}
	bad := fmt.Errorf("%q is not a namespace name (lowercase letters, digits and '-', at most 63) or a \"prefix*\"/\"*suffix\" pattern of one", v)
	if wildcard {
		if !policyNamespaceChars.MatchString(lit) || len(lit) > 63 {
			return "", bad
		}
		return v, nil
	}
	if len(validation.IsDNS1123Label(lit)) > 0 {
		return "", bad
	}
	return v, nil
}

// HTTP methods are case-sensitive tokens (RFC 9110 §9.1); the registered
// ones, and what Istio users write, are uppercase.
var policyMethod = regexp.MustCompile(`^[A-Z][A-Z0-9_-]*$`)

func checkPolicyMethod(v string) (string, error) {
	if !policyMethod.MatchString(v) {
		return "", fmt.Errorf("%q is not an HTTP method; methods are uppercase tokens such as GET or POST", v)
	}
	return v, nil
}

func checkPolicyPath(v string) (string, error) {
	if v == "" {
		return "", errors.New("must not be empty")
	}
	if strings.Contains(v, "{*}") || strings.Contains(v, "{**}") {
		return "", fmt.Errorf("%q: path templates ({*}, {**}) are not supported; use \"/prefix*\" or \"*suffix\"", v)
	}
	lit, wildcard, err := policyPattern(v)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(lit, "?#") {
		return "", fmt.Errorf("%q: paths are matched without query or fragment; remove the '?'/'#' part", v)
	}
	if !strings.HasPrefix(lit, "/") && !(wildcard && strings.HasPrefix(v, "*")) && v != "*" {
		return "", fmt.Errorf("%q is not a path; start it with '/' (e.g. \"/api/*\") or use a \"*suffix\" pattern", v)
	}
	return v, nil
}

func checkPolicyHost(v string) (string, error) {
	if v == "" {
		return "", errors.New("must not be empty")
	}
	lit, _, err := policyPattern(v)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(lit, "/?#@") {
		return "", fmt.Errorf("%q is not a host; want a hostname with an optional port, e.g. \"example.com\", \"*.example.com\" or \"example.com:8080\"", v)
	}
	return v, nil
}

func checkPolicyNonEmpty(v string) (string, error) {
	if v == "" {
		return "", errors.New("must not be empty")
	}
	return v, nil
}

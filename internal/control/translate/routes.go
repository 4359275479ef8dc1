package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

// xroute is any of the four route kinds, with its rules compiled to model
// routes once, whatever its parents.
type xroute struct {
	kind      string
	ns, name  string
	gen       int64
	created   metav1.Time
	hostnames []string
	parents   []gwv1.ParentReference

	// entries are the (rule, match) routes of the valid rules.
	entries    []routeEntry
	validRules int
	// dropped has one problem per invalid rule.
	dropped []problem
	// refs are backendRef problems (ResolvedRefs).
	refs []problem
}

func (x *xroute) ref() model.Ref { return model.Ref{Namespace: x.ns, Name: x.name} }
func (x *xroute) key() string    { return x.kind + " " + x.ns + "/" + x.name }

// usable reports whether at least one rule survived: the spec accepts a
// route as long as one of its rules can be implemented.
func (x *xroute) usable() bool { return x.validRules > 0 || len(x.dropped) == 0 }

func (x *xroute) rulesProblem() problem {
	msgs := make([]string, len(x.dropped))
	for i, d := range x.dropped {
		msgs[i] = d.msg
	}
	return problem{x.dropped[0].reason, "no rule is valid: " + strings.Join(msgs, "\n")}
}

// routeEntry is one model route with what precedence needs to know.
type routeEntry struct {
	route   model.Route
	created metav1.Time
	// gRPC matches rank by the lengths of service and method.
	grpcSvc, grpcMethod int
	// host is the hostname the entry serves under on a listener.
	host string
	// hostRank orders entries from more specific hostnames first when a
	// virtual host falls through to wildcard routes.
	hostRank int
}

// translateRoutes attaches every route to its parents (Gateway listeners,
// or Services for GAMMA mesh routes), writes route status, and builds the
// listeners' virtual hosts and the waypoints' mesh route tables.
func (t *translator) translateRoutes() {
	s := &routeState{t: t, gateways: map[model.Ref]*gatewayRoutes{}, mesh: map[meshKey][]routeEntry{}}
	routes := t.compileRoutes()
	// Oldest first, then namespace/name: the order the spec uses to settle
	// precedence and conflicts between routes.
	slices.SortStableFunc(routes, func(a, b *xroute) int {
		return cmp.Or(a.created.Time.Compare(b.created.Time), cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name), cmp.Compare(a.kind, b.kind))
	})
	for _, x := range routes {
		s.attach(x)
	}
	s.finish()
}

func (t *translator) compileRoutes() []*xroute {
	var out []*xroute
	meta := func(kind string, m metav1.ObjectMeta, o metav1.Object, hostnames []gwv1.Hostname, parents []gwv1.ParentReference) *xroute {
		x := &xroute{kind: kind, ns: m.Namespace, name: m.Name, gen: resources.Generation(o), created: m.CreationTimestamp, parents: parents}
		for _, h := range hostnames {
			x.hostnames = append(x.hostnames, string(h))
		}
		return x
	}
	for _, r := range t.res.HTTPRoutes {
		x := meta(KindHTTPRoute, r.ObjectMeta, r, r.Spec.Hostnames, r.Spec.ParentRefs)
		t.compileHTTPRules(x, r.Spec.Rules)
		out = append(out, x)
	}
	for _, r := range t.res.GRPCRoutes {
		x := meta(KindGRPCRoute, r.ObjectMeta, r, r.Spec.Hostnames, r.Spec.ParentRefs)
		t.compileGRPCRules(x, r.Spec.Rules)
		out = append(out, x)
	}
	for _, r := range t.res.TLSRoutes {
		x := meta(KindTLSRoute, r.ObjectMeta, r, r.Spec.Hostnames, r.Spec.ParentRefs)
		rules := make([]l4Rule, len(r.Spec.Rules))
		for i, rule := range r.Spec.Rules {
			rules[i] = l4Rule{rule.Name, rule.BackendRefs}
		}
		t.compileL4Rules(x, rules)
		out = append(out, x)
	}
	for _, r := range t.res.TCPRoutes {
		x := meta(KindTCPRoute, r.ObjectMeta, r, nil, r.Spec.ParentRefs)
		rules := make([]l4Rule, len(r.Spec.Rules))
		for i, rule := range r.Spec.Rules {
			rules[i] = l4Rule{rule.Name, rule.BackendRefs}
		}
		t.compileL4Rules(x, rules)
		out = append(out, x)
	}
	return out
}

func ruleName(n *gwv1.SectionName) string { return string(deref(n, "")) }

// endRule files the current rule as valid or dropped.
func (x *xroute) endRule(rc *ruleCompiler, i int, name string, entries []routeEntry) {
	if len(rc.invalid) == 0 {
		x.validRules++
		x.entries = append(x.entries, entries...)
		return
	}
	label := fmt.Sprintf("Dropped Rule %d", i)
	if name != "" {
		label += fmt.Sprintf(" (%s)", name)
	}
	msgs := make([]string, len(rc.invalid))
	for j, p := range rc.invalid {
		msgs[j] = p.msg
	}
	x.dropped = append(x.dropped, problem{rc.invalid[0].reason, label + ": " + strings.Join(msgs, "; ")})
	rc.invalid = nil
}

func (t *translator) compileHTTPRules(x *xroute, rules []gwv1.HTTPRouteRule) {
	if len(rules) == 0 {
		rules = []gwv1.HTTPRouteRule{{}} // the CRD's default: match every request
	}
	rc := &ruleCompiler{t: t, route: x}
	for i, rule := range rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		name := ruleName(rule.Name)
		filters := rc.httpFilters(field+".filters", rule.Filters)
		var backends []model.Backend
		for j, br := range rule.BackendRefs {
			bf := fmt.Sprintf("%s.backendRefs[%d]", field, j)
			b := rc.backend(bf, br.BackendObjectReference, br.Weight)
			b.Filters = rc.httpFilters(bf+".filters", br.Filters)
			backends = append(backends, b)
		}
		if len(backends) > 0 && slices.ContainsFunc(filters, func(f model.Filter) bool { return f.RequestRedirect != nil }) {
			rc.fail(reasonIncompatibleFilters, "%s: a RequestRedirect filter must not be used together with backendRefs", field)
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		if usesPrefixReplace(rule) {
			if len(matches) != 1 || matches[0].Path != nil && deref(matches[0].Path.Type, gwv1.PathMatchPathPrefix) != gwv1.PathMatchPathPrefix {
				rc.fail(reasonUnsupportedValue, "%s: ReplacePrefixMatch needs exactly one match, of type PathPrefix", field)
			}
		}
		var timeouts model.Timeouts
		if to := rule.Timeouts; to != nil {
			var err error
			if to.Request != nil {
				if timeouts.Request, err = parseGatewayDuration(*to.Request); err != nil {
					rc.fail(reasonUnsupportedValue, "%s.timeouts.request: %v", field, err)
				}
			}
			if to.BackendRequest != nil {
				if timeouts.BackendRequest, err = parseGatewayDuration(*to.BackendRequest); err != nil {
					rc.fail(reasonUnsupportedValue, "%s.timeouts.backendRequest: %v", field, err)
				}
			}
			if timeouts.Request != 0 && timeouts.BackendRequest > timeouts.Request {
				rc.fail(reasonUnsupportedValue, "%s.timeouts: backendRequest (%s) must not be longer than request (%s)", field, timeouts.BackendRequest, timeouts.Request)
			}
		}
		var retry *model.Retry
		if r := rule.Retry; r != nil {
			retry = &model.Retry{Attempts: deref(r.Attempts, 0)}
			for _, c := range r.Codes {
				if c < 400 || c > 599 {
					rc.fail(reasonUnsupportedValue, "%s.retry.codes: %d is not retriable; use 400-599", field, c)
				}
				retry.Codes = append(retry.Codes, int(c))
			}
			if retry.Attempts < 0 {
				rc.fail(reasonUnsupportedValue, "%s.retry.attempts: %d is negative", field, retry.Attempts)
			}
			if r.Backoff != nil {
				var err error
				if retry.Backoff, err = parseGatewayDuration(*r.Backoff); err != nil {
					rc.fail(reasonUnsupportedValue, "%s.retry.backoff: %v", field, err)
				}
			}
		}
		var entries []routeEntry
		for mi, m := range matches {
			mm := rc.httpMatch(fmt.Sprintf("%s.matches[%d]", field, mi), m)
			entries = append(entries, routeEntry{created: x.created, route: model.Route{
				Source:   model.RouteSource{Kind: x.kind, Ref: x.ref(), Rule: i, RuleName: name, Match: mi},
				Match:    mm,
				Filters:  filters,
				Backends: backends,
				Timeouts: timeouts,
				Retry:    retry,
			}})
		}
		x.endRule(rc, i, name, entries)
	}
	x.refs = rc.refs
}

func usesPrefixReplace(rule gwv1.HTTPRouteRule) bool {
	uses := func(fs []gwv1.HTTPRouteFilter) bool {
		for _, f := range fs {
			if f.RequestRedirect != nil && f.RequestRedirect.Path != nil && f.RequestRedirect.Path.Type == gwv1.PrefixMatchHTTPPathModifier ||
				f.URLRewrite != nil && f.URLRewrite.Path != nil && f.URLRewrite.Path.Type == gwv1.PrefixMatchHTTPPathModifier {
				return true
			}
		}
		return false
	}
	if uses(rule.Filters) {
		return true
	}
	for _, b := range rule.BackendRefs {
		if uses(b.Filters) {
			return true
		}
	}
	return false
}

func (t *translator) compileGRPCRules(x *xroute, rules []gwv1.GRPCRouteRule) {
	rc := &ruleCompiler{t: t, route: x}
	for i, rule := range rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		name := ruleName(rule.Name)
		filters := rc.grpcFilters(field+".filters", rule.Filters)
		var backends []model.Backend
		for j, br := range rule.BackendRefs {
			bf := fmt.Sprintf("%s.backendRefs[%d]", field, j)
			b := rc.backend(bf, br.BackendObjectReference, br.Weight)
			b.Filters = rc.grpcFilters(bf+".filters", br.Filters)
			backends = append(backends, b)
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.GRPCRouteMatch{{}} // no matches: every gRPC request
		}
		var entries []routeEntry
		for mi, m := range matches {
			mm, svcLen, methodLen := rc.grpcMatch(fmt.Sprintf("%s.matches[%d]", field, mi), m)
			entries = append(entries, routeEntry{created: x.created, grpcSvc: svcLen, grpcMethod: methodLen, route: model.Route{
				Source:   model.RouteSource{Kind: x.kind, Ref: x.ref(), Rule: i, RuleName: name, Match: mi},
				Match:    mm,
				Filters:  filters,
				Backends: backends,
			}})
		}
		x.endRule(rc, i, name, entries)
	}
	x.refs = rc.refs
}

// l4Rule is the common shape of TLSRoute and TCPRoute rules.
type l4Rule struct {
	name     *gwv1.SectionName
	backends []gwv1.BackendRef
}

func (t *translator) compileL4Rules(x *xroute, rules []l4Rule) {
	rc := &ruleCompiler{t: t, route: x}
	if len(rules) == 0 {
		x.dropped = append(x.dropped, problem{reasonUnsupportedValue, "spec.rules: at least one rule is required"})
		return
	}
	for i, rule := range rules {
		name := ruleName(rule.name)
		var backends []model.Backend
		for j, br := range rule.backends {
			backends = append(backends, rc.backend(fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), br.BackendObjectReference, br.Weight))
		}
		x.endRule(rc, i, name, []routeEntry{{created: x.created, route: model.Route{
			Source:   model.RouteSource{Kind: x.kind, Ref: x.ref(), Rule: i, RuleName: name},
			Backends: backends,
		}}})
	}
	x.refs = rc.refs
}

// routeState carries attachments while routes are processed.
type routeState struct {
	t        *translator
	gateways map[model.Ref]*gatewayRoutes
	mesh     map[meshKey][]routeEntry
}

type meshKey struct {
	gateway, service model.Ref
	port             int32
}

// gatewayRoutes is an accepted Gateway's listeners with what attached.
type gatewayRoutes struct {
	gw        *gwv1.Gateway
	listeners []*listenerRoutes
}

type listenerRoutes struct {
	index int
	spec  gwv1.Listener
	kinds []string
	// model is nil when the listener is not programmed: routes may attach
	// (and count) but nothing is served.
	model    *model.Listener
	attached map[string]bool
	entries  []routeEntry
	// claims remember which kind serves which hostname, because HTTPRoutes
	// and GRPCRoutes must not share a hostname on a listener.
	claims []hostClaim
}

type hostClaim struct {
	host, kind string
	route      model.Ref
}

func (s *routeState) gatewayRoutes(gw *gwv1.Gateway, mg *model.Gateway) *gatewayRoutes {
	if g, ok := s.gateways[mg.Ref]; ok {
		return g
	}
	g := &gatewayRoutes{gw: gw}
	st := s.t.obj(gatewayStatusRef(gw.Namespace, gw.Name))
	named := map[string]bool{}
	for i, l := range gw.Spec.Listeners {
		lr := &listenerRoutes{index: i, spec: l, attached: map[string]bool{}}
		if i < len(st.Listeners) {
			lr.kinds = st.Listeners[i].SupportedKinds
		}
		// Only the first listener of a name can be programmed.
		if !named[string(l.Name)] {
			named[string(l.Name)] = true
			for j := range mg.Listeners {
				if mg.Listeners[j].Name == string(l.Name) {
					lr.model = &mg.Listeners[j]
				}
			}
		}
		g.listeners = append(g.listeners, lr)
	}
	s.gateways[mg.Ref] = g
	return g
}

func parentStatusRef(p gwv1.ParentReference, routeNS string) status.ParentRef {
	r := status.ParentRef{
		Group:     string(deref(p.Group, gwGroup)),
		Kind:      string(deref(p.Kind, "Gateway")),
		Namespace: string(deref(p.Namespace, gwv1.Namespace(routeNS))),
		Name:      string(p.Name),
		Port:      deref(p.Port, 0),
	}
	r.SectionName = string(deref(p.SectionName, ""))
	return r
}

// attach resolves every parentRef of a route and writes its status.
func (s *routeState) attach(x *xroute) {
	var parents []status.Parent
	for _, p := range x.parents {
		pr := parentStatusRef(p, x.ns)
		var prob problem
		var ok, report bool
		switch {
		case pr.Group == gwGroup && pr.Kind == "Gateway":
			prob, ok, report = s.attachGateway(x, p, pr)
		case pr.Group == "" && pr.Kind == "Service":
			prob, ok = s.attachService(x, pr)
			report = true
		default:
			prob, report = problem{reasonUnsupportedValue, fmt.Sprintf("parentRef %s %s: only Gateways and Services (GAMMA) can be parents",
				groupKind(pr.Group, pr.Kind), pr.Name)}, true
		}
		if !report {
			continue // someone else's Gateway: its controller reports
		}
		parents = append(parents, s.parentStatus(x, pr, prob, ok))
	}
	if len(parents) == 0 {
		return
	}
	o := s.t.obj(status.ObjectRef{Group: gwGroup, Kind: x.kind, Namespace: x.ns, Name: x.name})
	o.Parents = append(o.Parents, parents...)
}

func (s *routeState) parentStatus(x *xroute, pr status.ParentRef, prob problem, ok bool) status.Parent {
	cond := func(typ, st, reason, msg string) status.Condition {
		return status.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: x.gen}
	}
	p := status.Parent{ParentRef: pr, ControllerName: ControllerName}
	if ok {
		p.Conditions = append(p.Conditions, cond("Accepted", status.True, string(gwv1.RouteReasonAccepted), ""))
	} else {
		p.Conditions = append(p.Conditions, cond("Accepted", status.False, prob.reason, prob.msg))
	}
	if len(x.refs) == 0 {
		p.Conditions = append(p.Conditions, cond("ResolvedRefs", status.True, string(gwv1.RouteReasonResolvedRefs), ""))
	} else {
		msgs := make([]string, len(x.refs))
		for i, r := range x.refs {
			msgs[i] = r.msg
		}
		p.Conditions = append(p.Conditions, cond("ResolvedRefs", status.False, x.refs[0].reason, strings.Join(msgs, "\n")))
	}
	if ok && len(x.dropped) > 0 {
		msgs := make([]string, len(x.dropped))
		for i, d := range x.dropped {
			msgs[i] = d.msg
		}
		p.Conditions = append(p.Conditions, cond(string(gwv1.RouteConditionPartiallyInvalid), status.True, x.dropped[0].reason, strings.Join(msgs, "\n")))
	}
	return p
}

// Why a listener refused a route, from the least to the most specific; the
// parent reports the most specific refusal among its listeners.
const (
	refusedNone = iota
	refusedKind
	refusedNamespace
	refusedHostname
	refusedConflict
)

// attachGateway attaches a route to the matching listeners of a Gateway.
// report is false for Gateways of other controllers.
func (s *routeState) attachGateway(x *xroute, p gwv1.ParentReference, pr status.ParentRef) (prob problem, ok, report bool) {
	notFound := string(gwv1.RouteReasonNoMatchingParent)
	gw := s.t.res.Gateway(pr.Namespace, pr.Name)
	if gw == nil {
		return problem{notFound, fmt.Sprintf("Gateway %s/%s not found", pr.Namespace, pr.Name)}, false, true
	}
	if _, ours, _ := s.t.gatewayClass(gw); !ours {
		return problem{}, false, false
	}
	mg := s.t.gateways[model.Ref{Namespace: gw.Namespace, Name: gw.Name}]
	if mg == nil {
		return problem{notFound, fmt.Sprintf("Gateway %s/%s is not accepted; see its status", gw.Namespace, gw.Name)}, false, true
	}
	g := s.gatewayRoutes(gw, mg)
	var candidates []*listenerRoutes
	for _, l := range g.listeners {
		if p.SectionName != nil && *p.SectionName != l.spec.Name || p.Port != nil && *p.Port != l.spec.Port {
			continue
		}
		candidates = append(candidates, l)
	}
	if len(candidates) == 0 {
		var want []string
		if p.SectionName != nil {
			want = append(want, fmt.Sprintf("named %q", *p.SectionName))
		}
		if p.Port != nil {
			want = append(want, fmt.Sprintf("on port %d", *p.Port))
		}
		return problem{notFound, fmt.Sprintf("Gateway %s/%s has no listener %s", gw.Namespace, gw.Name, strings.Join(want, " and "))}, false, true
	}
	type match struct {
		l     *listenerRoutes
		hosts []string
	}
	var matched []match
	refused, why, anyTLS := refusedNone, "", false
	refuse := func(level int, format string, args ...any) {
		if level > refused {
			refused, why = level, fmt.Sprintf(format, args...)
		}
	}
	for _, l := range candidates {
		anyTLS = anyTLS || l.spec.Protocol == gwv1.TLSProtocolType
		lh := string(deref(l.spec.Hostname, ""))
		if !slices.Contains(l.kinds, x.kind) {
			refuse(refusedKind, "listener %q does not allow %s (allowed kinds: %s)", l.spec.Name, x.kind, strings.Join(l.kinds, ", "))
			continue
		}
		if !s.t.routeNamespaceAllowed(l.spec.AllowedRoutes, gw.Namespace, x.ns) {
			refuse(refusedNamespace, "listener %q does not allow routes from namespace %q (allowedRoutes.namespaces)", l.spec.Name, x.ns)
			continue
		}
		var hosts []string
		if x.kind == KindTCPRoute {
			hosts = routeHosts(lh, nil)
		} else {
			hosts = routeHosts(lh, x.hostnames)
		}
		if len(hosts) == 0 {
			refuse(refusedHostname, "no hostname of the route (%s) matches listener %q hostname %q", strings.Join(x.hostnames, ", "), l.spec.Name, lh)
			continue
		}
		if c := l.conflict(x, hosts); c != "" {
			refuse(refusedConflict, "%s", c)
			continue
		}
		matched = append(matched, match{l, hosts})
	}
	if len(matched) == 0 {
		switch {
		case x.kind == KindTLSRoute && !anyTLS:
			return problem{reasonUnsupportedValue, fmt.Sprintf("TLSRoutes attach only to listeners of protocol TLS; %s", why)}, false, true
		case refused == refusedHostname:
			return problem{string(gwv1.RouteReasonNoMatchingListenerHostname), why}, false, true
		}
		return problem{string(gwv1.RouteReasonNotAllowedByListeners), why}, false, true
	}
	if !x.usable() {
		return x.rulesProblem(), false, true
	}
	for _, m := range matched {
		m.l.attached[x.key()] = true
		if x.kind == KindHTTPRoute || x.kind == KindGRPCRoute {
			for _, h := range m.hosts {
				m.l.claims = append(m.l.claims, hostClaim{host: h, kind: x.kind, route: x.ref()})
			}
		}
		if m.l.model == nil {
			continue
		}
		for _, h := range m.hosts {
			for _, e := range x.entries {
				e.host = h
				m.l.entries = append(m.l.entries, e)
			}
		}
	}
	return problem{}, true, true
}

// conflict reports why a route cannot share this listener with an
// HTTPRoute/GRPCRoute of the other kind that attached earlier (the older
// one wins, as the GRPCRoute spec demands).
func (l *listenerRoutes) conflict(x *xroute, hosts []string) string {
	if x.kind != KindHTTPRoute && x.kind != KindGRPCRoute {
		return ""
	}
	for _, c := range l.claims {
		if c.kind == x.kind {
			continue
		}
		for _, h := range hosts {
			if _, ok := intersectHost(c.host, h); ok {
				return fmt.Sprintf("hostname %q on listener %q is already served by %s %s; HTTPRoutes and GRPCRoutes cannot share hostnames on one listener (the older route wins)",
					h, l.spec.Name, c.kind, c.route)
			}
		}
	}
	return ""
}

// attachService attaches a GAMMA route to the waypoint of its parent
// Service. Route hostnames do not apply to Service parents: the Service
// itself is the destination.
func (s *routeState) attachService(x *xroute, pr status.ParentRef) (problem, bool) {
	notFound := string(gwv1.RouteReasonNoMatchingParent)
	sref := model.Ref{Namespace: pr.Namespace, Name: pr.Name}
	if pr.Namespace != x.ns {
		return problem{reasonUnsupportedValue, fmt.Sprintf("parentRef Service %s is in another namespace: consumer routes are not supported yet; put the route in namespace %q",
			sref, pr.Namespace)}, false
	}
	if s.t.res.Service(sref.Namespace, sref.Name) == nil {
		return problem{notFound, fmt.Sprintf("Service %s not found", sref)}, false
	}
	ms := s.t.services[sref]
	if ms == nil {
		return problem{notFound, fmt.Sprintf("Service %s is not accepted; see its status", sref)}, false
	}
	port := pr.Port
	if pr.SectionName != "" {
		var named int32
		for _, sp := range ms.Ports {
			if sp.Name == pr.SectionName {
				named = sp.Port
			}
		}
		switch {
		case named == 0:
			return problem{notFound, fmt.Sprintf("Service %s has no port named %q", sref, pr.SectionName)}, false
		case port != 0 && port != named:
			return problem{notFound, fmt.Sprintf("Service %s port %q is %d, not %d", sref, pr.SectionName, named, port)}, false
		}
		port = named
	} else if port != 0 && !slices.ContainsFunc(ms.Ports, func(sp model.ServicePort) bool { return sp.Port == port }) {
		return problem{notFound, fmt.Sprintf("Service %s has no port %d", sref, port)}, false
	}
	if ms.Waypoint == nil {
		return problem{notFound, fmt.Sprintf("Service %s has no waypoint, so no proxy can apply this route to its traffic; label the Service (or its namespace) with %s=<waypoint Gateway name>",
			sref, LabelUseWaypoint)}, false
	}
	wp := s.t.gateways[ms.Waypoint.Gateway]
	if wp == nil || wp.Class != model.ClassWaypoint {
		return problem{notFound, fmt.Sprintf("Service %s is bound to %s, which is not an accepted waypoint", sref, ms.Waypoint.Gateway)}, false
	}
	if !x.usable() {
		return x.rulesProblem(), false
	}
	k := meshKey{gateway: wp.Ref, service: sref, port: port}
	s.mesh[k] = append(s.mesh[k], x.entries...)
	return problem{}, true
}

// finish counts attached routes and builds the route tables.
func (s *routeState) finish() {
	for ref, g := range s.gateways {
		st := s.t.obj(gatewayStatusRef(ref.Namespace, ref.Name))
		for _, l := range g.listeners {
			if l.index < len(st.Listeners) {
				st.Listeners[l.index].AttachedRoutes = int32(len(l.attached))
			}
			if l.model != nil {
				l.model.VirtualHosts = virtualHosts(l.entries)
			}
		}
	}
	byGateway := map[model.Ref][]meshKey{}
	for k := range s.mesh {
		byGateway[k.gateway] = append(byGateway[k.gateway], k)
	}
	for gwRef, keys := range byGateway {
		slices.SortFunc(keys, func(a, b meshKey) int {
			return cmp.Or(compareRef(a.service, b.service), cmp.Compare(a.port, b.port))
		})
		var tables []model.ServiceRoutes
		for _, k := range keys {
			entries := slices.Clone(s.mesh[k])
			if k.port != 0 {
				// Routes for every port also apply to this port.
				entries = append(entries, s.mesh[meshKey{gateway: k.gateway, service: k.service}]...)
			}
			sortEntries(entries)
			tables = append(tables, model.ServiceRoutes{Service: k.service, Port: k.port, Routes: routesOf(entries)})
		}
		s.t.gateways[gwRef].MeshRoutes = tables
	}
}

func routesOf(entries []routeEntry) []model.Route {
	out := make([]model.Route, len(entries))
	for i := range entries {
		out[i] = entries[i].route
	}
	return out
}

// virtualHosts groups a listener's entries by hostname. A request is
// matched against the first virtual host whose hostname matches it, so each
// virtual host also carries, after its own routes, the routes of the less
// specific hostnames that cover it: the spec ranks routes by hostname
// specificity first, but a request for foo.example.com that no
// foo.example.com rule matches must still reach the *.example.com routes.
func virtualHosts(entries []routeEntry) []model.VirtualHost {
	if len(entries) == 0 {
		return nil
	}
	byHost := map[string][]routeEntry{}
	var hosts []string
	for _, e := range entries {
		if _, ok := byHost[e.host]; !ok {
			hosts = append(hosts, e.host)
		}
		byHost[e.host] = append(byHost[e.host], e)
	}
	slices.SortFunc(hosts, compareHosts)
	out := make([]model.VirtualHost, 0, len(hosts))
	for i, h := range hosts {
		var vh []routeEntry
		for j := i; j < len(hosts); j++ {
			if j != i && !hostCovers(hosts[j], h) {
				continue
			}
			for _, e := range byHost[hosts[j]] {
				e.hostRank = j
				vh = append(vh, e)
			}
		}
		sortEntries(vh)
		out = append(out, model.VirtualHost{Hostname: h, Routes: routesOf(vh)})
	}
	return out
}

package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	authorizationv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
)

// compiled is one policy ready for matching. Its rules follow ztunnel's
// shape: the policy matches when ANY rule matches; a rule matches when ALL
// its clauses match; a clause matches when ANY of its matches does.
type compiled struct {
	ref   Ref
	rules []rule
}

type rule struct {
	// never/always short-circuit rules that cannot be evaluated at L4:
	// an invalid or HTTP-dependent rule in ALLOW never matches; an invalid
	// rule in DENY/AUDIT always matches (fail closed).
	never, always bool
	clauses       [][]match
}

// match is one source, operation or `when` entry: every non-empty
// positive list must have a hit and no negative list may have one.
type match struct {
	principals, notPrincipals []strMatch
	namespaces, notNamespaces []strMatch
	srcIPs, notSrcIPs         []netip.Prefix
	dstIPs, notDstIPs         []netip.Prefix
	ports, notPorts           []uint16
	// HTTP attributes, compiled for waypoints only (NewWaypoint).
	methods, notMethods []strMatch
	paths, notPaths     []strMatch
	hosts, notHosts     []strMatch
	header              string // canonical name of a request.headers[...] condition
	headerValues        []strMatch
	notHeaderValues     []strMatch
	sni, notSNI         []strMatch
}

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strAny
)

// strMatch is an Istio string pattern: exact, "prefix*", "*suffix" or "*".
type strMatch struct {
	kind strKind
	lit  string
}

func (m strMatch) matches(s string) bool {
	switch m.kind {
	case strExact:
		return s == m.lit
	case strPrefix:
		return strings.HasPrefix(s, m.lit)
	case strSuffix:
		return strings.HasSuffix(s, m.lit)
	}
	return true
}

func (p *compiled) matches(c *Conn, src *identity) bool {
	for i := range p.rules {
		if p.rules[i].matches(c, src) {
			return true
		}
	}
	return false
}

func (r *rule) matches(c *Conn, src *identity) bool {
	if r.never {
		return false
	}
	if r.always {
		return true
	}
	for _, clause := range r.clauses {
		hit := false
		for i := range clause {
			if clause[i].matches(c, src) {
				hit = true
				break
			}
		}
		if !hit {
			return false
		}
	}
	return true
}

func (m *match) matches(c *Conn, src *identity) bool {
	return strings2(m.principals, m.notPrincipals, src.present, src.principal) &&
		strings2(m.namespaces, m.notNamespaces, src.namespace != "", src.namespace) &&
		prefixes2(m.srcIPs, m.notSrcIPs, c.SrcIP) &&
		prefixes2(m.dstIPs, m.notDstIPs, c.DstIP) &&
		ports2(m.ports, m.notPorts, c.DstPort) &&
		m.matchesHTTP(c.HTTP)
}

// matchesHTTP evaluates the HTTP attributes. A match without any always
// holds; with some, a connection without HTTP never has them (positive
// lists fail, negative ones pass).
func (m *match) matchesHTTP(h *HTTP) bool {
	if h == nil {
		h = &HTTP{}
	}
	present := h.Method != ""
	if !strings2(m.methods, m.notMethods, present, h.Method) ||
		!strings2(m.paths, m.notPaths, present, h.Path) ||
		!hosts2(m.hosts, m.notHosts, present, h.Host) ||
		!strings2(m.sni, m.notSNI, h.SNI != "", h.SNI) {
		return false
	}
	if m.header == "" {
		return true
	}
	vs, ok := h.Header[m.header]
	// Several field lines are one comma-separated value (RFC 9110 §5.3),
	// as Envoy's header matcher sees them.
	return strings2(m.headerValues, m.notHeaderValues, ok, strings.Join(vs, ","))
}

// hosts2 matches a Host header case-insensitively, with or without its
// port, as Istio's hosts do ("example.com" matches "example.com:8080").
func hosts2(pos, neg []strMatch, present bool, host string) bool {
	host = strings.ToLower(host)
	bare := host
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		bare = host[:i]
	}
	hit := func(ms []strMatch) bool { return anyStr(ms, host) || anyStr(ms, bare) }
	if len(pos) > 0 && (!present || !hit(pos)) {
		return false
	}
	return !present || !hit(neg)
}

// strings2 evaluates a positive/negative pattern pair. A connection
// without the attribute (plaintext: no principal, no namespace) hits no
// pattern, so it fails positive lists and passes negative ones — as in
// ztunnel and Envoy's RBAC.
func strings2(pos, neg []strMatch, present bool, v string) bool {
	if len(pos) > 0 {
		if !present || !anyStr(pos, v) {
			return false
		}
	}
	return !present || !anyStr(neg, v)
}

func anyStr(ms []strMatch, v string) bool {
	for _, m := range ms {
		if m.matches(v) {
			return true
		}
	}
	return false
}

func prefixes2(pos, neg []netip.Prefix, a netip.Addr) bool {
	// A v4-mapped v6 address (from a dual-stack socket) matches v4 blocks.
	a = a.Unmap()
	if len(pos) > 0 && !anyPrefix(pos, a) {
		return false
	}
	return !anyPrefix(neg, a)
}

func anyPrefix(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func ports2(pos, neg []uint16, port uint16) bool {
	if len(pos) > 0 && !slices.Contains(pos, port) {
		return false
	}
	return !slices.Contains(neg, port)
}

// l4Keys are the `when` keys a node proxy can evaluate (ztunnel's set).
var l4Keys = map[string]bool{
	"source.ip":        true,
	"source.namespace": true,
	"source.principal": true,
	"destination.ip":   true,
	"destination.port": true,
}

// New builds an Engine from the Authorization resources a node proxy
// received. It never fails: what it cannot take as written is enforced
// fail-closed and listed by Problems —
//   - a rule marked invalid, or one with a malformed value, never matches
//     in ALLOW and always matches in DENY and AUDIT;
//   - an unknown action is enforced as DENY (the translator does the same
//     for CUSTOM and misspelt actions);
//   - a policy with an unknown scope, or with SCOPE_TARGETS (enforced by
//     waypoints, not node proxies), is skipped.
//
// HTTP attributes (methods, paths, hosts, request.* and other non-L4
// `when` keys) make a rule never match in ALLOW; in DENY and AUDIT they
// are ignored, so the rule matches more broadly than written.
func New(policies []*authorizationv1.Authorization) *Engine { return newEngine(policies, nil, false) }

// NewWaypoint builds the engine of waypoint gateway for HTTP requests:
// the SCOPE_TARGETS policies that target the waypoint itself (every
// request through it) or a Service (requests to that service:
// Conn.DstNamespace/DstName name the service), with HTTP attributes
// evaluated (Conn.HTTP). Other scopes are node proxies' and are skipped.
// Invalid values are enforced fail-closed as in New.
func NewWaypoint(policies []*authorizationv1.Authorization, gateway Ref) *Engine {
	return newEngine(policies, &gateway, true)
}

// NewWaypointTCP is NewWaypoint for the TCP streams a waypoint passes
// through: HTTP attributes are handled as at a node proxy (an ALLOW rule
// using them never matches, a DENY rule matches ignoring them), as
// Istio's waypoint does for TCP.
func NewWaypointTCP(policies []*authorizationv1.Authorization, gateway Ref) *Engine {
	return newEngine(policies, &gateway, false)
}

// newEngine is New (waypoint nil), NewWaypoint or NewWaypointTCP.
func newEngine(policies []*authorizationv1.Authorization, waypoint *Ref, l7 bool) *Engine {
	e := &Engine{mesh: &policySet{}, namespace: map[string]*policySet{}, workload: map[workloadKey]*policySet{}}
	type entry struct {
		p      *compiled
		action authorizationv1.Action
	}
	var mesh []entry
	byNS := map[string][]entry{}
	byWL := map[workloadKey][]entry{}

	for _, a := range policies {
		if a == nil {
			continue
		}
		ref := Ref{Namespace: a.GetNamespace(), Name: a.GetName()}
		action := a.GetAction()
		switch action {
		case authorizationv1.Action_ACTION_ALLOW, authorizationv1.Action_ACTION_DENY, authorizationv1.Action_ACTION_AUDIT:
		default:
			e.problems = append(e.problems, fmt.Errorf("policy: Authorization %s: action %v is not ALLOW, DENY or AUDIT; enforced as DENY", ref, action))
			action = authorizationv1.Action_ACTION_DENY
		}
		var scopeWorkloads []workloadKey
		// gatewayWide: a waypoint policy targeting the waypoint itself.
		gatewayWide := false
		switch a.GetScope() {
		case authorizationv1.Scope_SCOPE_MESH, authorizationv1.Scope_SCOPE_NAMESPACE, authorizationv1.Scope_SCOPE_WORKLOADS:
			if waypoint != nil {
				continue // enforced by node proxies
			}
		case authorizationv1.Scope_SCOPE_TARGETS:
			if waypoint == nil {
				continue // enforced by the waypoint; a node proxy never sees it normally
			}
		default:
			e.problems = append(e.problems, fmt.Errorf("policy: Authorization %s: scope %v is not MESH, NAMESPACE, WORKLOADS or TARGETS; policy skipped", ref, a.GetScope()))
			continue
		}
		switch a.GetScope() {
		case authorizationv1.Scope_SCOPE_TARGETS:
			for _, t := range a.GetTargets() {
				switch {
				case t.GetKind() == "Gateway" && t.GetNamespace() == waypoint.Namespace && t.GetName() == waypoint.Name:
					gatewayWide = true
				case t.GetKind() == "Service":
					scopeWorkloads = append(scopeWorkloads, workloadKey{t.GetNamespace(), t.GetName()})
				}
			}
			if !gatewayWide && len(scopeWorkloads) == 0 {
				continue // another waypoint's
			}
		case authorizationv1.Scope_SCOPE_WORKLOADS:
			for _, w := range a.GetWorkloads() {
				ns, name, ok := strings.Cut(w, "/")
				if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
					e.problems = append(e.problems, fmt.Errorf("policy: Authorization %s: workloads: %q is not \"<namespace>/<name>\"; entry ignored", ref, w))
					continue
				}
				scopeWorkloads = append(scopeWorkloads, workloadKey{ns, name})
			}
		}

		c := &compiled{ref: ref}
		for i, r := range a.GetRules() {
			cr, err := compileRule(r, action, l7)
			if err != nil {
				e.problems = append(e.problems, fmt.Errorf("policy: Authorization %s: rules[%d]: %w; the rule %s", ref, i, err, failClosedEffect(action)))
			}
			c.rules = append(c.rules, cr)
		}
		e.count++
		ent := entry{c, action}
		switch {
		case gatewayWide:
			mesh = append(mesh, ent)
		case a.GetScope() == authorizationv1.Scope_SCOPE_MESH:
			mesh = append(mesh, ent)
		case a.GetScope() == authorizationv1.Scope_SCOPE_NAMESPACE:
			byNS[ref.Namespace] = append(byNS[ref.Namespace], ent)
		default: // workloads, or a waypoint's target services
			for _, k := range scopeWorkloads {
				byWL[k] = append(byWL[k], ent)
			}
		}
	}

	build := func(groups ...[]entry) *policySet {
		all := slices.Concat(groups...)
		slices.SortFunc(all, func(a, b entry) int {
			return cmp.Or(cmp.Compare(a.p.ref.Namespace, b.p.ref.Namespace), cmp.Compare(a.p.ref.Name, b.p.ref.Name))
		})
		// A policy listing one workload twice must not be evaluated twice.
		all = slices.CompactFunc(all, func(a, b entry) bool { return a.p == b.p })
		s := &policySet{}
		for _, en := range all {
			switch en.action {
			case authorizationv1.Action_ACTION_ALLOW:
				s.allow = append(s.allow, en.p)
			case authorizationv1.Action_ACTION_AUDIT:
				s.audit = append(s.audit, en.p)
			default:
				s.deny = append(s.deny, en.p)
			}
		}
		return s
	}
	e.mesh = build(mesh)
	for ns, ents := range byNS {
		e.namespace[ns] = build(mesh, ents)
	}
	for k, ents := range byWL {
		e.workload[k] = build(mesh, byNS[k.namespace], ents)
	}
	return e
}

func failClosedEffect(action authorizationv1.Action) string {
	if action == authorizationv1.Action_ACTION_ALLOW {
		return "never matches"
	}
	return "always matches"
}

// compileRule converts one rule. On a malformed value it returns the
// fail-closed rule for the action and the error. l7 compiles HTTP
// attributes (a waypoint); without it they are handled as New documents.
func compileRule(r *authorizationv1.Rule, action authorizationv1.Action, l7 bool) (rule, error) {
	allow := action == authorizationv1.Action_ACTION_ALLOW
	failClosed := rule{never: allow, always: !allow}
	if r.GetInvalid() != "" {
		// Reported by the control plane in the policy's status already.
		return failClosed, nil
	}
	var out rule
	if len(r.GetFrom()) > 0 {
		var clause []match
		for i, s := range r.GetFrom() {
			var m match
			var err error
			if m.principals, err = patterns(s.GetPrincipals()); err == nil {
				if m.notPrincipals, err = patterns(s.GetNotPrincipals()); err == nil {
					if m.namespaces, err = patterns(s.GetNamespaces()); err == nil {
						if m.notNamespaces, err = patterns(s.GetNotNamespaces()); err == nil {
							if m.srcIPs, err = protoPrefixes(s.GetIpBlocks()); err == nil {
								m.notSrcIPs, err = protoPrefixes(s.GetNotIpBlocks())
							}
						}
					}
				}
			}
			if err != nil {
				return failClosed, fmt.Errorf("from[%d]: %w", i, err)
			}
			clause = append(clause, m)
		}
		out.clauses = append(out.clauses, clause)
	}
	if len(r.GetTo()) > 0 {
		var clause []match
		for i, o := range r.GetTo() {
			if len(o.GetMethods())+len(o.GetNotMethods())+len(o.GetPaths())+len(o.GetNotPaths())+len(o.GetHosts())+len(o.GetNotHosts()) > 0 && allow && !l7 {
				return rule{never: true}, nil
			}
			var m match
			var err error
			if m.ports, err = protoPorts(o.GetPorts()); err == nil {
				m.notPorts, err = protoPorts(o.GetNotPorts())
			}
			if l7 {
				for _, f := range []struct {
					dst  *[]strMatch
					vals []string
				}{{&m.methods, o.GetMethods()}, {&m.notMethods, o.GetNotMethods()}, {&m.paths, o.GetPaths()},
					{&m.notPaths, o.GetNotPaths()}, {&m.hosts, lower(o.GetHosts())}, {&m.notHosts, lower(o.GetNotHosts())}} {
					if err == nil {
						*f.dst, err = patterns(f.vals)
					}
				}
			}
			if err != nil {
				return failClosed, fmt.Errorf("to[%d]: %w", i, err)
			}
			clause = append(clause, m)
		}
		out.clauses = append(out.clauses, clause)
	}
	for i, w := range r.GetWhen() {
		if !l4Keys[w.GetKey()] && !l7 {
			if allow {
				return rule{never: true}, nil
			}
			continue // DENY/AUDIT: match ignoring the HTTP attribute
		}
		m, err := conditionMatch(w)
		if err != nil {
			return failClosed, fmt.Errorf("when[%d] (%s): %w", i, w.GetKey(), err)
		}
		out.clauses = append(out.clauses, []match{m})
	}
	return out, nil
}

func conditionMatch(w *authorizationv1.Condition) (match, error) {
	var m match
	var err error
	switch w.GetKey() {
	case "source.ip":
		if m.srcIPs, err = stringPrefixes(w.GetValues()); err == nil {
			m.notSrcIPs, err = stringPrefixes(w.GetNotValues())
		}
	case "destination.ip":
		if m.dstIPs, err = stringPrefixes(w.GetValues()); err == nil {
			m.notDstIPs, err = stringPrefixes(w.GetNotValues())
		}
	case "source.namespace":
		if m.namespaces, err = patterns(w.GetValues()); err == nil {
			m.notNamespaces, err = patterns(w.GetNotValues())
		}
	case "source.principal":
		if m.principals, err = patterns(w.GetValues()); err == nil {
			m.notPrincipals, err = patterns(w.GetNotValues())
		}
	case "destination.port":
		if m.ports, err = stringPorts(w.GetValues()); err == nil {
			m.notPorts, err = stringPorts(w.GetNotValues())
		}
	case "remote.ip":
		// The original client: without trusted X-Forwarded-For hops
		// (Envoy's default), the source address.
		if m.srcIPs, err = stringPrefixes(w.GetValues()); err == nil {
			m.notSrcIPs, err = stringPrefixes(w.GetNotValues())
		}
	case "connection.sni":
		if m.sni, err = patterns(lower(w.GetValues())); err == nil {
			m.notSNI, err = patterns(lower(w.GetNotValues()))
		}
	default:
		name, ok := strings.CutPrefix(w.GetKey(), "request.headers[")
		name, ok2 := strings.CutSuffix(name, "]")
		if !ok || !ok2 || name == "" {
			return m, fmt.Errorf("key %q is not supported; want one of source.ip, source.namespace, source.principal, destination.ip, destination.port, remote.ip, connection.sni, request.headers[<name>]", w.GetKey())
		}
		m.header = textproto.CanonicalMIMEHeaderKey(name)
		if m.headerValues, err = patterns(w.GetValues()); err == nil {
			m.notHeaderValues, err = patterns(w.GetNotValues())
		}
	}
	return m, err
}

func lower(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = strings.ToLower(v)
	}
	return out
}

func patterns(vs []string) ([]strMatch, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	out := make([]strMatch, 0, len(vs))
	for _, v := range vs {
		m, err := parsePattern(v)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func parsePattern(v string) (strMatch, error) {
	var m strMatch
	switch {
	case v == "*":
		return strMatch{kind: strAny}, nil
	case v == "":
		return m, fmt.Errorf("empty pattern; want an exact value, \"prefix*\", \"*suffix\" or \"*\"")
	case strings.HasPrefix(v, "*"):
		m = strMatch{kind: strSuffix, lit: v[1:]}
	case strings.HasSuffix(v, "*"):
		m = strMatch{kind: strPrefix, lit: v[:len(v)-1]}
	default:
		m = strMatch{kind: strExact, lit: v}
	}
	if strings.Contains(m.lit, "*") {
		return m, fmt.Errorf("pattern %q has a '*' that is not at the start or the end; want an exact value, \"prefix*\", \"*suffix\" or \"*\"", v)
	}
	return m, nil
}

func protoPrefixes(ps []*authorizationv1.Prefix) ([]netip.Prefix, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		a, ok := netip.AddrFromSlice(p.GetAddress())
		if !ok {
			return nil, fmt.Errorf("IP block address has %d bytes; want 4 (IPv4) or 16 (IPv6)", len(p.GetAddress()))
		}
		if p.GetLength() > uint32(a.BitLen()) {
			return nil, fmt.Errorf("IP block %s/%d: length exceeds %d", a, p.GetLength(), a.BitLen())
		}
		bits := int(p.GetLength())
		// Connection addresses are unmapped before matching, so a
		// v4-mapped block must be too.
		if a.Is4In6() && bits >= 96 {
			a, bits = a.Unmap(), bits-96
		}
		out = append(out, netip.PrefixFrom(a, bits).Masked())
	}
	return out, nil
}

// stringPrefixes parses `when` IP values: a CIDR or a bare address.
func stringPrefixes(vs []string) ([]netip.Prefix, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(vs))
	for _, v := range vs {
		var p netip.Prefix
		if strings.Contains(v, "/") {
			var err error
			if p, err = netip.ParsePrefix(v); err != nil {
				return nil, fmt.Errorf("%q is not an IP address or CIDR", v)
			}
		} else {
			a, err := netip.ParseAddr(v)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not an IP address or CIDR", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func protoPorts(ps []uint32) ([]uint16, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	out := make([]uint16, 0, len(ps))
	for _, p := range ps {
		if p == 0 || p > 65535 {
			return nil, fmt.Errorf("port %d is not 1-65535", p)
		}
		out = append(out, uint16(p))
	}
	return out, nil
}

func stringPorts(vs []string) ([]uint16, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	out := make([]uint16, 0, len(vs))
	for _, v := range vs {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port number (1-65535)", v)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

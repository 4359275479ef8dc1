// Package policy is the node proxy's L4 authorization engine: it decides,
// at the destination, whether a connection may reach a workload, from the
// Authorization resources served over xDS. The semantics are Istio
// ztunnel's: DENY policies first, then, if any ALLOW policy applies to the
// workload, the connection must match one of them, else it is allowed;
// AUDIT policies never change the decision but are reported.
//
// An Engine is immutable and safe for concurrent use; the node proxy builds
// a new one on every policy update and swaps it in through an atomic
// pointer, then calls Recheck to close live connections that are no longer
// allowed. Check does not allocate.
package policy

import (
	"net/netip"
	"strings"
)

// Conn is what the engine knows about a connection at the destination.
type Conn struct {
	// SrcIdentity is the peer's SPIFFE ID from its mTLS certificate
	// ("spiffe://<td>/ns/<ns>/sa/<sa>"), or "" for plaintext.
	SrcIdentity string
	SrcIP       netip.Addr
	// DstNamespace and DstName name the destination workload; they select
	// the policies that apply.
	DstNamespace string
	DstName      string
	DstIP        netip.Addr
	DstPort      uint16
	// HTTP is the request, at a waypoint (NewWaypoint); nil at a node
	// proxy.
	HTTP *HTTP
}

// HTTP is what a waypoint's engine knows about a request.
type HTTP struct {
	Method string
	Host   string // Host header or :authority
	// Path is the normalised path without the query.
	Path string
	// Header holds the request headers under canonical keys.
	Header map[string][]string
	// SNI is the TLS server name of the downstream connection, "" for
	// plaintext.
	SNI string
}

// Ref names an AuthorizationPolicy.
type Ref struct {
	Namespace string
	Name      string
}

// String is "<namespace>/<name>", or "" for the zero Ref.
func (r Ref) String() string {
	if r == (Ref{}) {
		return ""
	}
	return r.Namespace + "/" + r.Name
}

// IsZero reports whether r names no policy.
func (r Ref) IsZero() bool { return r == Ref{} }

// Reason says why a Decision was reached.
type Reason uint8

const (
	// ReasonNoAllowPolicies: allowed, no DENY matched and no ALLOW policy
	// applies to the destination.
	ReasonNoAllowPolicies Reason = iota
	// ReasonAllowed: allowed by the ALLOW policy in Decision.Policy.
	ReasonAllowed
	// ReasonDenied: denied by the DENY policy in Decision.Policy.
	ReasonDenied
	// ReasonNoAllowMatch: denied, ALLOW policies apply but none matched.
	ReasonNoAllowMatch
)

func (r Reason) String() string {
	switch r {
	case ReasonNoAllowPolicies:
		return "no ALLOW policies apply"
	case ReasonAllowed:
		return "allowed by policy"
	case ReasonDenied:
		return "denied by policy"
	case ReasonNoAllowMatch:
		return "ALLOW policies apply but none matched"
	}
	return "unknown"
}

// Decision is the outcome of Check.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Policy is the policy that decided: the matching DENY policy
	// (ReasonDenied) or the first matching ALLOW policy (ReasonAllowed);
	// zero otherwise.
	Policy Ref
	// Audit is the first AUDIT policy that matched, whatever the outcome;
	// zero when none did.
	Audit Ref
}

// String describes the decision for logs and the HBONE 401 reason, e.g.
// "denied by policy ns/name".
func (d Decision) String() string {
	if d.Policy.IsZero() {
		return d.Reason.String()
	}
	return d.Reason.String() + " " + d.Policy.String()
}

// Engine is an immutable index of the policies by the workloads they
// apply to.
type Engine struct {
	mesh      *policySet
	namespace map[string]*policySet
	workload  map[workloadKey]*policySet
	problems  []error
	count     int
}

type workloadKey struct{ namespace, name string }

// policySet is every policy that applies to one destination, split by
// action and sorted by namespace/name so the deciding policy is stable.
type policySet struct {
	deny, allow, audit []*compiled
}

// Check decides whether conn may reach its destination workload.
func (e *Engine) Check(conn Conn) Decision {
	set := e.setFor(conn.DstNamespace, conn.DstName)
	if set == nil {
		return Decision{Allowed: true, Reason: ReasonNoAllowPolicies}
	}
	var d Decision
	src := parseIdentity(conn.SrcIdentity)
	for _, p := range set.audit {
		if p.matches(&conn, &src) {
			d.Audit = p.ref
			break
		}
	}
	for _, p := range set.deny {
		if p.matches(&conn, &src) {
			d.Reason, d.Policy = ReasonDenied, p.ref
			return d
		}
	}
	if len(set.allow) == 0 {
		d.Allowed, d.Reason = true, ReasonNoAllowPolicies
		return d
	}
	for _, p := range set.allow {
		if p.matches(&conn, &src) {
			d.Allowed, d.Reason, d.Policy = true, ReasonAllowed, p.ref
			return d
		}
	}
	d.Reason = ReasonNoAllowMatch
	return d
}

// setFor finds the policies of a destination: its own set when a
// workload-scope policy selects it, else its namespace's, else the
// mesh-wide one (each set already includes the broader ones).
func (e *Engine) setFor(namespace, name string) *policySet {
	if e == nil {
		return nil
	}
	if s, ok := e.workload[workloadKey{namespace, name}]; ok {
		return s
	}
	if s, ok := e.namespace[namespace]; ok {
		return s
	}
	return e.mesh
}

// Len is the number of policies the engine enforces.
func (e *Engine) Len() int {
	if e == nil {
		return 0
	}
	return e.count
}

// Problems lists what New could not take as written: each is enforced
// fail-closed (see New) and should be logged once per update.
func (e *Engine) Problems() []error {
	if e == nil {
		return nil
	}
	return e.problems
}

// identity is the source identity split once per Check.
type identity struct {
	present   bool
	principal string // "<td>/ns/<ns>/sa/<sa>"
	namespace string // "" when the ID is not of the Kubernetes form
}

// parseIdentity splits a SPIFFE ID without allocating. An ID that is not
// of the "<td>/ns/<ns>/sa/<sa>" form still has a principal (patterns such
// as "td/*" can match it) but no namespace, so namespace clauses never
// match it.
func parseIdentity(id string) identity {
	if id == "" {
		return identity{}
	}
	p := strings.TrimPrefix(id, "spiffe://")
	out := identity{present: true, principal: p}
	slash := strings.IndexByte(p, '/')
	if slash <= 0 {
		return out
	}
	rest, ok := strings.CutPrefix(p[slash+1:], "ns/")
	if !ok {
		return out
	}
	ns, sa, ok := strings.Cut(rest, "/sa/")
	if !ok || ns == "" || sa == "" || strings.IndexByte(ns, '/') >= 0 || strings.IndexByte(sa, '/') >= 0 {
		return out
	}
	out.namespace = ns
	return out
}

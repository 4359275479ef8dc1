package model

import "net/netip"

// PolicyScope says which workloads or proxies a policy applies to.
type PolicyScope string

const (
	// ScopeMesh: a policy in the root namespace without selector/targetRefs.
	ScopeMesh PolicyScope = "Mesh"
	// ScopeNamespace: every workload of the policy's namespace.
	ScopeNamespace PolicyScope = "Namespace"
	// ScopeWorkloads: the workloads its selector picks (in every namespace
	// when the policy lives in the root namespace).
	ScopeWorkloads PolicyScope = "Workloads"
	// ScopeTargets: the waypoint Gateways / Services in targetRefs;
	// enforced by the waypoint.
	ScopeTargets PolicyScope = "Targets"
)

// Policy is an AuthorizationPolicy resolved to its scope.
type Policy struct {
	Ref
	Action string      `json:"action"` // ALLOW, DENY, AUDIT
	Scope  PolicyScope `json:"scope"`
	// Selector is the label selector (ScopeWorkloads).
	Selector map[string]string `json:"selector,omitempty"`
	// Workloads are the workloads the selector picks right now.
	Workloads []Ref `json:"workloads,omitempty"`
	// Targets (ScopeTargets).
	Targets []PolicyTarget `json:"targets,omitempty"`
	Rules   []PolicyRule   `json:"rules,omitempty"`
	// NeedsWaypoint: some rule uses HTTP attributes (methods, paths, hosts,
	// request.* conditions) but the policy is enforced by node proxies, which
	// cannot see them. Such rules never match in ALLOW and match more
	// broadly (ignoring the HTTP attributes) in DENY.
	NeedsWaypoint bool `json:"needsWaypoint,omitempty"`
}

// PolicyTarget is a resolved targetRef.
type PolicyTarget struct {
	Kind string `json:"kind"` // Gateway or Service
	Ref
}

// PolicyRule matches when every part matches (any source, any operation,
// all conditions).
type PolicyRule struct {
	From []PolicySource    `json:"from,omitempty"`
	To   []PolicyOperation `json:"to,omitempty"`
	When []PolicyCondition `json:"when,omitempty"`
	// Invalid is set when the rule failed validation: it never matches in
	// ALLOW and always matches in DENY (fail closed), like Istio.
	Invalid string `json:"invalid,omitempty"`
}

// PolicySource matches the peer. Principals are "<td>/ns/<ns>/sa/<sa>"
// patterns: exact, "prefix*", "*suffix" or "*".
type PolicySource struct {
	Principals    []string       `json:"principals,omitempty"`
	NotPrincipals []string       `json:"notPrincipals,omitempty"`
	Namespaces    []string       `json:"namespaces,omitempty"`
	NotNamespaces []string       `json:"notNamespaces,omitempty"`
	IPBlocks      []netip.Prefix `json:"ipBlocks,omitempty"`
	NotIPBlocks   []netip.Prefix `json:"notIpBlocks,omitempty"`
}

// PolicyOperation matches the request.
type PolicyOperation struct {
	Ports      []int32  `json:"ports,omitempty"`
	NotPorts   []int32  `json:"notPorts,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	NotMethods []string `json:"notMethods,omitempty"`
	Paths      []string `json:"paths,omitempty"`
	NotPaths   []string `json:"notPaths,omitempty"`
	Hosts      []string `json:"hosts,omitempty"`
	NotHosts   []string `json:"notHosts,omitempty"`
}

// PolicyCondition is a `when` entry.
type PolicyCondition struct {
	Key       string   `json:"key"`
	Values    []string `json:"values,omitempty"`
	NotValues []string `json:"notValues,omitempty"`
}

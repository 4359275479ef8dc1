package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AuthorizationPolicy allows or denies traffic to workloads. Field names and
// semantics follow Istio's security.istio.io AuthorizationPolicy, so existing
// policies carry over: DENY policies are checked first, then, if any ALLOW
// policy applies to the workload, the request must match one of them.
//
// Scope: a policy in the mesh's root namespace without selector/targetRefs
// applies mesh-wide; elsewhere it applies to its namespace; `selector` narrows
// it to the workloads with those labels; `targetRefs` binds it to a waypoint
// Gateway or to a Service (enforced by that Service's waypoint).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=ambit,shortName=ap
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!(has(self.spec.selector) && has(self.spec.targetRefs))",message="selector and targetRefs are mutually exclusive"
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AuthorizationPolicySpec   `json:"spec,omitempty"`
	Status AuthorizationPolicyStatus `json:"status,omitempty"`
}

// AuthorizationAction is what happens when a rule matches.
// +kubebuilder:validation:Enum=ALLOW;DENY;AUDIT
type AuthorizationAction string

const (
	ActionAllow AuthorizationAction = "ALLOW"
	ActionDeny  AuthorizationAction = "DENY"
	ActionAudit AuthorizationAction = "AUDIT"
)

// AuthorizationPolicySpec is the policy itself.
type AuthorizationPolicySpec struct {
	// Selector picks the workloads (by label) the policy applies to.
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`

	// TargetRefs binds the policy to a waypoint Gateway or a Service.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	TargetRefs []PolicyTargetReference `json:"targetRefs,omitempty"`

	// Action defaults to ALLOW.
	// +optional
	Action AuthorizationAction `json:"action,omitempty"`

	// Rules: the policy matches when any rule matches. An ALLOW policy
	// without rules matches nothing; one with an empty rule matches everything.
	// +optional
	Rules []Rule `json:"rules,omitempty"`
}

// WorkloadSelector selects workloads by label.
type WorkloadSelector struct {
	// +optional
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// PolicyTargetReference names the object a policy is attached to.
type PolicyTargetReference struct {
	// Group of the target: "gateway.networking.k8s.io" for Gateway, "" for Service.
	// +optional
	Group string `json:"group,omitempty"`
	// Kind of the target: Gateway or Service.
	// +kubebuilder:validation:Enum=Gateway;Service
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace must be the policy's own namespace when set.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// Rule matches a request when all of its from, to and when parts match.
type Rule struct {
	// +optional
	From []RuleFrom `json:"from,omitempty"`
	// +optional
	To []RuleTo `json:"to,omitempty"`
	// +optional
	When []Condition `json:"when,omitempty"`
}

// RuleFrom holds a source; any of a rule's sources may match.
type RuleFrom struct {
	Source Source `json:"source"`
}

// Source describes the peer. Fields are ANDed; values inside a field are ORed.
// Principals and namespaces come from the peer's verified SPIFFE identity.
type Source struct {
	// Principals such as "cluster.local/ns/default/sa/frontend"; exact,
	// "prefix*", "*suffix" or "*".
	// +optional
	Principals []string `json:"principals,omitempty"`
	// +optional
	NotPrincipals []string `json:"notPrincipals,omitempty"`
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// +optional
	NotNamespaces []string `json:"notNamespaces,omitempty"`
	// IPBlocks are addresses or CIDRs of the peer, e.g. "10.0.0.0/8".
	// +optional
	IPBlocks []string `json:"ipBlocks,omitempty"`
	// +optional
	NotIPBlocks []string `json:"notIpBlocks,omitempty"`
}

// RuleTo holds an operation; any of a rule's operations may match.
type RuleTo struct {
	Operation Operation `json:"operation"`
}

// Operation describes the request. Ports are enforced by node proxies;
// methods, paths and hosts are HTTP attributes enforced only by waypoints.
type Operation struct {
	// +optional
	Ports []string `json:"ports,omitempty"`
	// +optional
	NotPorts []string `json:"notPorts,omitempty"`
	// +optional
	Methods []string `json:"methods,omitempty"`
	// +optional
	NotMethods []string `json:"notMethods,omitempty"`
	// +optional
	Paths []string `json:"paths,omitempty"`
	// +optional
	NotPaths []string `json:"notPaths,omitempty"`
	// +optional
	Hosts []string `json:"hosts,omitempty"`
	// +optional
	NotHosts []string `json:"notHosts,omitempty"`
}

// Condition is an additional attribute match, e.g. key "source.ip" or
// "request.headers[x-tenant]".
type Condition struct {
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
	// +optional
	Values []string `json:"values,omitempty"`
	// +optional
	NotValues []string `json:"notValues,omitempty"`
}

// AuthorizationPolicyStatus is written by the control plane.
type AuthorizationPolicyStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicies.
//
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}

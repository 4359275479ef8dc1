package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Workload is a workload that is not a pod: a process on a host or VM that
// joins the mesh. Services select Workloads by their metadata labels exactly
// like they select pods.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=ambit,shortName=wl
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Workload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WorkloadSpec   `json:"spec"`
	Status WorkloadStatus `json:"status,omitempty"`
}

// WorkloadSpec describes where a workload runs and who it is.
type WorkloadSpec struct {
	// ServiceAccount is the identity of the workload: its SPIFFE ID is
	// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>.
	// Defaults to "default".
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ServiceAccount string `json:"serviceAccount,omitempty"`

	// Addresses are the IP addresses of the workload (IPv4 and/or IPv6).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +listType=set
	Addresses []string `json:"addresses"`

	// Node is the name of the node whose node proxy serves this workload.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`

	// Ports maps named ports to port numbers, so Service targetPorts that
	// name a port resolve like they do for pods' container ports.
	// +optional
	Ports map[string]int32 `json:"ports,omitempty"`

	// Locality of the workload, for locality-aware load balancing.
	// +optional
	Locality Locality `json:"locality,omitempty"`

	// Network is the network the workload's addresses belong to; workloads
	// on other networks are reached through that network's gateway.
	// Empty means the mesh's default network.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Network string `json:"network,omitempty"`
}

// Locality is a workload's place in the failure-domain hierarchy.
type Locality struct {
	// +optional
	Region string `json:"region,omitempty"`
	// +optional
	Zone string `json:"zone,omitempty"`
	// +optional
	Subzone string `json:"subzone,omitempty"`
}

// WorkloadStatus is written by the control plane.
type WorkloadStatus struct {
	// Conditions describe whether the control plane accepted the workload.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// WorkloadList is a list of Workloads.
//
// +kubebuilder:object:root=true
type WorkloadList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Workload `json:"items"`
}

package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MeshConfig holds the settings of the whole mesh. There is at most one.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=ambit
type MeshConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MeshConfigSpec   `json:"spec,omitempty"`
	Status MeshConfigStatus `json:"status,omitempty"`
}

// MTLSMode says whether plaintext traffic is accepted by mesh workloads.
// +kubebuilder:validation:Enum=STRICT;PERMISSIVE
type MTLSMode string

const (
	// MTLSStrict refuses plaintext traffic to mesh workloads.
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive accepts both mTLS and plaintext.
	MTLSPermissive MTLSMode = "PERMISSIVE"
)

// MeshConfigSpec is the mesh-wide configuration.
type MeshConfigSpec struct {
	// TrustDomain of the mesh's SPIFFE identities. Defaults to "cluster.local".
	// +optional
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[a-z0-9._-]+$`
	TrustDomain string `json:"trustDomain,omitempty"`

	// RootNamespace is where mesh-wide policies live. Defaults to "ambit-system".
	// +optional
	// +kubebuilder:validation:MaxLength=63
	RootNamespace string `json:"rootNamespace,omitempty"`

	// MTLSMode is the default for workloads without a more specific setting.
	// Defaults to PERMISSIVE.
	// +optional
	MTLSMode MTLSMode `json:"mtlsMode,omitempty"`

	// ServiceVIPRange is the CIDR that file mode allocates Service VIPs from
	// when a Service has no spec.clusterIP. Defaults to "240.240.0.0/16".
	// +optional
	ServiceVIPRange string `json:"serviceVIPRange,omitempty"`

	// ClusterDomain is the DNS suffix of Service hostnames. Defaults to "cluster.local".
	// +optional
	ClusterDomain string `json:"clusterDomain,omitempty"`
}

// MeshConfigStatus is written by the control plane.
type MeshConfigStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MeshConfigList is a list of MeshConfigs.
//
// +kubebuilder:object:root=true
type MeshConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshConfig `json:"items"`
}

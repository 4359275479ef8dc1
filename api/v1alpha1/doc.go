// Package v1alpha1 holds the ambit.dev/v1alpha1 API: Workload,
// AuthorizationPolicy and MeshConfig.
//
// +kubebuilder:object:generate=true
// +groupName=ambit.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of these types.
var GroupVersion = schema.GroupVersion{Group: "ambit.dev", Version: "v1alpha1"}

// AddToScheme registers the ambit.dev/v1alpha1 types with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&Workload{}, &WorkloadList{},
		&AuthorizationPolicy{}, &AuthorizationPolicyList{},
		&MeshConfig{}, &MeshConfigList{},
	)
	metav1AddToGroupVersion(s)
	return nil
}

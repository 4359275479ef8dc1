// Package resources is the normalised snapshot every config source produces
// and the translator consumes: typed Kubernetes, Gateway API and ambit.dev
// objects, defaulted, deduplicated and sorted by namespace/name. The file
// source and the Kubernetes source both build a Resources, so the two modes
// cannot drift apart.
package resources

import (
	"cmp"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/api/v1alpha1"
)

// Resources is one consistent snapshot of the mesh's configuration.
// Slices are sorted by namespace, then name. Objects are shared and must not
// be modified.
type Resources struct {
	// MeshConfig is the single MeshConfig, or nil for defaults.
	MeshConfig *v1alpha1.MeshConfig

	Namespaces      []*corev1.Namespace
	Services        []*corev1.Service
	ServiceAccounts []*corev1.ServiceAccount
	Secrets         []*corev1.Secret

	Workloads             []*v1alpha1.Workload
	AuthorizationPolicies []*v1alpha1.AuthorizationPolicy

	GatewayClasses  []*gwv1.GatewayClass
	Gateways        []*gwv1.Gateway
	HTTPRoutes      []*gwv1.HTTPRoute
	GRPCRoutes      []*gwv1.GRPCRoute
	TLSRoutes       []*gwv1.TLSRoute
	TCPRoutes       []*gwv1.TCPRoute
	ReferenceGrants []*gwv1.ReferenceGrant

	// Errors are problems the source found (a file that does not parse, a
	// duplicate object). They are reported next to the translation status.
	Errors []SourceError
}

// SourceError is a problem with some input, e.g. a file that does not parse.
type SourceError struct {
	// Source is where the input came from: a file path, or "kubernetes".
	Source string `json:"source"`
	// Document is the 1-based position of the YAML document within Source,
	// or 0 when the problem is not tied to one document.
	Document int `json:"document,omitempty"`
	// Object names the object ("HTTPRoute default/web") when known.
	Object  string `json:"object,omitempty"`
	Message string `json:"message"`
}

func (e SourceError) Error() string {
	s := e.Source
	if e.Document > 0 {
		s += ": document " + strconv.Itoa(e.Document)
	}
	if e.Object != "" {
		s += ": " + e.Object
	}
	return s + ": " + e.Message
}

// Sort orders every slice by namespace/name; sources call it once after
// filling a Resources.
func (r *Resources) Sort() {
	sortObjs(r.Namespaces)
	sortObjs(r.Services)
	sortObjs(r.ServiceAccounts)
	sortObjs(r.Secrets)
	sortObjs(r.Workloads)
	sortObjs(r.AuthorizationPolicies)
	sortObjs(r.GatewayClasses)
	sortObjs(r.Gateways)
	sortObjs(r.HTTPRoutes)
	sortObjs(r.GRPCRoutes)
	sortObjs(r.TLSRoutes)
	sortObjs(r.TCPRoutes)
	sortObjs(r.ReferenceGrants)
	slices.SortFunc(r.Errors, func(a, b SourceError) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Document, b.Document), cmp.Compare(a.Object, b.Object), cmp.Compare(a.Message, b.Message))
	})
}

type object interface {
	GetNamespace() string
	GetName() string
}

func sortObjs[T object](s []T) {
	slices.SortFunc(s, func(a, b T) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
}

// Namespace returns the named Namespace, or nil.
func (r *Resources) Namespace(name string) *corev1.Namespace {
	return find(r.Namespaces, "", name)
}

// Service returns the named Service, or nil.
func (r *Resources) Service(ns, name string) *corev1.Service { return find(r.Services, ns, name) }

// Gateway returns the named Gateway, or nil.
func (r *Resources) Gateway(ns, name string) *gwv1.Gateway { return find(r.Gateways, ns, name) }

// Secret returns the named Secret, or nil.
func (r *Resources) Secret(ns, name string) *corev1.Secret { return find(r.Secrets, ns, name) }

// GatewayClass returns the named GatewayClass, or nil.
func (r *Resources) GatewayClass(name string) *gwv1.GatewayClass {
	return find(r.GatewayClasses, "", name)
}

// find binary-searches a sorted slice.
func find[T object](s []T, ns, name string) T {
	i, ok := slices.BinarySearchFunc(s, [2]string{ns, name}, func(o T, k [2]string) int {
		return cmp.Or(cmp.Compare(o.GetNamespace(), k[0]), cmp.Compare(o.GetName(), k[1]))
	})
	if !ok {
		var zero T
		return zero
	}
	return s[i]
}

// Generation returns an object's generation, treating unset as 1 so that
// observedGeneration is meaningful for objects from files.
func Generation(o metav1.Object) int64 {
	if g := o.GetGeneration(); g > 0 {
		return g
	}
	return 1
}

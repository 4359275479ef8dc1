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
	ConfigMaps      []*corev1.ConfigMap

	Workloads             []*v1alpha1.Workload
	AuthorizationPolicies []*v1alpha1.AuthorizationPolicy

	GatewayClasses  []*gwv1.GatewayClass
	Gateways        []*gwv1.Gateway
	HTTPRoutes      []*gwv1.HTTPRoute
	GRPCRoutes      []*gwv1.GRPCRoute
	TLSRoutes       []*gwv1.TLSRoute
	TCPRoutes       []*gwv1.TCPRoute
	ReferenceGrants []*gwv1.ReferenceGrant

	BackendTLSPolicies []*gwv1.BackendTLSPolicy

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
	sortObjs(r.ConfigMaps)
	sortObjs(r.Workloads)
	sortObjs(r.AuthorizationPolicies)
	sortObjs(r.GatewayClasses)
	sortObjs(r.Gateways)
	sortObjs(r.HTTPRoutes)
	sortObjs(r.GRPCRoutes)
	sortObjs(r.TLSRoutes)
	sortObjs(r.TCPRoutes)
	sortObjs(r.ReferenceGrants)
	sortObjs(r.BackendTLSPolicies)
	SortErrors(r.Errors)
}

// SortErrors orders errors as Sort does: by source, document, object, message.
func SortErrors(errs []SourceError) {
	slices.SortFunc(errs, func(a, b SourceError) int {
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

// ConfigMap returns the named ConfigMap, or nil.
func (r *Resources) ConfigMap(ns, name string) *corev1.ConfigMap {
	return find(r.ConfigMaps, ns, name)
}

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

// Update returns a snapshot like r in which every object of remove is taken
// out and every object of put is added, or replaces the one of the same kind,
// namespace and name. It costs O(changes) searches plus a copy of each
// slice that changes, so a source can patch its last snapshot instead of
// rebuilding it. r is not modified, and the slices the result shares with it
// are never written. MeshConfig and Errors are copied as they are: the
// caller sets them. ok is false when an object is a MeshConfig or of a kind
// Resources has no slice for.
func (r *Resources) Update(put, remove []Object) (_ *Resources, ok bool) {
	var p patches
	for _, o := range put {
		if !p.add(o, false) {
			return nil, false
		}
	}
	for _, o := range remove {
		if !p.add(o, true) {
			return nil, false
		}
	}
	n := *r
	n.Namespaces = p.namespaces.apply(r.Namespaces)
	n.Services = p.services.apply(r.Services)
	n.ServiceAccounts = p.serviceAccounts.apply(r.ServiceAccounts)
	n.Secrets = p.secrets.apply(r.Secrets)
	n.ConfigMaps = p.configMaps.apply(r.ConfigMaps)
	n.Workloads = p.workloads.apply(r.Workloads)
	n.AuthorizationPolicies = p.authorizationPolicies.apply(r.AuthorizationPolicies)
	n.GatewayClasses = p.gatewayClasses.apply(r.GatewayClasses)
	n.Gateways = p.gateways.apply(r.Gateways)
	n.HTTPRoutes = p.httpRoutes.apply(r.HTTPRoutes)
	n.GRPCRoutes = p.grpcRoutes.apply(r.GRPCRoutes)
	n.TLSRoutes = p.tlsRoutes.apply(r.TLSRoutes)
	n.TCPRoutes = p.tcpRoutes.apply(r.TCPRoutes)
	n.ReferenceGrants = p.referenceGrants.apply(r.ReferenceGrants)
	n.BackendTLSPolicies = p.backendTLSPolicies.apply(r.BackendTLSPolicies)
	return &n, true
}

type patches struct {
	namespaces            ops[*corev1.Namespace]
	services              ops[*corev1.Service]
	serviceAccounts       ops[*corev1.ServiceAccount]
	secrets               ops[*corev1.Secret]
	configMaps            ops[*corev1.ConfigMap]
	workloads             ops[*v1alpha1.Workload]
	authorizationPolicies ops[*v1alpha1.AuthorizationPolicy]
	gatewayClasses        ops[*gwv1.GatewayClass]
	gateways              ops[*gwv1.Gateway]
	httpRoutes            ops[*gwv1.HTTPRoute]
	grpcRoutes            ops[*gwv1.GRPCRoute]
	tlsRoutes             ops[*gwv1.TLSRoute]
	tcpRoutes             ops[*gwv1.TCPRoute]
	referenceGrants       ops[*gwv1.ReferenceGrant]
	backendTLSPolicies    ops[*gwv1.BackendTLSPolicy]
}

func (p *patches) add(o Object, del bool) bool {
	switch o := o.(type) {
	case *corev1.Namespace:
		p.namespaces.add(o, del)
	case *corev1.Service:
		p.services.add(o, del)
	case *corev1.ServiceAccount:
		p.serviceAccounts.add(o, del)
	case *corev1.Secret:
		p.secrets.add(o, del)
	case *corev1.ConfigMap:
		p.configMaps.add(o, del)
	case *v1alpha1.Workload:
		p.workloads.add(o, del)
	case *v1alpha1.AuthorizationPolicy:
		p.authorizationPolicies.add(o, del)
	case *gwv1.GatewayClass:
		p.gatewayClasses.add(o, del)
	case *gwv1.Gateway:
		p.gateways.add(o, del)
	case *gwv1.HTTPRoute:
		p.httpRoutes.add(o, del)
	case *gwv1.GRPCRoute:
		p.grpcRoutes.add(o, del)
	case *gwv1.TLSRoute:
		p.tlsRoutes.add(o, del)
	case *gwv1.TCPRoute:
		p.tcpRoutes.add(o, del)
	case *gwv1.ReferenceGrant:
		p.referenceGrants.add(o, del)
	case *gwv1.BackendTLSPolicy:
		p.backendTLSPolicies.add(o, del)
	default:
		return false
	}
	return true
}

type ops[T object] struct{ put, del []T }

func (p *ops[T]) add(o T, del bool) {
	if del {
		p.del = append(p.del, o)
	} else {
		p.put = append(p.put, o)
	}
}

func compareObjs[T object](a, b T) int {
	return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
}

// apply merges the sorted slice s with the operations into a new slice. The
// unchanged prefix and suffix are copied without comparisons, so a handful
// of changes costs a few binary searches and one copy of s.
func (p *ops[T]) apply(s []T) []T {
	if len(p.put) == 0 && len(p.del) == 0 {
		return s
	}
	sortObjs(p.put)
	sortObjs(p.del)
	var first T
	switch {
	case len(p.put) == 0:
		first = p.del[0]
	case len(p.del) == 0 || compareObjs(p.put[0], p.del[0]) <= 0:
		first = p.put[0]
	default:
		first = p.del[0]
	}
	i, _ := slices.BinarySearchFunc(s, first, compareObjs[T])
	out := make([]T, 0, len(s)+len(p.put))
	out = append(out, s[:i]...)
	put, del := p.put, p.del
	for i < len(s) {
		if len(put) == 0 && len(del) == 0 {
			break
		}
		if len(put) > 0 {
			c := compareObjs(put[0], s[i])
			if c < 0 {
				out = append(out, put[0])
				put = put[1:]
				continue
			}
			if c == 0 {
				out = append(out, put[0])
				put, i = put[1:], i+1
				continue
			}
		}
		for len(del) > 0 && compareObjs(del[0], s[i]) < 0 {
			del = del[1:] // not present: nothing to remove
		}
		if len(del) > 0 && compareObjs(del[0], s[i]) == 0 {
			del, i = del[1:], i+1
			continue
		}
		out = append(out, s[i])
		i++
	}
	out = append(out, s[i:]...)
	out = append(out, put...)
	if len(out) == 0 {
		return nil // as Build leaves a kind without objects
	}
	return out
}

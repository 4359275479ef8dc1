package controlplane

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/ambitmesh/ambit/api/v1alpha1"
	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/translate"
)

// Files of a written Config: MeshFile holds the mesh-wide objects
// (MeshConfig, Namespaces, Gateways, the mesh-wide policy), RoutesFile every
// HTTPRoute, and each service namespace has its own file (NamespaceFile).
const (
	MeshFile   = "mesh.yaml"
	RoutesFile = "routes.yaml"
)

// Namespaces that are not service namespaces.
const (
	RootNamespace     = "ambit-system"
	WaypointNamespace = "waypoints"
	IngressNamespace  = "ingress"
	IngressGateway    = "gw"
)

// NamespaceFile is the file holding service namespace n's Services,
// ServiceAccounts, Workloads and AuthorizationPolicies.
func NamespaceFile(n int) string { return fmt.Sprintf("ns-%02d.yaml", n) }

// Config is the synthetic mesh of Mesh(sz) as the Kubernetes API objects a
// user would write: core/v1 Namespaces, Services and ServiceAccounts, Gateway
// API Gateways and HTTPRoutes, ambit.dev Workloads, AuthorizationPolicies and
// a MeshConfig. Objects are grouped by the file they are written to, so the
// same mesh can be fed to the translator in memory (Resources) or through the
// file source (Write).
//
// The shape follows Mesh: Workloads spread evenly over Services, every odd
// Service bound to one of the waypoints, half of the HTTPRoutes on one
// ingress Gateway and half GAMMA routes on Services (hence on waypoints),
// one ALLOW policy per namespace, one mesh-wide DENY, and a selector policy
// on every tenth Service.
type Config struct {
	Size Size

	files     map[string][]resources.Object
	workloads []*v1alpha1.Workload // by index, as in Mesh
	fileOf    []string             // file of each workload
	// encoded caches each object's YAML. Objects are never modified (an
	// edit replaces the object), so the pointer identifies the content;
	// re-encoding a ~600-object file per change cost the benchmark
	// harness ~100 ms of CPU and garbage that its GC then scanned during
	// the measured change.
	encoded map[resources.Object][]byte
}

// Policies is how many AuthorizationPolicies NewConfig(sz) creates.
func (sz Size) Policies() int { return sz.Namespaces + 1 + (sz.Services+9)/10 }

// NewConfig builds the synthetic configuration. It does no I/O.
func NewConfig(sz Size) *Config {
	c := &Config{Size: sz, files: map[string][]resources.Object{}, encoded: map[resources.Object][]byte{}}
	add := func(file string, o resources.Object) { c.files[file] = append(c.files[file], o) }
	ns := func(s int) int { return s % sz.Namespaces }
	svcName := func(s int) string { return fmt.Sprintf("svc-%04d", s) }

	add(MeshFile, &v1alpha1.MeshConfig{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "MeshConfig"},
		ObjectMeta: metav1.ObjectMeta{Name: "mesh"},
		Spec: v1alpha1.MeshConfigSpec{TrustDomain: "cluster.local", RootNamespace: RootNamespace,
			MTLSMode: v1alpha1.MTLSStrict, ServiceVIPRange: "10.96.0.0/16"},
	})
	for _, n := range []string{RootNamespace, WaypointNamespace, IngressNamespace} {
		add(MeshFile, namespace(n))
	}
	for n := range sz.Namespaces {
		add(MeshFile, namespace(fmt.Sprintf("ns-%02d", n)))
	}
	allowAll := gwv1.NamespacesFromAll
	add(MeshFile, &gwv1.Gateway{
		TypeMeta:   metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String(), Kind: "Gateway"},
		ObjectMeta: metav1.ObjectMeta{Namespace: IngressNamespace, Name: IngressGateway},
		Spec: gwv1.GatewaySpec{GatewayClassName: translate.ClassNameIngress, Listeners: []gwv1.Listener{{
			Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType,
			AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: &allowAll}},
		}}},
	})
	for w := range sz.Waypoints {
		add(MeshFile, &gwv1.Gateway{
			TypeMeta:   metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String(), Kind: "Gateway"},
			ObjectMeta: metav1.ObjectMeta{Namespace: WaypointNamespace, Name: fmt.Sprintf("wp-%02d", w)},
			Spec: gwv1.GatewaySpec{GatewayClassName: translate.ClassNameWaypoint, Listeners: []gwv1.Listener{{
				Name: "mesh", Port: translate.PortHBONE, Protocol: translate.ProtocolHBONE,
			}}},
		})
	}
	add(MeshFile, &v1alpha1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: RootNamespace, Name: "deny-blocked"},
		Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionDeny, Rules: []v1alpha1.Rule{{
			From: []v1alpha1.RuleFrom{{Source: v1alpha1.Source{IPBlocks: []string{"192.0.2.0/24"}}}},
		}}},
	})

	for n := range sz.Namespaces {
		name := fmt.Sprintf("ns-%02d", n)
		add(NamespaceFile(n), &v1alpha1.AuthorizationPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AuthorizationPolicy"},
			ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "allow-mesh"},
			Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionAllow, Rules: []v1alpha1.Rule{{
				From: []v1alpha1.RuleFrom{{Source: v1alpha1.Source{Namespaces: []string{name, IngressNamespace}}}},
			}}},
		})
	}

	perSvc := sz.Workloads / sz.Services
	c.workloads = make([]*v1alpha1.Workload, 0, sz.Workloads)
	for s := range sz.Services {
		nsName, name, file := fmt.Sprintf("ns-%02d", ns(s)), svcName(s), NamespaceFile(ns(s))
		svc := &corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Namespace: nsName, Name: name},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080),
					AppProtocol: new("http")}},
			},
		}
		if s%2 == 1 && sz.Waypoints > 0 {
			svc.Labels = map[string]string{
				translate.LabelUseWaypoint:          fmt.Sprintf("wp-%02d", s%sz.Waypoints),
				translate.LabelUseWaypointNamespace: WaypointNamespace,
			}
		}
		add(file, svc)
		add(file, &corev1.ServiceAccount{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: metav1.ObjectMeta{Namespace: nsName, Name: name},
		})
		if s%10 == 0 {
			add(file, &v1alpha1.AuthorizationPolicy{
				TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AuthorizationPolicy"},
				ObjectMeta: metav1.ObjectMeta{Namespace: nsName, Name: name + "-callers"},
				Spec: v1alpha1.AuthorizationPolicySpec{
					Selector: &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": name}},
					Action:   v1alpha1.ActionAllow,
					Rules: []v1alpha1.Rule{{
						From: []v1alpha1.RuleFrom{{Source: v1alpha1.Source{Principals: []string{
							fmt.Sprintf("cluster.local/ns/%s/sa/%s", nsName, svcName((s+sz.Namespaces)%sz.Services)),
							"cluster.local/ns/" + IngressNamespace + "/sa/" + IngressGateway,
						}}}},
						To: []v1alpha1.RuleTo{{Operation: v1alpha1.Operation{Ports: []string{"8080"}}}},
					}},
				},
			})
		}
		for k := range perSvc {
			i := s*perSvc + k
			w := &v1alpha1.Workload{
				TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Workload"},
				ObjectMeta: metav1.ObjectMeta{Namespace: nsName, Name: fmt.Sprintf("%s-%d", name, k),
					UID: types.UID(fmt.Sprintf("uid-%06d", i)), Labels: map[string]string{"app": name, "version": "v1"}},
				Spec: v1alpha1.WorkloadSpec{
					ServiceAccount: name,
					Addresses:      []string{addr(i + 1).String()},
					Node:           fmt.Sprintf("node-%02d", i%sz.Nodes),
					Locality:       v1alpha1.Locality{Region: "r1", Zone: "z" + strconv.Itoa(i%3)},
				},
			}
			add(file, w)
			c.workloads = append(c.workloads, w)
			c.fileOf = append(c.fileOf, file)
		}
	}

	for r := range sz.Routes {
		s := r % sz.Services
		nsName := fmt.Sprintf("ns-%02d", ns(s))
		route := &gwv1.HTTPRoute{
			TypeMeta:   metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String(), Kind: "HTTPRoute"},
			ObjectMeta: metav1.ObjectMeta{Namespace: nsName, Name: fmt.Sprintf("route-%04d", r)},
			Spec: gwv1.HTTPRouteSpec{Rules: []gwv1.HTTPRouteRule{{
				Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: new(gwv1.PathMatchPathPrefix), Value: new("/")}}},
				Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestHeaderModifier,
					RequestHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "x-route", Value: strconv.Itoa(r)}}}}},
				BackendRefs: []gwv1.HTTPBackendRef{
					backendRef(svcName(s), 90),
					// Same namespace (s+Namespaces), so no ReferenceGrant is needed.
					backendRef(svcName((s+sz.Namespaces)%sz.Services), 10),
				},
				Timeouts: &gwv1.HTTPRouteTimeouts{Request: new(gwv1.Duration("15s"))},
			}}},
		}
		if r%2 == 0 || sz.Waypoints == 0 {
			route.Spec.Hostnames = []gwv1.Hostname{gwv1.Hostname(svcName(s) + ".example.com")}
			route.Spec.ParentRefs = []gwv1.ParentReference{{
				Namespace: new(gwv1.Namespace(IngressNamespace)), Name: IngressGateway, SectionName: new(gwv1.SectionName("http")),
			}}
		} else {
			route.Spec.ParentRefs = []gwv1.ParentReference{{
				Group: new(gwv1.Group("")), Kind: new(gwv1.Kind("Service")), Name: gwv1.ObjectName(svcName(s)), Port: new(gwv1.PortNumber(80)),
			}}
		}
		add(RoutesFile, route)
	}
	return c
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func backendRef(name string, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{
		BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: new(gwv1.PortNumber(80))},
		Weight:                 new(weight),
	}}
}

// Files returns the names of the files Write creates, sorted.
func (c *Config) Files() []string {
	var names []string
	for n := range c.files {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Resources builds the snapshot the file source would produce, in memory,
// through the same resources.Build.
func (c *Config) Resources() *resources.Resources {
	var objs []resources.Decoded
	for _, f := range c.Files() {
		for i, o := range c.files[f] {
			objs = append(objs, resources.Decoded{Object: o, Source: f, Document: i + 1})
		}
	}
	return resources.Build(objs)
}

// Workload returns the name of workload i (the numbering of Mesh) and the
// file it is written in.
func (c *Config) Workload(i int) (ref model.Ref, file string) {
	w := c.workloads[i]
	return model.Ref{Namespace: w.Namespace, Name: w.Name}, c.fileOf[i]
}

// SetWorkloadAddress gives workload i the single address ip and returns the
// file that must be rewritten (WriteFile) for the change to reach disk.
// Objects handed out by an earlier Resources call are replaced, not
// modified, so snapshots already built stay as they were.
func (c *Config) SetWorkloadAddress(i int, ip netip.Addr) (file string) {
	old := c.workloads[i]
	w := old.DeepCopy()
	w.Spec.Addresses = []string{ip.String()}
	c.workloads[i] = w
	objs := c.files[c.fileOf[i]]
	objs[slices.Index(objs, resources.Object(old))] = w
	delete(c.encoded, old)
	return c.fileOf[i]
}

// Encode renders one file as multi-document YAML. Not safe for concurrent
// use (it fills the encoding cache).
func (c *Config) Encode(file string) ([]byte, error) {
	objs, ok := c.files[file]
	if !ok {
		return nil, fmt.Errorf("bench: no file %q in the synthetic config", file)
	}
	var buf bytes.Buffer
	for i, o := range objs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		b, ok := c.encoded[o]
		if !ok {
			var err error
			if b, err = yaml.Marshal(o); err != nil {
				return nil, fmt.Errorf("bench: encode %s %s/%s: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetNamespace(), o.GetName(), err)
			}
			c.encoded[o] = b
		}
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

// Write writes every file into dir (which must exist), each atomically
// (see WriteFile).
func (c *Config) Write(dir string) error {
	for _, f := range c.Files() {
		if err := c.WriteFile(dir, f); err != nil {
			return err
		}
	}
	return nil
}

// WriteFile replaces dir/file atomically: Stage, then install.
func (c *Config) WriteFile(dir, file string) error {
	install, err := c.Stage(dir, file)
	if err != nil {
		return err
	}
	return install()
}

// Stage encodes file into a temporary file in dir's parent and returns the
// func that renames it into dir. Renaming makes the change atomic: a
// watcher sees one complete file appear (a single event in dir, none for
// the staging) and never a half-written one, and a caller can time a change
// from the moment it becomes visible. dir's parent must be writable and on
// the same file system.
func (c *Config) Stage(dir, file string) (install func() error, err error) {
	data, err := c.Encode(file)
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(filepath.Clean(dir)), ".stage-"+file+"-*")
	if err != nil {
		return nil, fmt.Errorf("bench: stage %s: %w", file, err)
	}
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("bench: stage %s: %w", file, err)
	}
	return func() error {
		if err := os.Rename(tmp.Name(), filepath.Join(dir, file)); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("bench: install %s: %w", file, err)
		}
		return nil
	}, nil
}

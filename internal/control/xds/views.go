// Package xds turns the mesh model into per-proxy resource views and serves
// them over delta ADS (go-control-plane's server with ambit's own resource
// types from proto/).
package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambitmesh/ambit/internal/control/model"
	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Type URLs of ambit's xDS resources.
const (
	TypeWorkload      = "type.googleapis.com/ambit.workload.v1.Workload"
	TypeService       = "type.googleapis.com/ambit.workload.v1.Service"
	TypeAuthorization = "type.googleapis.com/ambit.authorization.v1.Authorization"
	TypeListener      = "type.googleapis.com/ambit.gateway.v1.Listener"
	TypeRouteTable    = "type.googleapis.com/ambit.gateway.v1.RouteTable"
	TypeBackend       = "type.googleapis.com/ambit.gateway.v1.Backend"
	TypeSecret        = "type.googleapis.com/ambit.gateway.v1.Secret"
	TypeTrustBundle   = "type.googleapis.com/ambit.ca.v1.TrustBundle"
)

// NodeTypes are the types a node proxy subscribes to, GatewayTypes those of
// a waypoint or ingress gateway; both in dependency order (referenced types
// first), which is also the order pushes go out in.
var (
	NodeTypes    = []string{TypeTrustBundle, TypeService, TypeWorkload, TypeAuthorization}
	GatewayTypes = []string{TypeTrustBundle, TypeWorkload, TypeBackend, TypeSecret, TypeRouteTable, TypeListener, TypeAuthorization}
)

// typeOrder is the push order across all types.
var typeOrder = []string{TypeTrustBundle, TypeService, TypeWorkload, TypeBackend, TypeSecret, TypeRouteTable, TypeListener, TypeAuthorization}

// ProxyKind is the role of a connected proxy.
type ProxyKind int

const (
	// KindNode is a node proxy: node ID "node/<node name>".
	KindNode ProxyKind = iota + 1
	// KindGateway is a waypoint or ingress gateway: node ID
	// "gateway/<namespace>/<name>".
	KindGateway
)

// ProxyID identifies a proxy by the node ID it connects with.
type ProxyID struct {
	Kind    ProxyKind
	Node    string    // KindNode
	Gateway model.Ref // KindGateway
}

// ErrBadNodeID is wrapped by ParseProxyID errors.
var ErrBadNodeID = errors.New("invalid node ID")

// ParseProxyID parses "node/<node>" or "gateway/<namespace>/<name>".
func ParseProxyID(id string) (ProxyID, error) {
	kind, rest, _ := strings.Cut(id, "/")
	switch kind {
	case "node":
		if rest != "" && !strings.Contains(rest, "/") {
			return ProxyID{Kind: KindNode, Node: rest}, nil
		}
	case "gateway":
		ns, name, ok := strings.Cut(rest, "/")
		if ok && ns != "" && name != "" && !strings.Contains(name, "/") {
			return ProxyID{Kind: KindGateway, Gateway: model.Ref{Namespace: ns, Name: name}}, nil
		}
	}
	return ProxyID{}, fmt.Errorf("xds: node ID %q: %w: want node/<node name> or gateway/<namespace>/<name>", id, ErrBadNodeID)
}

func (p ProxyID) String() string {
	switch p.Kind {
	case KindNode:
		return "node/" + p.Node
	case KindGateway:
		return "gateway/" + p.Gateway.String()
	}
	return "unknown"
}

// Resource is one resource of one translation, marshaled and hashed once
// and shared by every proxy whose view contains it.
type Resource struct {
	Name string
	// Version is a content hash of the marshaled resource, so it is stable
	// across translations, restarts and control-plane replicas.
	Version string
	Message proto.Message
	wire    *discovery.Resource
}

// ResourceSet is the resources of one type in one view. Immutable.
type ResourceSet struct {
	TypeURL string
	// Version hashes every (name, version) pair; it is the
	// system_version_info of responses and what `ambit status` shows.
	Version string
	Items   map[string]*Resource
	// versions is Items' name -> version: what a proxy holding the set has.
	versions map[string]string
	// names is Items' names, sorted (the order Version hashes them in).
	names []string
	// history says which names changed since earlier versions of the same
	// view, newest first, so that a proxy one or a few translations behind
	// gets its delta without a scan of every resource.
	history []change
}

type change struct {
	since string
	names []string
}

// maxHistory bounds how many earlier versions a set remembers changes for.
const maxHistory = 8

// Names returns the resource names, sorted.
func (s *ResourceSet) Names() []string { return slices.Clone(s.names) }

// changesSince returns the names that differ between the set with version
// `since` and s (changed, added or removed), or ok=false when s does not
// remember that version.
func (s *ResourceSet) changesSince(since string) (names []string, ok bool) {
	for _, c := range s.history {
		if c.since == since {
			return c.names, true
		}
	}
	return nil, false
}

// GatewayView is what one waypoint or ingress gateway receives.
type GatewayView struct {
	Listeners   *ResourceSet
	RouteTables *ResourceSet
	Backends    *ResourceSet
	// Secrets are the serving certificates of this gateway's own
	// listeners; no other proxy's view holds them.
	Secrets        *ResourceSet
	Authorizations *ResourceSet
	// Workloads (waypoints) are the workloads bound to the waypoint: node
	// proxies send the traffic addressed to them through it.
	Workloads *ResourceSet
}

// Views is every proxy view of one translation.
type Views struct {
	// TrustBundle goes to every proxy.
	TrustBundle *ResourceSet
	// Workloads and Services go to every node proxy.
	Workloads *ResourceSet
	Services  *ResourceSet
	// nodeAuthz is the authorization set per node that has workloads;
	// meshAuthz (mesh-scope policies only) serves every other node.
	nodeAuthz map[string]*ResourceSet
	meshAuthz *ResourceSet
	gateways  map[model.Ref]*GatewayView
	empty     map[string]*ResourceSet

	// sets and interned carry state to the next ComputeViews: set
	// histories by view key, and resources by (type, name, version) so an
	// unchanged resource keeps its marshaled bytes.
	sets     map[string]*ResourceSet
	interned map[internKey]*Resource
	gws      map[*model.Gateway]*gatewayMemo
	// src is the mesh these views were computed from (a shallow copy);
	// wmemo and smemo are aligned with its Workloads and Services, widx and
	// sidx index them by Ref. Aligned slices, not maps of pointers into the
	// model, so that a patched view (patch) keeps no older model alive.
	src        model.Mesh
	wmemo      []workloadMemo
	smemo      []serviceMemo
	widx, sidx map[model.Ref]int
	// otherErrs are the conversion errors of policies and gateways, which a
	// patched view reports again without converting them again.
	otherErrs []error
	// incomplete: a workload or service could not be converted (it is
	// retried, and reported, by the next full computation only).
	incomplete bool
}

type internKey struct{ typeURL, name, version string }

// Set returns the resources of typeURL in the view of proxy id; never nil
// (an unknown gateway or a type the proxy kind does not use is empty).
func (v *Views) Set(id ProxyID, typeURL string) *ResourceSet {
	var s *ResourceSet
	if typeURL == TypeTrustBundle {
		return v.TrustBundle
	}
	switch id.Kind {
	case KindNode:
		switch typeURL {
		case TypeWorkload:
			s = v.Workloads
		case TypeService:
			s = v.Services
		case TypeAuthorization:
			if s = v.nodeAuthz[id.Node]; s == nil {
				s = v.meshAuthz
			}
		}
	case KindGateway:
		if g := v.gateways[id.Gateway]; g != nil {
			switch typeURL {
			case TypeListener:
				s = g.Listeners
			case TypeRouteTable:
				s = g.RouteTables
			case TypeBackend:
				s = g.Backends
			case TypeSecret:
				s = g.Secrets
			case TypeAuthorization:
				s = g.Authorizations
			case TypeWorkload:
				s = g.Workloads
			}
		}
	}
	if s == nil {
		if s = v.empty[typeURL]; s == nil {
			s = newSet(typeURL, nil)
		}
	}
	return s
}

// builder holds the state of one ComputeViews call.
type builder struct {
	prev *Views
	next *Views
	errs []error
}

// resource marshals and hashes m once; an identical resource of the
// previous translation is reused so that its wire form is shared.
func (b *builder) resource(typeURL, name string, m proto.Message) *Resource {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		b.errs = append(b.errs, fmt.Errorf("xds: marshal %s %s: %w", typeURL, name, err))
		return nil
	}
	sum := sha256.Sum256(raw)
	version := hex.EncodeToString(sum[:8])
	key := internKey{typeURL, name, version}
	if r := b.next.interned[key]; r != nil {
		return r
	}
	if b.prev != nil {
		if r := b.prev.interned[key]; r != nil {
			b.next.interned[key] = r
			return r
		}
	}
	r := &Resource{
		Name:    name,
		Version: version,
		Message: m,
		wire: &discovery.Resource{
			Name:     name,
			Version:  version,
			Resource: &anypb.Any{TypeUrl: typeURL, Value: raw},
		},
	}
	b.next.interned[key] = r
	return r
}

func newSet(typeURL string, items []*Resource) *ResourceSet {
	s := &ResourceSet{
		TypeURL:  typeURL,
		Items:    make(map[string]*Resource, len(items)),
		versions: make(map[string]string, len(items)),
	}
	for _, r := range items {
		if r != nil {
			s.Items[r.Name] = r
			s.versions[r.Name] = r.Version
		}
	}
	s.names = make([]string, 0, len(s.Items))
	for n := range s.Items {
		s.names = append(s.names, n)
	}
	slices.Sort(s.names)
	s.hash()
	return s
}

// hash sets Version from names and versions.
func (s *ResourceSet) hash() {
	h := sha256.New()
	for _, n := range s.names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(s.versions[n]))
		h.Write([]byte{0})
	}
	s.Version = hex.EncodeToString(h.Sum(nil)[:8])
}

// patchSet is newSet(prev.TypeURL, items) when items hold the same names as
// prev (names must be unique in items): it reuses prev when nothing
// changed, or clones prev's maps and sets the changed resources, instead of
// building and sorting a set of every item. ok is false when the names
// differ; diff is the changed names, sorted.
func patchSet(prev *ResourceSet, items []*Resource) (s *ResourceSet, diff []string, ok bool) {
	if prev == nil || len(items) != len(prev.Items) {
		return nil, nil, false
	}
	var changed []*Resource
	for _, r := range items {
		p, found := prev.Items[r.Name]
		if !found {
			return nil, nil, false
		}
		if p != r {
			changed = append(changed, r)
		}
	}
	s, diff = prev.with(changed)
	return s, diff, true
}

// with is s with the resources of changed replacing those of the same
// names, which s must hold; diff is the names whose version changed, sorted.
func (s *ResourceSet) with(changed []*Resource) (_ *ResourceSet, diff []string) {
	if len(changed) == 0 {
		return s, nil
	}
	n := &ResourceSet{TypeURL: s.TypeURL, Items: maps.Clone(s.Items), versions: maps.Clone(s.versions), names: s.names}
	for _, r := range changed {
		n.Items[r.Name] = r
		if n.versions[r.Name] != r.Version {
			n.versions[r.Name] = r.Version
			diff = append(diff, r.Name)
		}
	}
	slices.Sort(diff)
	n.hash()
	return n, diff
}

// set builds the set of view `key`, linking it to the previous translation's
// set of the same key: an unchanged set is the previous one (so proxies
// that hold it get nothing), a changed one records what changed. unique
// says items cannot repeat a name, which lets a large set be patched.
func (b *builder) set(key, typeURL string, items []*Resource, unique bool) *ResourceSet {
	var prev *ResourceSet
	if b.prev != nil {
		prev = b.prev.sets[key]
	}
	var s *ResourceSet
	var diff []string
	patched := false
	if unique && !slices.Contains(items, nil) {
		s, diff, patched = patchSet(prev, items)
	}
	if !patched {
		s = newSet(typeURL, items)
		if prev != nil && prev.Version != s.Version {
			for n, v := range s.versions {
				if prev.versions[n] != v {
					diff = append(diff, n)
				}
			}
			for n := range prev.versions {
				if _, ok := s.versions[n]; !ok {
					diff = append(diff, n)
				}
			}
			slices.Sort(diff)
		}
	}
	s = linked(prev, s, diff)
	b.next.sets[key] = s
	return s
}

// linked returns s, or prev when s holds the same as prev, with the history
// of what changed since prev's versions; diff is what changed since prev.
func linked(prev, s *ResourceSet, diff []string) *ResourceSet {
	if prev != nil && prev.Version == s.Version {
		s = prev
	} else if prev != nil {
		s.history = append(s.history, change{since: prev.Version, names: diff})
		for _, c := range prev.history {
			if len(s.history) == maxHistory {
				break
			}
			names := slices.Concat(c.names, diff)
			slices.Sort(names)
			s.history = append(s.history, change{since: c.since, names: slices.Compact(names)})
		}
	}
	return s
}

// StrictMTLSPolicyName is the policy, in the root namespace, that carries
// MeshConfig mtlsMode STRICT to node proxies.
const StrictMTLSPolicyName = "ambit-strict-mtls"

// strictMTLSPolicy expresses mtlsMode STRICT the way ztunnel receives
// Istio's PeerAuthentication: a mesh-wide DENY for any connection without a
// peer identity (plaintext has no principal, so notPrincipals ["*"] matches
// exactly those). Node proxies then need no separate mTLS setting.
func strictMTLSPolicy(mesh *model.Mesh) *model.Policy {
	if mesh.MTLSMode != model.MTLSStrict {
		return nil
	}
	return &model.Policy{
		Ref:    model.Ref{Namespace: mesh.RootNamespace, Name: StrictMTLSPolicyName},
		Action: "DENY",
		Scope:  model.ScopeMesh,
		Rules:  []model.PolicyRule{{From: []model.PolicySource{{NotPrincipals: []string{"*"}}}}},
	}
}

// ComputeViews computes every proxy view of mesh. It is a pure function of
// mesh; prev (the previous result, or nil) only lets unchanged resources keep
// their marshaled form and lets sets remember what changed, so that a
// translation costs one marshal per resource however many proxies there are,
// and, when mesh differs from prev's only by workloads and services edited in
// place, lets the views be patched in O(change) (see patch).
//
// A model object that cannot be converted (a translator bug) is left out
// and reported in the error; everything else is still in the views.
func ComputeViews(mesh *model.Mesh, prev *Views) (*Views, error) {
	b := &builder{prev: prev, next: &Views{
		nodeAuthz: map[string]*ResourceSet{},
		gateways:  map[model.Ref]*GatewayView{},
		empty:     map[string]*ResourceSet{},
		sets:      map[string]*ResourceSet{},
		interned:  map[internKey]*Resource{},
		gws:       make(map[*model.Gateway]*gatewayMemo, len(mesh.Gateways)),
		src:       *mesh,
	}}
	v := b.next
	b.trustBundle(mesh)
	if b.patch(mesh) {
		return v, errors.Join(b.errs...)
	}
	for _, t := range typeOrder {
		v.empty[t] = newSet(t, nil)
	}

	// Each workload lists the services it backs, so that an endpoint change
	// touches one Workload and no Service.
	backs := map[model.Ref][]backing{}
	v.sidx = make(map[model.Ref]int, len(mesh.Services))
	for i := range mesh.Services {
		s := &mesh.Services[i]
		v.sidx[s.Ref] = i
		key := s.Ref.String()
		for _, e := range s.Endpoints {
			backs[e.Workload] = append(backs[e.Workload], backing{service: key, svc: i, ports: e.Ports})
		}
	}

	workloads := make([]*Resource, 0, len(mesh.Workloads))
	nodeNamespaces := map[string]map[string]bool{}
	workloadNode := make(map[model.Ref]string, len(mesh.Workloads))
	boundWorkloads := map[model.Ref][]*Resource{}
	v.widx = make(map[model.Ref]int, len(mesh.Workloads))
	v.wmemo = make([]workloadMemo, len(mesh.Workloads))
	for i := range mesh.Workloads {
		w := &mesh.Workloads[i]
		bk := backs[w.Ref]
		var r *Resource
		if prev != nil {
			if j, ok := prev.widx[w.Ref]; ok {
				if pm := prev.wmemo[j]; pm.res != nil && workloadEqual(&prev.src.Workloads[j], w) && backingsEqual(pm.backs, bk) {
					r = pm.res
				}
			}
		}
		if r == nil {
			r = b.resource(TypeWorkload, w.Ref.String(), workloadProto(w, portLists(bk)))
		}
		v.widx[w.Ref] = i
		v.wmemo[i] = workloadMemo{backs: bk, res: r}
		v.incomplete = v.incomplete || r == nil
		workloads = append(workloads, r)
		if nodeNamespaces[w.Node] == nil {
			nodeNamespaces[w.Node] = map[string]bool{}
		}
		nodeNamespaces[w.Node][w.Namespace] = true
		workloadNode[w.Ref] = w.Node
		if w.Waypoint != nil {
			boundWorkloads[w.Waypoint.Gateway] = append(boundWorkloads[w.Waypoint.Gateway], r)
		}
	}
	v.Workloads = b.set("workloads", TypeWorkload, workloads, true)

	svcs := make([]*Resource, 0, len(mesh.Services))
	v.smemo = make([]serviceMemo, len(mesh.Services))
	for i := range mesh.Services {
		s := &mesh.Services[i]
		memo := &v.smemo[i]
		if prev != nil {
			if j, ok := prev.sidx[s.Ref]; ok && prev.smemo[j].svc != nil && serviceEqual(&prev.src.Services[j], s) {
				*memo = prev.smemo[j]
			}
		}
		if memo.svc == nil {
			memo.svc = b.resource(TypeService, s.Ref.String(), serviceProto(s))
			v.incomplete = v.incomplete || memo.svc == nil
		}
		svcs = append(svcs, memo.svc)
	}
	v.Services = b.set("services", TypeService, svcs, true)
	errs := len(b.errs)

	// Authorization: which node proxies / gateways enforce each policy.
	var meshPolicies []*Resource
	nodePolicies := map[string][]*Resource{}
	gatewayPolicies := map[model.Ref][]*Resource{}
	policies := mesh.Policies
	if p := strictMTLSPolicy(mesh); p != nil {
		policies = append(slices.Clip(policies), *p)
	}
	for i := range policies {
		p := &policies[i]
		m, err := authorizationProto(p)
		if err != nil {
			b.errs = append(b.errs, fmt.Errorf("xds: %w", err))
			continue
		}
		r := b.resource(TypeAuthorization, p.Ref.String(), m)
		switch p.Scope {
		case model.ScopeMesh:
			meshPolicies = append(meshPolicies, r)
		case model.ScopeNamespace:
			for node, nss := range nodeNamespaces {
				if nss[p.Namespace] {
					nodePolicies[node] = append(nodePolicies[node], r)
				}
			}
		case model.ScopeWorkloads:
			seen := map[string]bool{}
			for _, w := range p.Workloads {
				if node, ok := workloadNode[w]; ok && !seen[node] {
					seen[node] = true
					nodePolicies[node] = append(nodePolicies[node], r)
				}
			}
		case model.ScopeTargets:
			seen := map[model.Ref]bool{}
			for _, t := range p.Targets {
				gw := t.Ref
				if t.Kind == "Service" {
					j, ok := v.sidx[t.Ref]
					if !ok || mesh.Services[j].Waypoint == nil {
						continue
					}
					gw = mesh.Services[j].Waypoint.Gateway
				}
				if !seen[gw] {
					seen[gw] = true
					gatewayPolicies[gw] = append(gatewayPolicies[gw], r)
				}
			}
		}
	}
	v.meshAuthz = b.set("authz/mesh", TypeAuthorization, meshPolicies, false)
	for node := range nodeNamespaces {
		v.nodeAuthz[node] = b.set("authz/node/"+node, TypeAuthorization, slices.Concat(meshPolicies, nodePolicies[node]), false)
	}

	// Gateways: listeners, route tables, the backends they use.
	bound := map[model.Ref][]model.Ref{}
	for i := range mesh.Services {
		s := &mesh.Services[i]
		if s.Waypoint != nil {
			bound[s.Waypoint.Gateway] = append(bound[s.Waypoint.Gateway], s.Ref)
		}
	}
	for i := range mesh.Gateways {
		g := &mesh.Gateways[i]
		key := "gateway/" + g.Ref.String() + "/"
		gm := b.gateway(g)
		used := maps.Clone(gm.routed)
		if g.Class == model.ClassWaypoint {
			for _, s := range bound[g.Ref] {
				used[s] = true
			}
		}
		var backends []*Resource
		for ref := range used {
			if r := b.backend(ref); r != nil {
				backends = append(backends, r)
			}
		}
		v.gateways[g.Ref] = &GatewayView{
			Listeners:      b.set(key+"listeners", TypeListener, gm.listeners, false),
			RouteTables:    b.set(key+"routetables", TypeRouteTable, gm.tables, false),
			Backends:       b.set(key+"backends", TypeBackend, backends, true),
			Secrets:        b.set(key+"secrets", TypeSecret, gm.secrets, false),
			Authorizations: b.set(key+"authz", TypeAuthorization, gatewayPolicies[g.Ref], false),
			Workloads:      b.set(key+"workloads", TypeWorkload, boundWorkloads[g.Ref], true),
		}
	}
	v.otherErrs = slices.Clone(b.errs[errs:])
	return v, errors.Join(b.errs...)
}

func (b *builder) trustBundle(mesh *model.Mesh) {
	var bundle []*Resource
	if tb := mesh.TrustBundle; tb != nil {
		bundle = append(bundle, b.resource(TypeTrustBundle, tb.TrustDomain, &cav1.TrustBundle{
			TrustDomain: tb.TrustDomain, RootsPem: tb.RootsPEM, Generation: tb.Generation,
		}))
	}
	b.next.TrustBundle = b.set("trust-bundle", TypeTrustBundle, slices.DeleteFunc(bundle, func(r *Resource) bool { return r == nil }), false)
}

// backend returns the Backend resource of a Service (nil for an unknown
// one), built on first use: only gateways that route to it need it.
func (b *builder) backend(ref model.Ref) *Resource {
	j, ok := b.next.sidx[ref]
	if !ok {
		return nil
	}
	memo := &b.next.smemo[j]
	if memo.backend == nil {
		memo.backend = b.resource(TypeBackend, ref.String(), backendProto(&b.next.src.Services[j]))
	}
	return memo.backend
}

// gatewayMemo is what a gateway's own model gives: its listener, route
// table and secret resources, the Services its routes use, and the errors
// converting it. The model is immutable, so the same *model.Gateway (the
// translator keeps unchanged slices) gives the same memo.
type gatewayMemo struct {
	listeners, tables, secrets []*Resource
	routed                     map[model.Ref]bool
	errs                       []error
}

// gateway returns the memo of g, reusing the previous translation's when g
// is the same object.
func (b *builder) gateway(g *model.Gateway) *gatewayMemo {
	if b.prev != nil {
		if gm := b.prev.gws[g]; gm != nil {
			for _, rs := range [][]*Resource{gm.listeners, gm.tables, gm.secrets} {
				for _, r := range rs {
					if r == nil {
						continue
					}
					b.next.interned[internKey{r.wire.GetResource().GetTypeUrl(), r.Name, r.Version}] = r
				}
			}
			b.errs = append(b.errs, gm.errs...)
			b.next.gws[g] = gm
			return gm
		}
	}
	gm := &gatewayMemo{routed: map[model.Ref]bool{}}
	errs := len(b.errs)
	for j := range g.Listeners {
		l := &g.Listeners[j]
		m, err := listenerProto(g, l)
		if err != nil {
			b.errs = append(b.errs, fmt.Errorf("xds: %w", err))
			continue
		}
		gm.listeners = append(gm.listeners, b.resource(TypeListener, l.Name, m))
		for _, vh := range l.VirtualHosts {
			collectBackends(vh.Routes, gm.routed)
		}
	}
	for j := range g.MeshRoutes {
		sr := &g.MeshRoutes[j]
		m, err := routeTableProto(g, sr)
		if err != nil {
			b.errs = append(b.errs, fmt.Errorf("xds: %w", err))
			continue
		}
		gm.tables = append(gm.tables, b.resource(TypeRouteTable, routeTableName(sr), m))
		collectBackends(sr.Routes, gm.routed)
	}
	gm.secrets = make([]*Resource, 0, len(g.Certificates))
	for _, c := range g.Certificates {
		gm.secrets = append(gm.secrets, b.resource(TypeSecret, c.Ref.String(), &gatewayv1.Secret{
			Namespace: c.Namespace, Name: c.Name, CertificateChainPem: c.CertPEM, PrivateKeyPem: c.KeyPEM,
		}))
	}
	gm.errs = slices.Clone(b.errs[errs:])
	b.next.gws[g] = gm
	return gm
}

// collectBackends adds every Service that routes send or mirror traffic to.
func collectBackends(routes []model.Route, used map[model.Ref]bool) {
	addFilters := func(fs []model.Filter) {
		for _, f := range fs {
			if f.RequestMirror != nil && !f.RequestMirror.Backend.Service.IsZero() {
				used[f.RequestMirror.Backend.Service] = true
			}
		}
	}
	for _, r := range routes {
		addFilters(r.Filters)
		for _, be := range r.Backends {
			if !be.Service.IsZero() {
				used[be.Service] = true
			}
			addFilters(be.Filters)
		}
	}
}

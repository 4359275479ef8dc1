package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/node/policy"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	authorizationv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// Type URLs of the node proxy's resources, from the generated types (the
// node proxy depends on the wire protocol, not on the control plane's code).
var (
	typeTrustBundle   = xdsclient.TypeURLOf[*cav1.TrustBundle]()
	typeWorkload      = xdsclient.TypeURLOf[*workloadv1.Workload]()
	typeService       = xdsclient.TypeURLOf[*workloadv1.Service]()
	typeAuthorization = xdsclient.TypeURLOf[*authorizationv1.Authorization]()

	// TypeURLs are the types a node proxy subscribes to.
	TypeURLs = []string{typeTrustBundle, typeService, typeWorkload, typeAuthorization}
)

// Config is the node proxy's view of one xDS snapshot, indexed for the data
// path. It is built once per snapshot and never modified, so connections read
// it through an atomic pointer without locks.
type Config struct {
	Generation uint64
	// Snapshot is the xDS snapshot the view was built from (for config_dump).
	Snapshot *xdsclient.Snapshot
	// Policies is the authorization engine built from the same snapshot.
	Policies *policy.Engine
	// TrustBundle is the snapshot's bundle for the proxy's trust domain, nil
	// when none was served.
	TrustBundle *cav1.TrustBundle

	byAddr   map[netip.Addr][]*Workload
	byNode   map[string][]*Workload
	services map[netip.AddrPort]*ServiceTarget
	byHost   map[string]*workloadv1.Service
	// byGateway: "<namespace>/<gateway name>" -> the workloads running
	// that Gateway (label gateway.networking.k8s.io/gateway-name).
	byGateway map[string][]*Workload
	// gatewayPods: the same key -> the pods reachable over HBONE (an
	// address and an identity) with their round-robin cursor.
	gatewayPods map[string]*podRing
}

// podRing is a gateway's reachable pods and its round-robin cursor.
type podRing struct {
	pods []*Workload
	next atomic.Uint64
}

// LabelGatewayName marks a workload as a pod of the Gateway it names (in
// the workload's namespace), as Kubernetes Gateway API implementations do.
const LabelGatewayName = "gateway.networking.k8s.io/gateway-name"

// Workload is a workload of the mesh with its parsed addresses and identity.
type Workload struct {
	Proto     *workloadv1.Workload
	Addresses []netip.Addr
	// Identity is the parsed SPIFFE ID; zero when the workload's is invalid
	// (such a workload can be neither reached over HBONE nor served).
	Identity spiffeid.ID
}

// Key is "<namespace>/<name>".
func (w *Workload) Key() string { return w.Proto.GetNamespace() + "/" + w.Proto.GetName() }

// has reports whether a is one of w's addresses.
func (w *Workload) has(a netip.Addr) bool { return slices.Contains(w.Addresses, a) }

// ServiceTarget is one VIP:port of a service and the endpoints behind it.
type ServiceTarget struct {
	Service   *workloadv1.Service
	Port      uint16
	Endpoints []Endpoint
	next      atomic.Uint64 // round robin cursor
}

// Endpoint is one workload address serving a service port.
type Endpoint struct {
	Workload *Workload
	Addr     netip.AddrPort // workload ip:target port
}

// Pick returns the next endpoint in round-robin order; ok is false when the
// service has none.
func (t *ServiceTarget) Pick() (Endpoint, bool) {
	if len(t.Endpoints) == 0 {
		return Endpoint{}, false
	}
	i := t.next.Add(1) - 1
	return t.Endpoints[i%uint64(len(t.Endpoints))], true
}

// BuildConfig indexes s. Invalid entries (bad addresses, identities) are
// skipped and reported in problems; the rest of the snapshot still applies.
func BuildConfig(s *xdsclient.Snapshot) (cfg *Config, problems []error) {
	cfg = &Config{
		Generation: s.Generation(),
		Snapshot:   s,
		byAddr:     map[netip.Addr][]*Workload{},
		byNode:     map[string][]*Workload{},
		services:   map[netip.AddrPort]*ServiceTarget{},
		byHost:     map[string]*workloadv1.Service{},
		byGateway:  map[string][]*Workload{},
	}
	cfg.gatewayPods = map[string]*podRing{}
	for _, name := range s.Names(typeTrustBundle) {
		if r, ok := s.Get(typeTrustBundle, name); ok {
			if tb, ok := r.Message.(*cav1.TrustBundle); ok {
				cfg.TrustBundle = tb
			}
		}
	}
	var pols []*authorizationv1.Authorization
	for _, name := range s.Names(typeAuthorization) {
		r, _ := s.Get(typeAuthorization, name)
		if a, ok := r.Message.(*authorizationv1.Authorization); ok {
			pols = append(pols, a)
		}
	}
	cfg.Policies = policy.New(pols)
	problems = append(problems, cfg.Policies.Problems()...)

	// backs: service key -> workloads with their port lists, in name order so
	// round robin is deterministic for a given snapshot.
	type backing struct {
		w     *Workload
		ports *workloadv1.PortList
	}
	backs := map[string][]backing{}
	for _, name := range s.Names(typeWorkload) {
		r, _ := s.Get(typeWorkload, name)
		pw, ok := r.Message.(*workloadv1.Workload)
		if !ok {
			continue
		}
		w := &Workload{Proto: pw}
		for i, raw := range pw.GetAddresses() {
			a, ok := netip.AddrFromSlice(raw)
			if !ok {
				problems = append(problems, fmt.Errorf("node proxy: workload %s: addresses[%d] is %d bytes, want 4 (IPv4) or 16 (IPv6)", name, i, len(raw)))
				continue
			}
			w.Addresses = append(w.Addresses, a.Unmap())
		}
		if id, err := spiffeid.FromString(pw.GetIdentity()); err == nil {
			w.Identity = id
		} else {
			problems = append(problems, fmt.Errorf("node proxy: workload %s: identity %q is not a SPIFFE ID: %w", name, pw.GetIdentity(), err))
		}
		for _, a := range w.Addresses {
			cfg.byAddr[a] = append(cfg.byAddr[a], w)
		}
		cfg.byNode[pw.GetNode()] = append(cfg.byNode[pw.GetNode()], w)
		if gw := pw.GetLabels()[LabelGatewayName]; gw != "" {
			k := pw.GetNamespace() + "/" + gw
			cfg.byGateway[k] = append(cfg.byGateway[k], w)
			if len(w.Addresses) > 0 && !w.Identity.IsZero() {
				if cfg.gatewayPods[k] == nil {
					cfg.gatewayPods[k] = &podRing{}
				}
				cfg.gatewayPods[k].pods = append(cfg.gatewayPods[k].pods, w)
			}
		}
		for svc, pl := range pw.GetServices() {
			backs[svc] = append(backs[svc], backing{w, pl})
		}
	}
	for _, name := range s.Names(typeService) {
		r, _ := s.Get(typeService, name)
		svc, ok := r.Message.(*workloadv1.Service)
		if !ok {
			continue
		}
		key := svc.GetNamespace() + "/" + svc.GetName()
		if h := svc.GetHostname(); h != "" {
			cfg.byHost[h] = svc
		}
		for _, sp := range svc.GetPorts() {
			port := uint16(sp.GetPort())
			var eps []Endpoint
			for _, b := range backs[key] {
				for _, pm := range b.ports.GetPorts() {
					if pm.GetServicePort() != sp.GetPort() {
						continue
					}
					target := uint16(pm.GetTargetPort())
					if target == 0 {
						target = port
					}
					for _, a := range b.w.Addresses {
						eps = append(eps, Endpoint{Workload: b.w, Addr: netip.AddrPortFrom(a, target)})
					}
				}
			}
			for i, raw := range svc.GetVips() {
				vip, ok := netip.AddrFromSlice(raw)
				if !ok {
					problems = append(problems, fmt.Errorf("node proxy: service %s: vips[%d] is %d bytes, want 4 (IPv4) or 16 (IPv6)", name, i, len(raw)))
					continue
				}
				cfg.services[netip.AddrPortFrom(vip.Unmap(), port)] = &ServiceTarget{Service: svc, Port: port, Endpoints: eps}
			}
		}
	}
	return cfg, problems
}

// Workloads returns the workloads holding addr (normally one).
func (c *Config) Workloads(addr netip.Addr) []*Workload { return c.byAddr[addr.Unmap()] }

// LocalWorkload returns the workload of node holding addr, or nil.
func (c *Config) LocalWorkload(node string, addr netip.Addr) *Workload {
	for _, w := range c.byAddr[addr.Unmap()] {
		if w.Proto.GetNode() == node {
			return w
		}
	}
	return nil
}

// NodeWorkloads returns the workloads served by node, in name order.
func (c *Config) NodeWorkloads(node string) []*Workload { return c.byNode[node] }

// Service returns the service target at vip:port, or nil.
func (c *Config) Service(dst netip.AddrPort) *ServiceTarget {
	return c.services[netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())]
}

// ServiceByHostname returns the service named hostname
// ("<name>.<namespace>.svc.<domain>"), or nil.
func (c *Config) ServiceByHostname(hostname string) *workloadv1.Service { return c.byHost[hostname] }

// GatewayWorkloads returns the workloads running Gateway
// "<namespace>/<name>" (its waypoint pods), in name order.
func (c *Config) GatewayWorkloads(key string) []*Workload { return c.byGateway[key] }

// GatewayPods returns the pods of Gateway "<namespace>/<name>" that can
// be reached over HBONE, rotated by one at each call (round robin: the
// first is the pick, the others the fallbacks in order). The slice is
// the caller's.
func (c *Config) GatewayPods(key string) []*Workload {
	r := c.gatewayPods[key]
	if r == nil || len(r.pods) == 0 {
		return nil
	}
	i := int((r.next.Add(1) - 1) % uint64(len(r.pods)))
	return append(slices.Clone(r.pods[i:]), r.pods[:i]...)
}

// WorkloadByKey finds "<namespace>/<name>" among node's workloads.
func (c *Config) WorkloadByKey(node, key string) *Workload {
	i := slices.IndexFunc(c.byNode[node], func(w *Workload) bool { return w.Key() == key })
	if i < 0 {
		return nil
	}
	return c.byNode[node][i]
}

// emptyConfig is the view before the first snapshot: nothing is known, every
// connection is allowed by the (empty) policy engine but no workload is local.
func emptyConfig() *Config {
	return &Config{
		Policies: policy.New(nil),
		byAddr:   map[netip.Addr][]*Workload{},
		byNode:   map[string][]*Workload{},
		services: map[netip.AddrPort]*ServiceTarget{},
		byHost:   map[string]*workloadv1.Service{},
	}
}

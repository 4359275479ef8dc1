package translate

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambitmesh/ambit/api/v1alpha1"
	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

// Defaults of MeshConfig fields.
const (
	DefaultTrustDomain     = "cluster.local"
	DefaultRootNamespace   = "ambit-system"
	DefaultClusterDomain   = "cluster.local"
	DefaultServiceVIPRange = "240.240.0.0/16"
)

// Reasons used for core objects.
const (
	ReasonAccepted        = "Accepted"
	ReasonInvalid         = "Invalid"
	ReasonAddressConflict = "AddressConflict"
	ReasonVIPConflict     = "VIPConflict"
	ReasonVIPExhausted    = "VIPRangeExhausted"
	ReasonWaypointBound   = "WaypointBound"
	ReasonWaypointMissing = "WaypointNotFound"
	ReasonWaypointWrong   = "WaypointNotForThisKind"

	// ConditionWaypointBound reports a use-waypoint label's outcome.
	ConditionWaypointBound = "ambit.dev/WaypointBound"
)

func accepted(gen int64) status.Condition {
	return status.Condition{Type: "Accepted", Status: status.True, Reason: ReasonAccepted, ObservedGeneration: gen}
}

func rejected(gen int64, reason, msg string) status.Condition {
	return status.Condition{Type: "Accepted", Status: status.False, Reason: reason, Message: msg, ObservedGeneration: gen}
}

// meshSettings applies the MeshConfig, field by field: an invalid field is
// reported and replaced by its default, the valid ones still apply.
func (t *translator) meshSettings() {
	t.mesh.TrustDomain = DefaultTrustDomain
	t.mesh.RootNamespace = DefaultRootNamespace
	t.mesh.ClusterDomain = DefaultClusterDomain
	t.mesh.MTLSMode = model.MTLSPermissive
	t.vipRange = netip.MustParsePrefix(DefaultServiceVIPRange)
	mc := t.res.MeshConfig
	if mc == nil {
		return
	}
	gen := resources.Generation(mc)
	ref := status.ObjectRef{Group: v1alpha1.GroupVersion.Group, Kind: "MeshConfig", Name: mc.Name}
	var problems []string
	s := mc.Spec
	if s.TrustDomain != "" {
		if err := validDNSish(s.TrustDomain); err != nil {
			problems = append(problems, fmt.Sprintf("spec.trustDomain: %q %v", s.TrustDomain, err))
		} else {
			t.mesh.TrustDomain = s.TrustDomain
		}
	}
	if s.RootNamespace != "" {
		t.mesh.RootNamespace = s.RootNamespace
	}
	if s.ClusterDomain != "" {
		if err := validDNSish(s.ClusterDomain); err != nil {
			problems = append(problems, fmt.Sprintf("spec.clusterDomain: %q %v", s.ClusterDomain, err))
		} else {
			t.mesh.ClusterDomain = s.ClusterDomain
		}
	}
	switch s.MTLSMode {
	case "":
	case v1alpha1.MTLSStrict, v1alpha1.MTLSPermissive:
		t.mesh.MTLSMode = model.MTLSMode(s.MTLSMode)
	default:
		problems = append(problems, fmt.Sprintf("spec.mtlsMode: %q is not valid; use STRICT or PERMISSIVE", s.MTLSMode))
	}
	if s.ServiceVIPRange != "" {
		p, err := netip.ParsePrefix(s.ServiceVIPRange)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("spec.serviceVIPRange: %q is not a CIDR, e.g. %s", s.ServiceVIPRange, DefaultServiceVIPRange))
		case p.Addr().Is4() && p.Bits() > 28, p.Addr().Is6() && p.Bits() > 120:
			problems = append(problems, fmt.Sprintf("spec.serviceVIPRange: %q is too small; use at least a /28 (IPv4) or /120 (IPv6)", s.ServiceVIPRange))
		default:
			t.vipRange = p.Masked()
		}
	}
	o := t.obj(ref)
	if len(problems) > 0 {
		setCondition(&o.Conditions, rejected(gen, ReasonInvalid, strings.Join(problems, "\n")+"\n(defaults used for these fields)"))
		return
	}
	setCondition(&o.Conditions, accepted(gen))
}

func validDNSish(s string) error {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return fmt.Errorf("must contain only lowercase letters, digits, '.', '-' and '_'")
		}
	}
	return nil
}

// Identity returns the SPIFFE ID of a service account.
func Identity(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// translateWorkloads validates Workload objects. An address may belong to
// one workload per network: the first by namespace/name keeps it.
func (t *translator) translateWorkloads() {
	type netAddr struct {
		network string
		addr    netip.Addr
	}
	owner := map[netAddr]model.Ref{}
	for _, w := range t.res.Workloads {
		gen := resources.Generation(w)
		ref := model.Ref{Namespace: w.Namespace, Name: w.Name}
		o := t.obj(status.ObjectRef{Group: v1alpha1.GroupVersion.Group, Kind: "Workload", Namespace: w.Namespace, Name: w.Name})
		var problems []string
		var addrs []netip.Addr
		for i, a := range w.Spec.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				problems = append(problems, fmt.Sprintf("spec.addresses[%d]: %q is not an IP address", i, a))
				continue
			}
			ip = ip.Unmap()
			if prev, ok := owner[netAddr{w.Spec.Network, ip}]; ok {
				o.Conditions = append(o.Conditions, rejected(gen, ReasonAddressConflict,
					fmt.Sprintf("spec.addresses[%d]: %s is already used by Workload %s on the same network", i, ip, prev)))
				addrs = nil
				break
			}
			addrs = append(addrs, ip)
		}
		if len(o.Conditions) > 0 {
			continue
		}
		if len(w.Spec.Addresses) == 0 {
			problems = append(problems, "spec.addresses: at least one IP address is required")
		}
		if w.Spec.Node == "" {
			problems = append(problems, "spec.node: required: the node whose proxy serves this workload")
		}
		for name, p := range w.Spec.Ports {
			if p < 1 || p > 65535 {
				problems = append(problems, fmt.Sprintf("spec.ports[%s]: %d is not a port (1-65535)", name, p))
			}
		}
		if len(problems) > 0 {
			slices.Sort(problems)
			setCondition(&o.Conditions, rejected(gen, ReasonInvalid, strings.Join(problems, "\n")))
			continue
		}
		for _, ip := range addrs {
			owner[netAddr{w.Spec.Network, ip}] = ref
		}
		sa := w.Spec.ServiceAccount
		if sa == "" {
			sa = "default"
		}
		t.mesh.Workloads = append(t.mesh.Workloads, model.Workload{
			Ref:            ref,
			UID:            string(w.UID),
			ServiceAccount: sa,
			Identity:       Identity(t.mesh.TrustDomain, w.Namespace, sa),
			Addresses:      addrs,
			Node:           w.Spec.Node,
			Network:        w.Spec.Network,
			Labels:         w.Labels,
			Locality:       model.Locality(w.Spec.Locality),
			Ports:          w.Spec.Ports,
		})
		setCondition(&o.Conditions, accepted(gen))
	}
	for i := range t.mesh.Workloads {
		t.workloads[t.mesh.Workloads[i].Ref] = &t.mesh.Workloads[i]
	}
}

// translateServices builds Services with their VIPs and endpoints. Explicit
// clusterIPs are honoured first (first Service by namespace/name wins a
// conflict), then the rest get a VIP allocated deterministically from the
// MeshConfig range: a hash of namespace/name, probing upwards on collision,
// so a Service keeps its VIP as others come and go.
func (t *translator) translateServices() {
	vipOwner := map[netip.Addr]model.Ref{}
	type pending struct {
		svc *corev1.Service
		m   model.Service
	}
	var built []pending
	for _, s := range t.res.Services {
		ref := model.Ref{Namespace: s.Namespace, Name: s.Name}
		gen := resources.Generation(s)
		sref := status.ObjectRef{Kind: "Service", Namespace: s.Namespace, Name: s.Name}
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			setCondition(&t.obj(sref).Conditions, rejected(gen, "UnsupportedValue",
				"spec.type: ExternalName Services are not part of the mesh; use a Service with a selector"))
			continue
		}
		m := model.Service{
			Ref:      ref,
			Hostname: s.Name + "." + s.Namespace + ".svc." + t.mesh.ClusterDomain,
			Selector: s.Spec.Selector,
			Labels:   s.Labels,
		}
		var problems []string
		explicit := s.Spec.ClusterIPs
		if len(explicit) == 0 && s.Spec.ClusterIP != "" {
			explicit = []string{s.Spec.ClusterIP}
		}
		for i, v := range explicit {
			if v == corev1.ClusterIPNone || v == "" {
				continue
			}
			ip, err := netip.ParseAddr(v)
			if err != nil {
				problems = append(problems, fmt.Sprintf("spec.clusterIPs[%d]: %q is not an IP address", i, v))
				continue
			}
			ip = ip.Unmap()
			if prev, ok := vipOwner[ip]; ok {
				setCondition(&t.obj(sref).Conditions, rejected(gen, ReasonVIPConflict,
					fmt.Sprintf("spec.clusterIP: %s is already the VIP of Service %s; pick another address or remove clusterIP to have one allocated", ip, prev)))
				problems = nil
				m.VIPs = nil
				goto next
			}
			m.VIPs = append(m.VIPs, ip)
		}
		for i, p := range s.Spec.Ports {
			sp := model.ServicePort{Name: p.Name, Port: p.Port, Protocol: string(p.Protocol)}
			if sp.Protocol == "" {
				sp.Protocol = string(corev1.ProtocolTCP)
			}
			if p.AppProtocol != nil {
				sp.AppProtocol = *p.AppProtocol
			}
			if p.Port < 1 || p.Port > 65535 {
				problems = append(problems, fmt.Sprintf("spec.ports[%d].port: %d is not a port (1-65535)", i, p.Port))
				continue
			}
			switch {
			case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
				sp.TargetPortName = p.TargetPort.StrVal
			case p.TargetPort.IntVal != 0:
				sp.TargetPort = p.TargetPort.IntVal
			default:
				sp.TargetPort = p.Port
			}
			m.Ports = append(m.Ports, sp)
		}
		if len(problems) > 0 {
			setCondition(&t.obj(sref).Conditions, rejected(gen, ReasonInvalid, strings.Join(problems, "\n")))
			continue
		}
		for _, ip := range m.VIPs {
			vipOwner[ip] = ref
		}
		built = append(built, pending{s, m})
	next:
	}
	for i := range built {
		p := &built[i]
		headless := p.svc.Spec.ClusterIP == corev1.ClusterIPNone
		if len(p.m.VIPs) == 0 && !headless {
			ip, ok := allocateVIP(t.vipRange, p.m.Ref, vipOwner)
			if !ok {
				setCondition(&t.obj(status.ObjectRef{Kind: "Service", Namespace: p.m.Namespace, Name: p.m.Name}).Conditions,
					rejected(resources.Generation(p.svc), ReasonVIPExhausted,
						fmt.Sprintf("no free VIP left in MeshConfig spec.serviceVIPRange %s; widen the range", t.vipRange)))
				continue
			}
			vipOwner[ip] = p.m.Ref
			p.m.VIPs = []netip.Addr{ip}
		}
		p.m.Endpoints = t.endpoints(&p.m)
		t.mesh.Services = append(t.mesh.Services, p.m)
	}
	for i := range t.mesh.Services {
		t.services[t.mesh.Services[i].Ref] = &t.mesh.Services[i]
	}
}

// allocateVIP picks hash(namespace/name) within the range and probes
// upwards past taken addresses (and the network/broadcast addresses).
func allocateVIP(r netip.Prefix, ref model.Ref, taken map[netip.Addr]model.Ref) (netip.Addr, bool) {
	hostBits := r.Addr().BitLen() - r.Bits()
	size := new(big.Int).Lsh(big.NewInt(1), uint(hostBits))
	h := fnv.New64a()
	h.Write([]byte(ref.Namespace + "/" + ref.Name))
	start := new(big.Int).Mod(new(big.Int).SetUint64(h.Sum64()), size)
	base := new(big.Int).SetBytes(r.Addr().AsSlice())
	limit := size.Uint64()
	if limit > 1<<20 {
		limit = 1 << 20 // enough probes for any realistic mesh
	}
	off := new(big.Int).Set(start)
	one := big.NewInt(1)
	for range limit {
		if off.Sign() != 0 && off.Cmp(new(big.Int).Sub(size, one)) != 0 {
			ip := addrFromInt(new(big.Int).Add(base, off), r.Addr().Is4())
			if _, used := taken[ip]; !used {
				return ip, true
			}
		}
		off.Add(off, one)
		if off.Cmp(size) == 0 {
			off.SetInt64(0)
		}
	}
	return netip.Addr{}, false
}

func addrFromInt(v *big.Int, v4 bool) netip.Addr {
	if v4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.Uint64()))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	v.FillBytes(b[:])
	return netip.AddrFrom16(b)
}

// labelIndex finds the workloads a selector picks without scanning the
// mesh: per namespace, "key=value" -> indices into mesh.Workloads, ascending.
type labelIndex map[string]map[string][]int

func newLabelIndex(ws []model.Workload) labelIndex {
	idx := labelIndex{}
	for i := range ws {
		w := &ws[i]
		byLabel := idx[w.Namespace]
		if byLabel == nil {
			byLabel = map[string][]int{}
			idx[w.Namespace] = byLabel
		}
		for k, v := range w.Labels {
			byLabel[k+"="+v] = append(byLabel[k+"="+v], i)
		}
	}
	return idx
}

// workloadLabels indexes t.mesh.Workloads once they are final.
func (t *translator) workloadLabels() labelIndex {
	if t.labels == nil {
		t.labels = newLabelIndex(t.mesh.Workloads)
	}
	return t.labels
}

// selected returns, in mesh order, the workloads of ns whose labels match
// every selector entry: it walks the shortest posting list and checks the rest.
func (idx labelIndex) selected(ns string, selector map[string]string, ws []model.Workload) []int {
	var shortest []int
	first := true
	for k, v := range selector {
		l := idx[ns][k+"="+v]
		if first || len(l) < len(shortest) {
			shortest, first = l, false
		}
	}
	var out []int
	for _, i := range shortest {
		if selects(selector, ws[i].Labels) {
			out = append(out, i)
		}
	}
	return out
}

// endpoints are the workloads of the service's namespace its selector
// picks. A Service without selector has no endpoints (as in Kubernetes,
// where such Services are managed by hand).
func (t *translator) endpoints(s *model.Service) []model.Endpoint {
	if len(s.Selector) == 0 {
		return nil
	}
	var eps []model.Endpoint
	for _, i := range t.workloadLabels().selected(s.Namespace, s.Selector, t.mesh.Workloads) {
		eps = append(eps, endpoint(s, &t.mesh.Workloads[i]))
	}
	return eps
}

// endpoint is workload w behind service s, its ports resolved.
func endpoint(s *model.Service, w *model.Workload) model.Endpoint {
	ep := model.Endpoint{
		Workload:  w.Ref,
		Addresses: w.Addresses,
		Node:      w.Node,
		Network:   w.Network,
		Identity:  w.Identity,
		Locality:  w.Locality,
		Ports:     []model.PortMapping{},
		Labels:    w.Labels,
	}
	for _, p := range s.Ports {
		target := p.TargetPort
		if p.TargetPortName != "" {
			target = w.Ports[p.TargetPortName]
		}
		if target != 0 {
			ep.Ports = append(ep.Ports, model.PortMapping{ServicePort: p.Port, TargetPort: target})
		}
	}
	return ep
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// bindWaypoints applies use-waypoint labels (ambit's or Istio's): the
// workload's or service's own label wins over its namespace's; the value
// "none" opts out.
func (t *translator) bindWaypoints() {
	for i := range t.mesh.Services {
		s := &t.mesh.Services[i]
		src := t.res.Service(s.Namespace, s.Name)
		b, cond := t.waypointFor(s.Namespace, src.Labels, "service", "service")
		s.Waypoint = b
		if cond != nil {
			cond.ObservedGeneration = resources.Generation(src)
			setCondition(&t.obj(status.ObjectRef{Kind: "Service", Namespace: s.Namespace, Name: s.Name}).Conditions, *cond)
		}
	}
	for i := range t.mesh.Workloads {
		w := &t.mesh.Workloads[i]
		if _, isGatewayPod := w.Labels["gateway.networking.k8s.io/gateway-name"]; isGatewayPod {
			continue // a waypoint never sends its own traffic through a waypoint
		}
		b, cond := t.waypointFor(w.Namespace, w.Labels, "workload", "workload")
		w.Waypoint = b
		if cond != nil {
			src := t.workloadObject(w.Ref)
			cond.ObservedGeneration = resources.Generation(src)
			setCondition(&t.obj(status.ObjectRef{Group: v1alpha1.GroupVersion.Group, Kind: "Workload", Namespace: w.Namespace, Name: w.Name}).Conditions, *cond)
		}
	}
}

func (t *translator) workloadObject(ref model.Ref) *v1alpha1.Workload {
	i, _ := slices.BinarySearchFunc(t.res.Workloads, ref, func(w *v1alpha1.Workload, r model.Ref) int {
		return compareRef(model.Ref{Namespace: w.Namespace, Name: w.Name}, r)
	})
	return t.res.Workloads[i]
}

// waypointLabel is the use-waypoint label read from one object.
type waypointLabel struct {
	key, name, namespace string // key: the spelling the name was read from
	ignored              string // an Istio label overridden by ambit's, as key=value
}

// useWaypointLabel reads an object's binding labels. ambit's spelling wins
// over Istio's on the same object, and each name is paired with its own
// spelling's -namespace label only, so a binding is never half of each.
func useWaypointLabel(labels map[string]string) (waypointLabel, bool) {
	if name := labels[LabelUseWaypoint]; name != "" {
		l := waypointLabel{key: LabelUseWaypoint, name: name, namespace: labels[LabelUseWaypointNamespace]}
		if other := labels[LabelIstioUseWaypoint]; other != "" &&
			(other != name || labels[LabelIstioUseWaypointNamespace] != l.namespace) {
			l.ignored = LabelIstioUseWaypoint + "=" + other
		}
		return l, true
	}
	if name := labels[LabelIstioUseWaypoint]; name != "" {
		return waypointLabel{key: LabelIstioUseWaypoint, name: name, namespace: labels[LabelIstioUseWaypointNamespace]}, true
	}
	return waypointLabel{}, false
}

// waypointFor resolves the binding for an object with the given labels in
// namespace ns. kind is "service" or "workload" (what the waypoint must be
// for); from names where an own label sits.
func (t *translator) waypointFor(ns string, labels map[string]string, kind, from string) (*model.WaypointBinding, *status.Condition) {
	l, ok := useWaypointLabel(labels)
	if !ok {
		nsObj := t.res.Namespace(ns)
		if nsObj == nil {
			return nil, nil
		}
		if l, ok = useWaypointLabel(nsObj.Labels); !ok {
			return nil, nil
		}
		from = "namespace"
	}
	if l.name == "none" {
		return nil, nil
	}
	wpNS := l.namespace
	if wpNS == "" {
		wpNS = ns
	}
	ref := model.Ref{Namespace: wpNS, Name: l.name}
	gw, ok := t.gateways[ref]
	if !ok || gw.Class != model.ClassWaypoint {
		return nil, &status.Condition{Type: ConditionWaypointBound, Status: status.False, Reason: ReasonWaypointMissing,
			Message: fmt.Sprintf("%s label %s=%s: Gateway %s %s", from, l.key, l.name, ref, t.whyNotWaypoint(ref))}
	}
	if gw.WaypointFor != kind && gw.WaypointFor != "all" {
		if from == "namespace" {
			return nil, nil // a namespace label binds only what the waypoint serves
		}
		return nil, &status.Condition{Type: ConditionWaypointBound, Status: status.False, Reason: ReasonWaypointWrong,
			Message: fmt.Sprintf("waypoint %s serves %q traffic (label %s); set it to %q or \"all\"", ref, gw.WaypointFor, LabelWaypointFor, kind)}
	}
	msg := fmt.Sprintf("bound to waypoint %s (from %s label %s)", ref, from, l.key)
	if l.ignored != "" {
		msg += fmt.Sprintf("; %s ignored: %s takes precedence", l.ignored, LabelUseWaypoint)
	}
	return &model.WaypointBinding{Gateway: ref, From: from},
		&status.Condition{Type: ConditionWaypointBound, Status: status.True, Reason: ReasonWaypointBound, Message: msg}
}

// whyNotWaypoint says why ref is not among the accepted waypoints, so a
// label left pointing at, say, an istio-waypoint Gateway is fixed at once.
func (t *translator) whyNotWaypoint(ref model.Ref) string {
	gw := t.res.Gateway(ref.Namespace, ref.Name)
	switch {
	case gw == nil:
		return "does not exist; create it with gatewayClassName " + ClassNameWaypoint
	case string(gw.Spec.GatewayClassName) != ClassNameWaypoint:
		return fmt.Sprintf("has gatewayClassName %s; a waypoint needs gatewayClassName %s", gw.Spec.GatewayClassName, ClassNameWaypoint)
	default:
		return "is not an accepted waypoint; see its status"
	}
}

package translate

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

// Protocols beyond the Gateway API core set.
const (
	// ProtocolHBONE is the waypoint listener protocol, as in Istio.
	ProtocolHBONE = "HBONE"
	// PortHBONE is the only port an HBONE listener may use.
	PortHBONE = 15008
)

// Route kinds ambit serves.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
	KindTLSRoute  = "TLSRoute"
	KindTCPRoute  = "TCPRoute"
)

// reservedPorts are used by every ambit proxy itself (admin, metrics,
// readiness) and so cannot be listener ports.
var reservedPorts = map[int32]string{15000: "admin", 15020: "metrics", 15021: "readiness"}

// Values of the ambit.dev/waypoint-for label.
var waypointForValues = []string{"service", "workload", "all", "none"}

func gatewayStatusRef(ns, name string) status.ObjectRef {
	return status.ObjectRef{Group: gwGroup, Kind: "Gateway", Namespace: ns, Name: name}
}

// gatewayClass tells whether a Gateway is ambit's and in which role. A
// Gateway naming one of ambit's class names is ours even when no
// GatewayClass object exists: in file mode nobody has to write one. When a
// GatewayClass of that name exists but belongs to another controller, the
// Gateway is not ours and gets no status from us. classProblem is set when
// our GatewayClass object exists but is not accepted.
func (t *translator) gatewayClass(gw *gwv1.Gateway) (class model.GatewayClass, ours bool, classProblem string) {
	name := string(gw.Spec.GatewayClassName)
	switch name {
	case ClassNameIngress:
		class = model.ClassIngress
	case ClassNameWaypoint:
		class = model.ClassWaypoint
	default:
		return "", false, ""
	}
	gc := t.res.GatewayClass(name)
	if gc == nil {
		return class, true, ""
	}
	if string(gc.Spec.ControllerName) != ControllerName {
		return "", false, ""
	}
	if gc.Spec.ParametersRef != nil {
		return class, true, fmt.Sprintf("GatewayClass %s is not accepted: ambit takes no parametersRef", name)
	}
	return class, true, ""
}

// translateGatewayClasses writes the status of GatewayClasses that name
// ambit's controller.
func (t *translator) translateGatewayClasses() {
	for _, gc := range t.res.GatewayClasses {
		if string(gc.Spec.ControllerName) != ControllerName {
			continue
		}
		gen := resources.Generation(gc)
		o := t.obj(status.ObjectRef{Group: gwGroup, Kind: "GatewayClass", Name: gc.Name})
		c := status.Condition{Type: string(gwv1.GatewayClassConditionStatusAccepted), Status: status.True,
			Reason: string(gwv1.GatewayClassReasonAccepted), ObservedGeneration: gen}
		switch {
		case gc.Name != ClassNameIngress && gc.Name != ClassNameWaypoint:
			c.Status, c.Reason = status.False, string(gwv1.GatewayClassReasonUnsupported)
			c.Message = fmt.Sprintf("ambit serves only the GatewayClasses %q (ingress) and %q (waypoints); rename this class or use one of them",
				ClassNameIngress, ClassNameWaypoint)
		case gc.Spec.ParametersRef != nil:
			c.Status, c.Reason = status.False, string(gwv1.GatewayClassReasonInvalidParameters)
			c.Message = "spec.parametersRef: ambit takes no parameters; remove it"
		}
		setCondition(&o.Conditions, c)
	}
}

// translateGateways validates the Gateways of ambit's classes, writes their
// status and puts the accepted ones, with their programmed listeners, into
// the model. Routes attach later (translateRoutes).
func (t *translator) translateGateways() {
	t.translateGatewayClasses()
	var built []model.Gateway
	for _, gw := range t.res.Gateways {
		class, ours, classProblem := t.gatewayClass(gw)
		if !ours {
			continue
		}
		if g, ok := t.translateGateway(gw, class, classProblem); ok {
			built = append(built, g)
		}
	}
	start := len(t.mesh.Gateways)
	t.mesh.Gateways = append(t.mesh.Gateways, built...)
	for i := start; i < len(t.mesh.Gateways); i++ {
		t.gateways[t.mesh.Gateways[i].Ref] = &t.mesh.Gateways[i]
	}
}

func (t *translator) translateGateway(gw *gwv1.Gateway, class model.GatewayClass, classProblem string) (model.Gateway, bool) {
	gen := resources.Generation(gw)
	o := t.obj(gatewayStatusRef(gw.Namespace, gw.Name))
	cond := func(typ, st, reason, msg string) status.Condition {
		return status.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: gen}
	}
	reject := func(reason, msg string) (model.Gateway, bool) {
		setCondition(&o.Conditions, cond("Accepted", status.False, reason, msg))
		setCondition(&o.Conditions, cond("Programmed", status.False, string(gwv1.GatewayReasonInvalid),
			"the Gateway is not accepted; see its Accepted condition"))
		return model.Gateway{}, false
	}
	if classProblem != "" {
		return reject(string(gwv1.GatewayReasonInvalid), classProblem)
	}
	g := model.Gateway{
		Ref:      model.Ref{Namespace: gw.Namespace, Name: gw.Name},
		Class:    class,
		Identity: Identity(t.mesh.TrustDomain, gw.Namespace, gw.Name),
	}
	if class == model.ClassWaypoint {
		g.WaypointFor = "service"
		if v, ok := gw.Labels[LabelWaypointFor]; ok {
			if !slices.Contains(waypointForValues, v) {
				return reject(string(gwv1.GatewayReasonInvalid), fmt.Sprintf("label %s: %q is not valid; use one of %s",
					LabelWaypointFor, v, strings.Join(waypointForValues, ", ")))
			}
			g.WaypointFor = v
		}
	}
	if len(gw.Spec.Listeners) == 0 {
		return reject(string(gwv1.GatewayReasonListenersNotValid), "spec.listeners: at least one listener is required")
	}
	checks := t.checkListeners(gw, class)
	o.Listeners = o.Listeners[:0]
	var bad, good []string
	accepted := 0
	for i, c := range checks {
		o.Listeners = append(o.Listeners, c.status(gen))
		if c.accepted() {
			accepted++
		}
		if c.programmed() {
			good = append(good, c.name)
			g.Listeners = append(g.Listeners, checks[i].model)
			for _, crt := range c.certs {
				if !slices.ContainsFunc(g.Certificates, func(x model.Certificate) bool { return x.Ref == crt.Ref }) {
					g.Certificates = append(g.Certificates, crt)
				}
			}
		} else {
			bad = append(bad, fmt.Sprintf("%s (%s)", c.name, c.problem()))
		}
	}
	slices.SortFunc(g.Certificates, func(a, b model.Certificate) int { return compareRef(a.Ref, b.Ref) })
	// A Gateway is accepted when one listener is: routes attach to an
	// accepted listener (and count in its attachedRoutes) even while a
	// missing certificate keeps it from being programmed.
	if accepted == 0 {
		return reject(string(gwv1.GatewayReasonListenersNotValid), "no listener is valid: "+strings.Join(bad, "; "))
	}
	switch {
	case len(bad) == 0:
		setCondition(&o.Conditions, cond("Accepted", status.True, string(gwv1.GatewayReasonAccepted), ""))
	case len(good) == 0:
		setCondition(&o.Conditions, cond("Accepted", status.True, string(gwv1.GatewayReasonListenersNotValid),
			"no listener is programmed: "+strings.Join(bad, "; ")))
	default:
		setCondition(&o.Conditions, cond("Accepted", status.True, string(gwv1.GatewayReasonListenersNotValid),
			fmt.Sprintf("listeners not programmed: %s; serving: %s", strings.Join(bad, "; "), strings.Join(good, ", "))))
	}
	if len(good) == 0 {
		setCondition(&o.Conditions, cond("Programmed", status.False, string(gwv1.GatewayReasonInvalid),
			"no listener is programmed; see the listeners' conditions"))
	} else {
		setCondition(&o.Conditions, cond("Programmed", status.True, string(gwv1.GatewayReasonProgrammed), ""))
	}
	if insecureFrontend(gw) {
		setCondition(&o.Conditions, cond(string(gwv1.GatewayConditionInsecureFrontendValidationMode), status.True,
			string(gwv1.GatewayReasonConfigurationChanged), "spec.tls.frontend: mode AllowInsecureFallback admits clients without a valid certificate"))
	}
	return g, true
}

// listenerCheck is the outcome of validating one listener.
type listenerCheck struct {
	name  string
	model model.Listener
	kinds []string
	// Problems, by condition; empty reason means the condition holds.
	acceptReason, acceptMsg     string
	refsReasons, refsMsgs       []string
	conflictReason, conflictMsg string
	hbone                       bool
	// certBlocked: a certificateRef is missing, not permitted or of the
	// wrong kind, so the listener is not programmed. A Secret that exists
	// but holds a malformed certificate does not block (see
	// checkCertificateRef).
	certBlocked bool
	// certs are the Secrets the listener serves from.
	certs []model.Certificate
}

// accepted: the listener's Accepted condition is True.
func (c *listenerCheck) accepted() bool {
	return c.acceptReason == "" && c.conflictReason == ""
}

func (c *listenerCheck) programmed() bool {
	return c.accepted() && !c.certBlocked && (len(c.kinds) > 0 || c.hbone)
}

func (c *listenerCheck) problem() string {
	switch {
	case c.conflictReason != "":
		return c.conflictMsg
	case c.acceptReason != "":
		return c.acceptMsg
	case len(c.refsMsgs) > 0:
		return strings.Join(c.refsMsgs, "; ")
	}
	return "no supported route kinds"
}

func (c *listenerCheck) status(gen int64) status.Listener {
	cond := func(typ, st, reason, msg string) status.Condition {
		return status.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: gen}
	}
	l := status.Listener{Name: c.name, SupportedKinds: slices.Clone(c.kinds)}
	if l.SupportedKinds == nil {
		l.SupportedKinds = []string{}
	}
	switch {
	case c.conflictReason != "":
		l.Conditions = append(l.Conditions, cond("Accepted", status.False, string(gwv1.ListenerReasonPortUnavailable), c.conflictMsg))
	case !c.accepted():
		l.Conditions = append(l.Conditions, cond("Accepted", status.False, c.acceptReason, c.acceptMsg))
	default:
		l.Conditions = append(l.Conditions, cond("Accepted", status.True, string(gwv1.ListenerReasonAccepted), ""))
	}
	if c.programmed() {
		l.Conditions = append(l.Conditions, cond("Programmed", status.True, string(gwv1.ListenerReasonProgrammed), ""))
	} else {
		l.Conditions = append(l.Conditions, cond("Programmed", status.False, string(gwv1.ListenerReasonInvalid), c.problem()))
	}
	if len(c.refsReasons) > 0 {
		l.Conditions = append(l.Conditions, cond("ResolvedRefs", status.False, c.refsReasons[0], strings.Join(c.refsMsgs, "\n")))
	} else {
		l.Conditions = append(l.Conditions, cond("ResolvedRefs", status.True, string(gwv1.ListenerReasonResolvedRefs), ""))
	}
	if c.conflictReason != "" {
		l.Conditions = append(l.Conditions, cond("Conflicted", status.True, c.conflictReason, c.conflictMsg))
	} else {
		l.Conditions = append(l.Conditions, cond("Conflicted", status.False, string(gwv1.ListenerReasonNoConflicts), ""))
	}
	return l
}

// listenerKinds are the route kinds a listener protocol carries.
func listenerKinds(protocol string, mode gwv1.TLSModeType) []string {
	switch gwv1.ProtocolType(protocol) {
	case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
		return []string{KindHTTPRoute, KindGRPCRoute}
	case gwv1.TLSProtocolType:
		if mode == gwv1.TLSModeTerminate {
			return []string{KindTLSRoute, KindTCPRoute}
		}
		return []string{KindTLSRoute}
	case gwv1.TCPProtocolType:
		return []string{KindTCPRoute}
	}
	return nil
}

// checkListeners validates every listener of a Gateway and finds the
// conflicts between them.
func (t *translator) checkListeners(gw *gwv1.Gateway, class model.GatewayClass) []listenerCheck {
	checks := make([]listenerCheck, len(gw.Spec.Listeners))
	seen := map[string]bool{}
	for i, l := range gw.Spec.Listeners {
		c := &checks[i]
		c.name = string(l.Name)
		field := fmt.Sprintf("spec.listeners[%d]", i)
		fail := func(reason, format string, args ...any) {
			if c.acceptReason == "" {
				c.acceptReason, c.acceptMsg = reason, fmt.Sprintf(format, args...)
			}
		}
		unsupported := string(gwv1.ListenerReasonUnsupportedValue)
		protocol := string(l.Protocol)
		hostname := string(deref(l.Hostname, ""))
		c.model = model.Listener{Name: c.name, Port: l.Port, Protocol: protocol, Hostname: hostname}
		if seen[c.name] {
			fail(unsupported, "%s.name: %q is used by an earlier listener; listener names must be unique", field, c.name)
		}
		seen[c.name] = true
		switch gwv1.ProtocolType(protocol) {
		case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType, gwv1.TLSProtocolType, gwv1.TCPProtocolType:
		case gwv1.UDPProtocolType:
			fail(string(gwv1.ListenerReasonUnsupportedProtocol), "%s.protocol: UDP listeners are not supported yet (ambit has no UDPRoute support)", field)
		case ProtocolHBONE:
			c.hbone = true
			if class != model.ClassWaypoint {
				fail(string(gwv1.ListenerReasonUnsupportedProtocol), "%s.protocol: HBONE listeners belong to waypoints (gatewayClassName %s)", field, ClassNameWaypoint)
			} else if l.Port != PortHBONE {
				fail(string(gwv1.ListenerReasonPortUnavailable), "%s.port: HBONE listeners must use port %d, not %d", field, PortHBONE, l.Port)
			}
		default:
			fail(string(gwv1.ListenerReasonUnsupportedProtocol), "%s.protocol: %q is not supported; use HTTP, HTTPS, TLS or TCP (or HBONE on waypoints)", field, protocol)
		}
		switch {
		case l.Port < 1 || l.Port > 65535:
			fail(unsupported, "%s.port: %d is not a port (1-65535)", field, l.Port)
		case reservedPorts[l.Port] != "":
			fail(string(gwv1.ListenerReasonPortUnavailable), "%s.port: %d is the proxy's own %s port; pick another port", field, l.Port, reservedPorts[l.Port])
		case class == model.ClassWaypoint && l.Port == PortHBONE && !c.hbone:
			fail(string(gwv1.ListenerReasonPortUnavailable), "%s.port: %d is the waypoint's HBONE port; only an HBONE listener may use it", field, l.Port)
		}
		if hostname != "" {
			switch {
			case protocol == string(gwv1.TCPProtocolType) || protocol == string(gwv1.UDPProtocolType) || c.hbone:
				fail(unsupported, "%s.hostname: must not be set for protocol %s", field, protocol)
			case !validHostname(hostname):
				fail(unsupported, "%s.hostname: %q is not a valid hostname (DNS name, optionally starting with \"*.\"; no IP addresses)", field, hostname)
			}
		}
		mode := t.checkListenerTLS(gw, c, l, field, fail)
		c.kinds = t.checkAllowedRoutes(c, l, mode, field, fail)
	}
	findConflicts(gw.Spec.Listeners, checks)
	return checks
}

// checkListenerTLS validates the tls block and certificateRefs and fills the
// model's TLS settings; it returns the effective mode.
func (t *translator) checkListenerTLS(gw *gwv1.Gateway, c *listenerCheck, l gwv1.Listener, field string, fail func(string, string, ...any)) gwv1.TLSModeType {
	unsupported := string(gwv1.ListenerReasonUnsupportedValue)
	switch gwv1.ProtocolType(l.Protocol) {
	case gwv1.HTTPSProtocolType, gwv1.TLSProtocolType:
	default:
		if l.TLS != nil {
			fail(unsupported, "%s.tls: must not be set for protocol %s", field, l.Protocol)
		}
		return ""
	}
	if l.TLS == nil {
		fail(unsupported, "%s.tls: required for protocol %s", field, l.Protocol)
		return ""
	}
	mode := deref(l.TLS.Mode, gwv1.TLSModeTerminate)
	switch {
	case l.Protocol == gwv1.TLSProtocolType && l.TLS.Mode == nil:
		fail(unsupported, "%s.tls.mode: required for protocol TLS; use Terminate or Passthrough", field)
		return ""
	case mode != gwv1.TLSModeTerminate && mode != gwv1.TLSModePassthrough:
		fail(unsupported, "%s.tls.mode: %q is not valid; use Terminate or Passthrough", field, mode)
		return ""
	case l.Protocol == gwv1.HTTPSProtocolType && mode == gwv1.TLSModePassthrough:
		fail(unsupported, "%s.tls.mode: HTTPS listeners terminate TLS; use protocol TLS for Passthrough", field)
		return ""
	}
	c.model.TLS = &model.ListenerTLS{Mode: string(mode)}
	if mode == gwv1.TLSModePassthrough {
		return mode // certificateRefs are ignored in Passthrough, as the spec says
	}
	if len(l.TLS.CertificateRefs) == 0 {
		c.certBlocked = true
		c.refsReasons = append(c.refsReasons, string(gwv1.ListenerReasonInvalidCertificateRef))
		c.refsMsgs = append(c.refsMsgs, field+".tls.certificateRefs: at least one certificate is required in mode Terminate")
	}
	for j, ref := range l.TLS.CertificateRefs {
		f := fmt.Sprintf("%s.tls.certificateRefs[%d]", field, j)
		reason, msg, cert := t.checkCertificateRef(gw, f, ref)
		if reason != "" {
			c.refsReasons = append(c.refsReasons, reason)
			c.refsMsgs = append(c.refsMsgs, msg)
		}
		if cert == nil {
			c.certBlocked = true
			continue
		}
		c.model.TLS.Certificates = append(c.model.TLS.Certificates, cert.Ref)
		c.certs = append(c.certs, *cert)
	}
	if l.Protocol == gwv1.HTTPSProtocolType {
		t.checkClientValidation(gw, c, l, fail)
	}
	return mode
}

// checkAllowedRoutes returns the route kinds the listener admits.
func (t *translator) checkAllowedRoutes(c *listenerCheck, l gwv1.Listener, mode gwv1.TLSModeType, field string, fail func(string, string, ...any)) []string {
	supported := listenerKinds(string(l.Protocol), mode)
	ar := l.AllowedRoutes
	if ar != nil && ar.Namespaces != nil {
		switch from := deref(ar.Namespaces.From, gwv1.NamespacesFromSame); from {
		case gwv1.NamespacesFromAll, gwv1.NamespacesFromSame:
		case gwv1.NamespacesFromSelector:
			if ar.Namespaces.Selector == nil {
				fail(string(gwv1.ListenerReasonUnsupportedValue), "%s.allowedRoutes.namespaces.selector: required when from is Selector", field)
			} else if _, err := metav1.LabelSelectorAsSelector(ar.Namespaces.Selector); err != nil {
				fail(string(gwv1.ListenerReasonUnsupportedValue), "%s.allowedRoutes.namespaces.selector: %v", field, err)
			}
		default:
			fail(string(gwv1.ListenerReasonUnsupportedValue), "%s.allowedRoutes.namespaces.from: %q is not valid; use Same, All or Selector", field, from)
		}
	}
	if ar == nil || len(ar.Kinds) == 0 {
		return supported
	}
	var kinds []string
	for j, k := range ar.Kinds {
		group := string(deref(k.Group, gwGroup))
		if group == gwGroup && slices.Contains(supported, string(k.Kind)) {
			if !slices.Contains(kinds, string(k.Kind)) {
				kinds = append(kinds, string(k.Kind))
			}
			continue
		}
		c.refsReasons = append(c.refsReasons, string(gwv1.ListenerReasonInvalidRouteKinds))
		c.refsMsgs = append(c.refsMsgs, fmt.Sprintf("%s.allowedRoutes.kinds[%d]: %s is not supported on a %s listener; supported: %s",
			field, j, groupKind(group, string(k.Kind)), l.Protocol, strings.Join(supported, ", ")))
	}
	return kinds
}

// protocolFamily groups protocols that can share a port: TLS-based
// listeners are told apart by SNI, HTTP by Host, the others not at all.
func protocolFamily(p string) string {
	switch gwv1.ProtocolType(p) {
	case gwv1.HTTPSProtocolType, gwv1.TLSProtocolType:
		return "tls"
	}
	return strings.ToLower(p)
}

// findConflicts marks listeners that are not distinct (same port and
// incompatible protocols, or same port, protocol family and hostname). All
// of the conflicting listeners are refused; none wins, as the spec demands.
// Listeners already refused for other reasons take no part.
func findConflicts(ls []gwv1.Listener, checks []listenerCheck) {
	for i := range ls {
		for j := i + 1; j < len(ls); j++ {
			a, b := &checks[i], &checks[j]
			if ls[i].Port != ls[j].Port || a.acceptReason != "" || b.acceptReason != "" {
				continue
			}
			fa, fb := protocolFamily(string(ls[i].Protocol)), protocolFamily(string(ls[j].Protocol))
			if (fa == "udp") != (fb == "udp") {
				continue // different transports share port numbers freely
			}
			var reason, what string
			switch {
			case fa != fb:
				reason, what = string(gwv1.ListenerReasonProtocolConflict), "protocol"
			case fa == "http" || fa == "tls":
				if deref(ls[i].Hostname, "") != deref(ls[j].Hostname, "") {
					continue
				}
				reason, what = string(gwv1.ListenerReasonHostnameConflict), "hostname"
			default:
				reason, what = string(gwv1.ListenerReasonHostnameConflict), "port"
			}
			for _, p := range []struct {
				c     *listenerCheck
				other string
			}{{a, b.name}, {b, a.name}} {
				if p.c.conflictReason == string(gwv1.ListenerReasonProtocolConflict) {
					continue // the stronger reason stays
				}
				p.c.conflictReason = reason
				p.c.conflictMsg = fmt.Sprintf("port %d: %s conflicts with listener %q; listeners sharing a port need compatible protocols and distinct hostnames",
					ls[i].Port, what, p.other)
			}
		}
	}
}

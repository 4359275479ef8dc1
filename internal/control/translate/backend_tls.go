package translate

import (
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

// BackendTLSPolicy condition reasons the gateway-api module does not name.
const (
	backendTLSReasonConflicted     = string(gwv1.PolicyReasonConflicted)
	backendTLSReasonInvalid        = string(gwv1.PolicyReasonInvalid)
	backendTLSReasonTargetNotFound = string(gwv1.PolicyReasonTargetNotFound)
)

// tlsTarget is what one targetRef selects: a Service, and one of its ports
// by name or ("") all of them.
type tlsTarget struct {
	service model.Ref
	section string
}

// backendTLSPolicies attaches each accepted BackendTLSPolicy to the ports
// of the Services it targets, and writes every policy's status. It runs
// after the routes, whose backends decide the policy's ancestors.
//
// A policy whose CA references are all unusable, or whose validation is
// invalid, is still attached without any trusted CA, so connections to the
// backend fail (the spec: they MUST fail with a 5xx) rather than fall back
// to plaintext. A policy that loses a conflict is not attached.
func (t *translator) backendTLSPolicies() {
	if len(t.res.BackendTLSPolicies) == 0 {
		return
	}
	users := t.backendUsers()
	type candidate struct {
		p    *gwv1.BackendTLSPolicy
		tls  model.BackendTLS
		tgts []tlsTarget
	}
	var cands []*candidate
	winners := map[tlsTarget]*candidate{}
	// Precedence (the spec): the older creation timestamp, then
	// namespace/name; the first policy to claim a target keeps it.
	policies := slices.Clone(t.res.BackendTLSPolicies)
	slices.SortStableFunc(policies, func(a, b *gwv1.BackendTLSPolicy) int {
		return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
	})
	for _, p := range policies {
		gen := resources.Generation(p)
		accepted := status.Condition{Type: string(gwv1.PolicyConditionAccepted), Status: status.True, Reason: string(gwv1.PolicyReasonAccepted),
			Message: "TLS to the targeted Service ports is verified with this policy", ObservedGeneration: gen}
		resolved := status.Condition{Type: string(gwv1.BackendTLSPolicyConditionResolvedRefs), Status: status.True,
			Reason: string(gwv1.BackendTLSPolicyReasonResolvedRefs), Message: "every CA certificate reference resolved", ObservedGeneration: gen}
		reject := func(c *status.Condition, reason, msg string) {
			if c.Status == status.True { // keep the first problem
				c.Status, c.Reason, c.Message = status.False, reason, msg
			}
		}
		tls := model.BackendTLS{Policy: model.Ref{Namespace: p.Namespace, Name: p.Name}}
		if msg := t.backendTLSValidation(p, &tls, &resolved); msg != "" {
			reason := backendTLSReasonInvalid
			if strings.HasPrefix(msg, "no valid") {
				reason = string(gwv1.BackendTLSPolicyReasonNoValidCACertificate)
			}
			reject(&accepted, reason, msg+"; connections to the targeted ports fail until it is fixed")
		}
		c := &candidate{p: p, tls: tls}
		var targeted []model.Ref
		for i, ref := range p.Spec.TargetRefs {
			field := fmt.Sprintf("spec.targetRefs[%d]", i)
			if ref.Group != "" || ref.Kind != "Service" {
				reject(&accepted, backendTLSReasonInvalid, fmt.Sprintf("%s: %s is not supported; target a core Service (group \"\", kind Service)", field, groupKind(string(ref.Group), string(ref.Kind))))
				continue
			}
			svc := t.services[model.Ref{Namespace: p.Namespace, Name: string(ref.Name)}]
			if svc == nil {
				reject(&accepted, backendTLSReasonTargetNotFound, fmt.Sprintf("%s: Service %s/%s not found", field, p.Namespace, ref.Name))
				continue
			}
			section := ""
			if ref.SectionName != nil {
				section = string(*ref.SectionName)
				if !slices.ContainsFunc(svc.Ports, func(sp model.ServicePort) bool { return sp.Name == section }) {
					reject(&accepted, backendTLSReasonTargetNotFound, fmt.Sprintf("%s: Service %s/%s has no port named %q", field, p.Namespace, ref.Name, section))
					continue
				}
			}
			c.tgts = append(c.tgts, tlsTarget{svc.Ref, section})
			targeted = append(targeted, svc.Ref)
		}
		for _, tg := range c.tgts {
			if w := winners[tg]; w != nil {
				reject(&accepted, backendTLSReasonConflicted, fmt.Sprintf("BackendTLSPolicy %s/%s, older or first by name, already targets Service %s%s", w.p.Namespace, w.p.Name, tg.service, sectionSuffix(tg.section)))
			}
		}
		if accepted.Reason != backendTLSReasonConflicted {
			for _, tg := range c.tgts {
				winners[tg] = c
			}
			cands = append(cands, c)
		}
		t.backendTLSStatus(p, users, targeted, accepted, resolved)
	}
	// A port takes the policy naming it, else the one for the whole Service.
	for _, c := range cands {
		for _, tg := range c.tgts {
			if winners[tg] != c {
				continue
			}
			svc := t.services[tg.service]
			for _, sp := range svc.Ports {
				if tg.section != "" && sp.Name != tg.section || tg.section == "" && sp.Name != "" && winners[tlsTarget{tg.service, sp.Name}] != nil {
					continue
				}
				tls := c.tls
				tls.Port = sp.Port
				svc.TLS = append(svc.TLS, tls)
			}
		}
	}
	for i := range t.mesh.Services {
		slices.SortFunc(t.mesh.Services[i].TLS, func(a, b model.BackendTLS) int { return cmp.Compare(a.Port, b.Port) })
	}
}

func sectionSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " port " + s
}

// backendTLSValidation fills tls from the policy's validation and returns
// why the policy cannot be accepted ("" when it can); CA reference
// problems also go into resolved.
func (t *translator) backendTLSValidation(p *gwv1.BackendTLSPolicy, tls *model.BackendTLS, resolved *status.Condition) string {
	v := p.Spec.Validation
	var problems []string
	host := string(v.Hostname)
	if host == "" {
		problems = append(problems, "spec.validation.hostname is required (the SNI and, without subjectAltNames, the name the certificate must hold)")
	} else if errs := validation.IsDNS1123Subdomain(host); len(errs) > 0 {
		problems = append(problems, fmt.Sprintf("spec.validation.hostname %q: %s", host, errs[0]))
	}
	tls.SNI = host
	for i, san := range v.SubjectAltNames {
		field := fmt.Sprintf("spec.validation.subjectAltNames[%d]", i)
		switch san.Type {
		case gwv1.HostnameSubjectAltNameType:
			if san.Hostname == "" {
				problems = append(problems, field+": type Hostname needs hostname")
				continue
			}
			tls.SubjectAltNames = append(tls.SubjectAltNames, model.SubjectAltName{Hostname: string(san.Hostname)})
		case gwv1.URISubjectAltNameType:
			if !strings.Contains(string(san.URI), ":") {
				problems = append(problems, fmt.Sprintf("%s: type URI needs uri with a scheme, e.g. spiffe://cluster.local/ns/default/sa/web", field))
				continue
			}
			tls.SubjectAltNames = append(tls.SubjectAltNames, model.SubjectAltName{URI: string(san.URI)})
		default:
			problems = append(problems, fmt.Sprintf("%s: type %q: want Hostname or URI", field, san.Type))
		}
	}
	wk := v.WellKnownCACertificates
	switch {
	case wk != nil && *wk != "" && len(v.CACertificateRefs) > 0:
		problems = append(problems, "spec.validation: set caCertificateRefs or wellKnownCACertificates, not both")
	case wk != nil && *wk == gwv1.WellKnownCACertificatesSystem:
		tls.SystemRoots = true
	case wk != nil && *wk != "":
		problems = append(problems, fmt.Sprintf("spec.validation.wellKnownCACertificates %q: only System is supported", *wk))
	case len(v.CACertificateRefs) == 0:
		problems = append(problems, "spec.validation: set caCertificateRefs (a ConfigMap with ca.crt) or wellKnownCACertificates: System")
	default:
		valid := 0
		for i, ref := range v.CACertificateRefs {
			pemData, reason, msg := t.caCertificate(p.Namespace, ref)
			if reason != "" {
				if resolved.Status == status.True {
					resolved.Status, resolved.Reason = status.False, reason
					resolved.Message = fmt.Sprintf("spec.validation.caCertificateRefs[%d]: %s", i, msg)
				}
				continue
			}
			valid++
			tls.CAPEM = append(tls.CAPEM, pemData...)
		}
		if valid == 0 {
			problems = append(problems, "no valid CA certificate: "+resolved.Message)
		}
	}
	if len(problems) > 0 {
		// An invalid policy trusts nothing, so connections fail closed.
		tls.CAPEM, tls.SystemRoots = nil, false
	}
	return strings.Join(problems, "; ")
}

// caCertificate reads a caCertificateRefs entry: a ConfigMap of the
// policy's namespace with a PEM bundle of CA certificates in ca.crt.
func (t *translator) caCertificate(ns string, ref gwv1.LocalObjectReference) (pemData []byte, reason, msg string) {
	if ref.Group != "" || ref.Kind != "ConfigMap" {
		return nil, string(gwv1.BackendTLSPolicyReasonInvalidKind), fmt.Sprintf("%s is not supported; reference a ConfigMap (group \"\") with the CA certificates in ca.crt", groupKind(string(ref.Group), string(ref.Kind)))
	}
	data, msg := t.configMapCA(ns, string(ref.Name))
	if msg != "" {
		return nil, string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef), msg
	}
	return data, "", ""
}

// checkCAPEM requires at least one certificate and every PEM block to be
// a parsable certificate, so a half-pasted bundle is reported, not
// silently shortened.
func checkCAPEM(data []byte) error {
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is a %s, want CERTIFICATE", n+1, b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no PEM certificate found")
	}
	return nil
}

// backendUsers maps every Service to the Gateways whose routes send or
// mirror to it, or that a waypoint serves it through.
func (t *translator) backendUsers() map[model.Ref][]model.Ref {
	users := map[model.Ref][]model.Ref{}
	add := func(svc, gw model.Ref) {
		if !svc.IsZero() && !slices.Contains(users[svc], gw) {
			users[svc] = append(users[svc], gw)
		}
	}
	for i := range t.mesh.Gateways {
		g := &t.mesh.Gateways[i]
		visit := func(routes []model.Route) {
			for _, r := range routes {
				for _, f := range r.Filters {
					if f.RequestMirror != nil {
						add(f.RequestMirror.Backend.Service, g.Ref)
					}
				}
				for _, b := range r.Backends {
					add(b.Service, g.Ref)
					for _, f := range b.Filters {
						if f.RequestMirror != nil {
							add(f.RequestMirror.Backend.Service, g.Ref)
						}
					}
				}
			}
		}
		for _, l := range g.Listeners {
			for _, vh := range l.VirtualHosts {
				visit(vh.Routes)
			}
		}
		for _, sr := range g.MeshRoutes {
			visit(sr.Routes)
		}
	}
	for i := range t.mesh.Services {
		if s := &t.mesh.Services[i]; s.Waypoint != nil {
			add(s.Ref, s.Waypoint.Gateway)
		}
	}
	return users
}

// backendTLSStatus writes the policy's status: the conditions under each
// ancestor (the Gateways that use a targeted Service, sorted), or on the
// policy itself when no Gateway uses them yet, so file mode still shows a
// broken policy.
func (t *translator) backendTLSStatus(p *gwv1.BackendTLSPolicy, users map[model.Ref][]model.Ref, targeted []model.Ref, conds ...status.Condition) {
	var ancestors []model.Ref
	for _, s := range targeted {
		for _, g := range users[s] {
			if !slices.Contains(ancestors, g) {
				ancestors = append(ancestors, g)
			}
		}
	}
	slices.SortFunc(ancestors, compareRef)
	o := t.obj(status.ObjectRef{Group: gatewayGroup, Kind: "BackendTLSPolicy", Namespace: p.Namespace, Name: p.Name})
	if len(ancestors) == 0 {
		o.Conditions = conds
		return
	}
	for _, g := range ancestors {
		o.Parents = append(o.Parents, status.Parent{
			ParentRef:      status.ParentRef{Group: gatewayGroup, Kind: "Gateway", Namespace: g.Namespace, Name: g.Name},
			ControllerName: ControllerName,
			Conditions:     slices.Clone(conds),
		})
	}
}

package translate

import (
	"fmt"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/internal/control/model"
)

// frontendValidation is the client validation of the Gateway's
// spec.tls.frontend that applies to port, and the field it is set in: its
// perPort entry, else the default; nil when none is configured.
func frontendValidation(gw *gwv1.Gateway, port gwv1.PortNumber) (_ *gwv1.FrontendTLSValidation, field string) {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return nil, ""
	}
	f := gw.Spec.TLS.Frontend
	for i, p := range f.PerPort {
		if p.Port == port {
			return p.TLS.Validation, fmt.Sprintf("spec.tls.frontend.perPort[%d].tls.validation", i)
		}
	}
	return f.Default.Validation, "spec.tls.frontend.default.validation"
}

// checkClientValidation resolves the frontend validation of an HTTPS
// listener into c's model. Each bad caCertificateRef is a ResolvedRefs
// problem; with none valid the listener is not accepted
// (NoValidCACertificate), so no client gets in unchecked.
func (t *translator) checkClientValidation(gw *gwv1.Gateway, c *listenerCheck, l gwv1.Listener, fail func(string, string, ...any)) {
	v, field := frontendValidation(gw, l.Port)
	if v == nil {
		return
	}
	mode := v.Mode
	if mode == "" {
		mode = gwv1.AllowValidOnly
	}
	if mode != gwv1.AllowValidOnly && mode != gwv1.AllowInsecureFallback {
		fail(string(gwv1.ListenerReasonUnsupportedValue), "%s.mode: %q is not valid; use AllowValidOnly or AllowInsecureFallback", field, mode)
		return
	}
	cv := &model.ClientValidation{InsecureFallback: mode == gwv1.AllowInsecureFallback}
	var bad []string
	for i, ref := range v.CACertificateRefs {
		f := fmt.Sprintf("%s.caCertificateRefs[%d]", field, i)
		pem, reason, msg := t.frontendCA(gw, ref)
		if reason != "" {
			c.refsReasons = append(c.refsReasons, reason)
			c.refsMsgs = append(c.refsMsgs, f+": "+msg)
			bad = append(bad, f)
			continue
		}
		cv.CAPEM = append(cv.CAPEM, pem...)
		if len(pem) > 0 && pem[len(pem)-1] != '\n' {
			cv.CAPEM = append(cv.CAPEM, '\n')
		}
	}
	if len(cv.CAPEM) == 0 {
		fail(string(gwv1.ListenerReasonNoValidCACertificate), "%s: no valid CA certificate (%s); the listener would admit no client", field, strings.Join(bad, ", "))
		return
	}
	c.model.TLS.ClientValidation = cv
}

// frontendCA reads one caCertificateRefs entry: a ConfigMap (a
// ReferenceGrant allows one in another namespace) with PEM CA
// certificates in ca.crt.
func (t *translator) frontendCA(gw *gwv1.Gateway, ref gwv1.ObjectReference) (_ []byte, reason, msg string) {
	ns := string(deref(ref.Namespace, gwv1.Namespace(gw.Namespace)))
	if ref.Group != "" || ref.Kind != "ConfigMap" {
		return nil, string(gwv1.ListenerReasonInvalidCACertificateKind),
			fmt.Sprintf("%s is not supported; reference a ConfigMap (group \"\") with the CA certificates in ca.crt", groupKind(string(ref.Group), string(ref.Kind)))
	}
	if !t.refGranted(gwGroup, "Gateway", gw.Namespace, "", "ConfigMap", ns, string(ref.Name)) {
		return nil, string(gwv1.ListenerReasonRefNotPermitted),
			fmt.Sprintf("ConfigMap %s/%s is in another namespace and no ReferenceGrant in %q allows Gateways from %q to use it", ns, ref.Name, ns, gw.Namespace)
	}
	data, msg := t.configMapCA(ns, string(ref.Name))
	if msg != "" {
		return nil, string(gwv1.ListenerReasonInvalidCACertificateRef), msg
	}
	return data, "", ""
}

// configMapCA checks a ConfigMap holding CA certificates for TLS
// validation: it must exist and hold a PEM bundle in ca.crt. It returns
// the bundle, or what is wrong.
func (t *translator) configMapCA(ns, name string) (_ []byte, problem string) {
	cm := t.res.ConfigMap(ns, name)
	if cm == nil {
		return nil, fmt.Sprintf("ConfigMap %s/%s not found", ns, name)
	}
	data, ok := cm.Data["ca.crt"]
	if !ok {
		return nil, fmt.Sprintf("ConfigMap %s/%s has no key ca.crt; put the PEM CA certificates there", ns, name)
	}
	if err := checkCAPEM([]byte(data)); err != nil {
		return nil, fmt.Sprintf("ConfigMap %s/%s ca.crt: %v", ns, name, err)
	}
	return []byte(data), ""
}

// insecureFrontend: some port of the Gateway admits clients without a
// valid certificate (the spec's InsecureFrontendValidationMode condition).
func insecureFrontend(gw *gwv1.Gateway) bool {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return false
	}
	f := gw.Spec.TLS.Frontend
	if v := f.Default.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
		return true
	}
	for _, p := range f.PerPort {
		if v := p.TLS.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
			return true
		}
	}
	return false
}

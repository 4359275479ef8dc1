package translate

import (
	"crypto/tls"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/internal/control/model"
)

const gwGroup = gwv1.GroupName

// labelNamespaceName is the label Kubernetes puts on every Namespace. File
// mode has no API server to add it, so selectors see it implicitly: the
// same allowedRoutes selector then works in both modes.
const labelNamespaceName = "kubernetes.io/metadata.name"

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// refGranted reports whether a ReferenceGrant in toNS lets objects of
// fromGroup/fromKind in fromNS refer to toGroup/toKind toName. Same-namespace
// references need no grant.
func (t *translator) refGranted(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	if fromNS == toNS {
		return true
	}
	for _, g := range t.res.ReferenceGrants {
		if g.Namespace != toNS {
			continue
		}
		fromOK := false
		for _, f := range g.Spec.From {
			if string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS {
				fromOK = true
				break
			}
		}
		if !fromOK {
			continue
		}
		for _, to := range g.Spec.To {
			if string(to.Group) == toGroup && string(to.Kind) == toKind && (to.Name == nil || string(*to.Name) == toName) {
				return true
			}
		}
	}
	return false
}

// namespaceLabels returns a namespace's labels plus the implicit name label.
func (t *translator) namespaceLabels(ns string) labels.Set {
	set := labels.Set{labelNamespaceName: ns}
	if o := t.res.Namespace(ns); o != nil {
		for k, v := range o.Labels {
			set[k] = v
		}
	}
	return set
}

// routeNamespaceAllowed applies a listener's allowedRoutes.namespaces to a
// route in routeNS. An invalid selector allows nothing (the listener reports
// it when the Gateway is translated).
func (t *translator) routeNamespaceAllowed(ar *gwv1.AllowedRoutes, gwNS, routeNS string) bool {
	from := gwv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar != nil && ar.Namespaces != nil {
		from = deref(ar.Namespaces.From, gwv1.NamespacesFromSame)
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSame:
		return gwNS == routeNS
	case gwv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		return s.Matches(t.namespaceLabels(routeNS))
	}
	return false
}

// checkCertificateRef validates one listener certificateRef and returns the
// ResolvedRefs reason and message when it is unusable. cert is set when the
// Secret may be served: always when reason is empty, and also when only its
// content is malformed, so that a gateway which already serves that Secret
// keeps its last good certificate through a botched rotation instead of
// losing the listener.
func (t *translator) checkCertificateRef(gw *gwv1.Gateway, field string, ref gwv1.SecretObjectReference) (reason, msg string, cert *model.Certificate) {
	group, kind := string(deref(ref.Group, "")), string(deref(ref.Kind, "Secret"))
	ns := string(deref(ref.Namespace, gwv1.Namespace(gw.Namespace)))
	name := string(ref.Name)
	if group != "" || kind != "Secret" {
		return string(gwv1.ListenerReasonInvalidCertificateRef),
			fmt.Sprintf("%s: %s is not supported; reference a Secret (group \"\", kind Secret) of type %s", field, groupKind(group, kind), corev1.SecretTypeTLS), nil
	}
	if !t.refGranted(gwGroup, "Gateway", gw.Namespace, "", "Secret", ns, name) {
		return string(gwv1.ListenerReasonRefNotPermitted),
			fmt.Sprintf("%s: Secret %s/%s is in another namespace and no ReferenceGrant in %q allows Gateways from %q to use it", field, ns, name, ns, gw.Namespace), nil
	}
	s := t.res.Secret(ns, name)
	if s == nil {
		return string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("%s: Secret %s/%s not found", field, ns, name), nil
	}
	if s.Type != corev1.SecretTypeTLS {
		return string(gwv1.ListenerReasonInvalidCertificateRef),
			fmt.Sprintf("%s: Secret %s/%s has type %q; it must be %s", field, ns, name, s.Type, corev1.SecretTypeTLS), nil
	}
	crt, key := secretValue(s, corev1.TLSCertKey), secretValue(s, corev1.TLSPrivateKeyKey)
	cert = &model.Certificate{Ref: model.Ref{Namespace: ns, Name: name}, CertPEM: crt, KeyPEM: key}
	if len(crt) == 0 || len(key) == 0 {
		return string(gwv1.ListenerReasonInvalidCertificateRef),
			fmt.Sprintf("%s: Secret %s/%s must hold %s and %s%s", field, ns, name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey, keptNote), cert
	}
	if _, err := tls.X509KeyPair(crt, key); err != nil {
		return string(gwv1.ListenerReasonInvalidCertificateRef),
			fmt.Sprintf("%s: Secret %s/%s does not hold a usable PEM certificate and key: %v%s", field, ns, name, err, keptNote), cert
	}
	return "", "", cert
}

// keptNote ends the message of a Secret whose content is unusable.
const keptNote = "; a gateway that already serves this Secret keeps its last good certificate until it is fixed"

// secretValue reads a key from data, or from stringData: files are written
// by hand and there is no API server to fold stringData into data.
func secretValue(s *corev1.Secret, key string) []byte {
	if v, ok := s.StringData[key]; ok {
		return []byte(v)
	}
	return s.Data[key]
}

func groupKind(group, kind string) string {
	if group == "" {
		return "kind " + kind
	}
	return "kind " + group + "/" + kind
}

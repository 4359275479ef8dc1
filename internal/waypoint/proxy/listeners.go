package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/ambitmesh/ambit/internal/waypoint/route"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Families: how the listeners of one port are served. Listeners of one
// family share a port; the control plane refuses mixes.
const (
	// FamilyHTTP is plain HTTP/1.1 and h2c, routed by Host.
	FamilyHTTP = "http"
	// FamilyTLS is HTTPS and TLS listeners, told apart by the ClientHello's
	// server name (SNI).
	FamilyTLS = "tls"
	// FamilyTCP is a TCP listener: every connection goes to its TCPRoute.
	FamilyTCP = "tcp"
)

// Family returns how a listener of the given protocol is served; "" when
// this engine does not serve it (UDP, and HBONE which the waypoint serves
// itself).
func Family(protocol string) string {
	switch strings.ToUpper(protocol) {
	case "HTTP":
		return FamilyHTTP
	case "HTTPS", "TLS":
		return FamilyTLS
	case "TCP":
		return FamilyTCP
	}
	return ""
}

// tlsPort is the TLS-family listeners sharing one port, found by SNI.
type tlsPort struct {
	byName route.HostIndex[*tlsListener]
}

// tlsListener is one HTTPS or TLS listener, compiled.
type tlsListener struct {
	name string
	// https: terminate and serve HTTP with table; otherwise terminate (or
	// not, when passthrough) and forward the bytes to the route table's
	// backends, matched by SNI.
	https, passthrough bool
	table              *route.Table
	// conf terminates TLS (nil when passthrough): this listener's
	// certificates, ALPN h2 and http/1.1 for HTTPS.
	conf *tls.Config
}

// tcpListener is one TCP listener: its routes sit under host "*".
type tcpListener struct {
	name  string
	table *route.Table
}

// certEntry is the last good certificate of one Secret, with the PEM it
// was parsed from so an unchanged Secret is not parsed again.
type certEntry struct {
	crt, key []byte
	cert     *tls.Certificate
}

// applySecrets parses the Secrets of a snapshot into the certificate
// store. A Secret that does not parse keeps its last good certificate (a
// botched rotation must not take a listener down); one seen for the first
// time is left out. Secrets no longer sent are dropped.
func (e *Engine) applySecrets(secrets []*gatewayv1.Secret) (map[string]*certEntry, error) {
	next := make(map[string]*certEntry, len(secrets))
	var errs []error
	for _, s := range secrets {
		name := s.GetNamespace() + "/" + s.GetName()
		prev := e.certs[name]
		if prev != nil && bytes.Equal(prev.crt, s.GetCertificateChainPem()) && bytes.Equal(prev.key, s.GetPrivateKeyPem()) {
			next[name] = prev
			continue
		}
		cert, err := tls.X509KeyPair(s.GetCertificateChainPem(), s.GetPrivateKeyPem())
		if err != nil {
			if prev != nil {
				next[name] = prev
				errs = append(errs, fmt.Errorf("proxy: secret %s: %w; keeping its last good certificate", name, err))
			} else {
				errs = append(errs, fmt.Errorf("proxy: secret %s: %w; listeners using it have no certificate from it", name, err))
			}
			continue
		}
		next[name] = &certEntry{crt: s.GetCertificateChainPem(), key: s.GetPrivateKeyPem(), cert: &cert}
	}
	return next, errors.Join(errs...)
}

// compileTLSListener builds the serving state of an HTTPS or TLS
// listener from the certificates in certs.
func compileTLSListener(l *gatewayv1.Listener, certs map[string]*certEntry) (*tlsListener, error) {
	tl := &tlsListener{
		name:        l.GetName(),
		https:       strings.EqualFold(l.GetProtocol(), "HTTPS"),
		passthrough: strings.EqualFold(l.GetTls().GetMode(), "Passthrough"),
	}
	t, err := route.CompileListener(l)
	tl.table = t
	errs := []error{err}
	if tl.passthrough {
		return tl, errors.Join(errs...)
	}
	tl.conf = &tls.Config{MinVersion: tls.VersionTLS12}
	if tl.https {
		tl.conf.NextProtos = []string{"h2", "http/1.1"}
	}
	// Go picks, per handshake, the first certificate that suits the
	// client's server name and algorithms, else the first one: several
	// Secrets on one listener serve several names (or RSA and ECDSA).
	for _, ref := range l.GetTls().GetCertificates() {
		name := ref.GetNamespace() + "/" + ref.GetName()
		if c := certs[name]; c != nil {
			tl.conf.Certificates = append(tl.conf.Certificates, *c.cert)
		}
	}
	if len(tl.conf.Certificates) == 0 {
		errs = append(errs, fmt.Errorf("proxy: listener %q: no usable certificate; TLS handshakes on it fail until one of its Secrets holds a valid certificate and key", l.GetName()))
	}
	if v := l.GetTls().GetClientValidation(); v != nil {
		errs = append(errs, clientValidation(tl.conf, l.GetName(), v))
	}
	return tl, errors.Join(errs...)
}

// clientValidation makes conf ask for a client certificate. The CAs are
// also named in the certificate request, so a client holding several
// certificates picks the one the listener trusts, even in fallback mode,
// where nothing is verified.
func clientValidation(conf *tls.Config, listener string, v *gatewayv1.ClientValidation) error {
	conf.ClientCAs = x509.NewCertPool()
	ok := conf.ClientCAs.AppendCertsFromPEM(v.GetCaPem())
	if v.GetInsecureFallback() {
		conf.ClientAuth = tls.RequestClientCert
		return nil
	}
	// Fail closed: without a CA no client certificate verifies.
	conf.ClientAuth = tls.RequireAndVerifyClientCert
	if !ok {
		return fmt.Errorf("proxy: listener %q: client validation has no CA certificate; every client is refused until its CA references hold PEM certificates", listener)
	}
	return nil
}

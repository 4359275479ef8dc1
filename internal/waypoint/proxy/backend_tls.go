package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// backendTLS originates TLS to the endpoints of one backend port, as its
// BackendTLSPolicy says (the Backend's tls entry for the port). Its
// transports pool the TLS connections per endpoint address.
type backendTLS struct {
	spec   *gatewayv1.BackendTLS
	policy string // "<namespace>/<name>", for logs
	roots  *x509.CertPool
	// rootsErr says why nothing is trusted (every connection fails).
	rootsErr error
	h1, h2   *http.Transport // upgrades, HTTP/2
	fast     *h1Client       // every other HTTP/1.1 attempt
}

// upstreamTLSError is a failed TLS handshake with an upstream endpoint:
// answered 503 with flag UF, as Envoy reports a TLS transport failure.
type upstreamTLSError struct {
	policy string
	addr   string
	err    error
}

func (e *upstreamTLSError) Error() string {
	return fmt.Sprintf("TLS to %s (BackendTLSPolicy %s): %v", e.addr, e.policy, e.err)
}

func (e *upstreamTLSError) Unwrap() error { return e.err }

// newBackendTLS builds the TLS origination for spec; dial opens the TCP
// connections (the engine's dialer: endpoints that get TLS are never
// reached over HBONE). h2 offers only HTTP/2 in ALPN (the port's
// appProtocol asks for HTTP/2), else HTTP/1.1; upgrades always use HTTP/1.1.
func newBackendTLS(spec *gatewayv1.BackendTLS, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *backendTLS {
	b := &backendTLS{spec: spec, policy: spec.GetPolicy().GetNamespace() + "/" + spec.GetPolicy().GetName()}
	switch {
	case spec.GetSystemRoots():
		b.roots, b.rootsErr = x509.SystemCertPool()
		if b.rootsErr != nil {
			b.rootsErr = fmt.Errorf("system CA certificates: %w", b.rootsErr)
		}
	case len(spec.GetCaPem()) > 0:
		b.roots = x509.NewCertPool()
		if !b.roots.AppendCertsFromPEM(spec.GetCaPem()) {
			b.roots, b.rootsErr = nil, errors.New("the policy's CA certificates do not parse")
		}
	default:
		b.rootsErr = errors.New("the policy has no valid CA certificate (see its status)")
	}
	dialTLS := func(alpn string) func(ctx context.Context, network, addr string) (net.Conn, error) {
		cfg := &tls.Config{
			ServerName: spec.GetSni(),
			NextProtos: []string{alpn},
			// Verification is VerifyConnection's: subjectAltNames replace
			// the SNI as the name to check, which the default cannot do.
			InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
			VerifyConnection:   b.verify,
			MinVersion:         tls.VersionTLS12,
		}
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			c := tls.Client(raw, cfg)
			if err := c.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, &upstreamTLSError{policy: b.policy, addr: addr, err: err}
			}
			return c, nil
		}
	}
	newTransport := func(alpn string) *http.Transport {
		var p http.Protocols
		if alpn == "h2" {
			p.SetHTTP2(true)
		} else {
			p.SetHTTP1(true)
		}
		return &http.Transport{
			DialTLSContext:      dialTLS(alpn),
			Protocols:           &p,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}
	}
	b.h1, b.h2 = newTransport("http/1.1"), newTransport("h2")
	b.fast = newH1Client(dialTLS("http/1.1"))
	return b
}

// verify checks the backend's chain against the policy's CA certificates
// and its name: one of the subjectAltNames when set, else the SNI.
func (b *backendTLS) verify(cs tls.ConnectionState) error {
	if b.rootsErr != nil {
		return b.rootsErr
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the backend sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	opts := x509.VerifyOptions{Roots: b.roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	sans := b.spec.GetSubjectAltNames()
	if len(sans) == 0 {
		opts.DNSName = b.spec.GetSni()
	}
	if _, err := leaf.Verify(opts); err != nil {
		return err
	}
	if len(sans) == 0 {
		return nil
	}
	var want []string
	for _, san := range sans {
		if h := san.GetHostname(); h != "" {
			if leaf.VerifyHostname(h) == nil {
				return nil
			}
			want = append(want, "DNS:"+h)
		} else if u := san.GetUri(); slices.ContainsFunc(leaf.URIs, func(got *url.URL) bool { return got.String() == u }) {
			return nil
		} else {
			want = append(want, "URI:"+u)
		}
	}
	return fmt.Errorf("the certificate holds none of the policy's subjectAltNames (%s)", strings.Join(want, ", "))
}

func (b *backendTLS) close() {
	b.h1.CloseIdleConnections()
	b.h2.CloseIdleConnections()
	b.fast.Close()
}

// backendTLSFor returns the TLS origination of a backend port, the one of
// the last configuration when its settings did not change (so its pooled
// connections are kept), or nil when the port has no policy.
func (e *Engine) backendTLSFor(k balKey, b *gatewayv1.Backend) *backendTLS {
	i := slices.IndexFunc(b.GetTls(), func(t *gatewayv1.BackendTLS) bool { return t.GetPort() == k.port })
	if i < 0 {
		return nil
	}
	spec := b.GetTls()[i]
	if old := e.tlsUps[k]; old != nil && proto.Equal(old.spec, spec) {
		return old
	}
	return newBackendTLS(spec, e.dial)
}

// retireBackendTLS closes the idle connections of the TLS originations
// the new configuration c no longer uses, and remembers c's.
func (e *Engine) retireBackendTLS(c *config) {
	next := map[balKey]*backendTLS{}
	for k, u := range c.backends {
		if u.tls != nil {
			next[k] = u.tls
		}
	}
	for k, old := range e.tlsUps {
		if next[k] != old {
			old.close()
		}
	}
	e.tlsUps = next
}

// upstreamTransport is the round tripper and URL scheme of an attempt to
// endpoint ep: TLS when the port has a BackendTLSPolicy and ep is not
// reached over HBONE (the tunnel already authenticates and encrypts),
// else the plain (or h2c) pool of the request.
func (e *Engine) upstreamTransport(ctx context.Context, up *upstream, ep netip.AddrPort, upgrade bool) (http.RoundTripper, string) {
	if up.tls != nil && (e.cfg.HBONE == nil || !e.cfg.HBONE(ep.Addr())) {
		switch {
		case up.h2c && !upgrade:
			return up.tls.h2, "https"
		case upgrade:
			return up.tls.h1, "https"
		}
		return up.tls.fast, "https"
	}
	return e.transport(ctx, up.h2c && !upgrade, upgrade), "http"
}

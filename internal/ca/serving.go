package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/ambitmesh/ambit/internal/identity"
)

// servingCache holds the control plane's own serving certificate.
type servingCache struct {
	mu       sync.Mutex
	dnsNames []string
	ips      []net.IP
	cert     *tls.Certificate
	signer   *snapshot // the snapshot that issued cert
	renewAt  time.Time
}

// ServerTLSConfig is the TLS configuration of the control plane's gRPC
// server (xDS and the certificate service). The serving certificate has
// the identity spiffe://<td>/ambit/control plus dnsNames and ips; it is
// issued now (an error here is a bad SAN), re-issued at half life and at
// once when a rotation changes the signer. Its chain ends with the root so
// a joining proxy can check the root pin during the handshake.
//
// Client certificates are requested but not verified by TLS: Join has
// none yet, and a certificate from a foreign CA deserves a clear gRPC
// status and a log line rather than a failed handshake. Every handler
// therefore verifies the peer itself (VerifyPeerContext, or
// Service.Authenticate for xDS streams).
func (c *CA) ServerTLSConfig(dnsNames []string, ips []net.IP) (*tls.Config, error) {
	c.serving.mu.Lock()
	c.serving.dnsNames, c.serving.ips = slices.Clone(dnsNames), slices.Clone(ips)
	c.serving.cert = nil
	c.serving.mu.Unlock()
	if _, err := c.servingCertificate(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.servingCertificate()
		},
	}, nil
}

// servingCertificate returns the cached serving certificate, re-issuing it
// past half life or after the signer changed.
func (c *CA) servingCertificate() (*tls.Certificate, error) {
	c.serving.mu.Lock()
	defer c.serving.mu.Unlock()
	s := c.snap.Load()
	now := c.now()
	if c.serving.cert != nil && c.serving.signer.signer == s.signer && now.Before(c.serving.renewAt) {
		return c.serving.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: serving key: %w", err)
	}
	id := identity.ControlID(c.td)
	iss, err := c.issue(key.Public(), id, c.opts.LeafTTL, func(t *x509.Certificate) {
		t.DNSNames = c.serving.dnsNames
		t.IPAddresses = c.serving.ips
	})
	if err != nil {
		return nil, fmt.Errorf("ca: serving certificate: %w", err)
	}
	chain := slices.Concat(iss.Chain, []*x509.Certificate{s.anchor})
	tc := &tls.Certificate{PrivateKey: key, Leaf: iss.Chain[0]}
	for _, crt := range chain {
		tc.Certificate = append(tc.Certificate, crt.Raw)
	}
	leaf := iss.Chain[0]
	c.serving.cert, c.serving.signer = tc, s
	c.serving.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	issuedTotal.WithLabelValues("control").Inc()
	c.log.Info("issued control plane serving certificate", "identity", id.String(),
		"dnsNames", c.serving.dnsNames, "ips", c.serving.ips, "expires", leaf.NotAfter)
	return tc, nil
}

// Peer verification errors (all map to codes.Unauthenticated).
var (
	ErrNoClientCert = errors.New("no client certificate")
	ErrUntrusted    = errors.New("client certificate does not chain to the mesh trust bundle")
)

// VerifyPeer verifies a client certificate chain (leaf first) against the
// current bundle and returns its SPIFFE ID. A chain from another CA wraps
// ErrUntrusted, an identity outside the trust domain ErrForeignTrustDomain.
func (c *CA) VerifyPeer(chain []*x509.Certificate) (spiffeid.ID, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, fmt.Errorf("ca: %w", ErrNoClientCert)
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("ca: client certificate (subject %q): %w: %w", chain[0].Subject, ErrUntrusted, err)
	}
	if !id.MemberOf(c.td) {
		return id, fmt.Errorf("ca: client certificate %s: %w %q", id, ErrForeignTrustDomain, c.td)
	}
	b := c.Bundle()
	if _, _, err := x509svid.Verify(chain, b.X509Bundle(), x509svid.WithTime(c.now())); err != nil {
		return id, fmt.Errorf("ca: client certificate %s (issuer %q): %w: %w", id, chain[0].Issuer, ErrUntrusted, err)
	}
	return id, nil
}

// VerifyPeerContext verifies the TLS client certificate of the gRPC call
// in ctx (VerifyPeer).
func (c *CA) VerifyPeerContext(ctx context.Context) (spiffeid.ID, error) {
	return c.VerifyPeer(peerChain(ctx))
}

func peerChain(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return ti.State.PeerCertificates
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

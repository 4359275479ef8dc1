package identity

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ServerOptions tunes ServerConfig.
type ServerOptions struct {
	// Identity picks the local identity to present on a connection. A node
	// proxy presents the identity of the destination workload (found from
	// the connection's original destination, hello.Conn.LocalAddr()), as
	// ztunnel does; a waypoint or the control plane presents a fixed one
	// (FixedIdentity). Required.
	Identity func(hello *tls.ClientHelloInfo) (spiffeid.ID, error)
	// NextProtos is the ALPN list, e.g. []string{"h2"} for HBONE.
	NextProtos []string
	// Authorize, when set, further restricts verified peers (e.g. the xDS
	// server admits only node and waypoint identities).
	Authorize func(peer spiffeid.ID) error
	// AllowNoClientCert lets a client without a certificate through (a
	// certificate, when given, is still verified). Only for the control
	// plane's port, where Join is called before a node has a certificate;
	// every other call there must check PeerID itself.
	AllowNoClientCert bool
}

// FixedIdentity is a ServerOptions.Identity that always presents id.
func FixedIdentity(id spiffeid.ID) func(*tls.ClientHelloInfo) (spiffeid.ID, error) {
	return func(*tls.ClientHelloInfo) (spiffeid.ID, error) { return id, nil }
}

// ServerConfig is the server side of mesh mTLS (HBONE's port 15008, the xDS
// and CA port): TLS 1.3 only, AES-GCM suites only, a client certificate is
// required and must chain to a root in bundle and carry a SPIFFE ID of the
// bundle's trust domain. Certificates come from src and roots from bundle on
// every handshake, so renewals and root rotations apply to the next
// connection. Read the peer's identity with PeerID(conn.ConnectionState()).
func ServerConfig(src Source, bundle *Bundle, opts ServerOptions) (*tls.Config, error) {
	if src == nil || bundle == nil || opts.Identity == nil {
		return nil, errors.New("identity: ServerConfig needs a certificate Source, a Bundle and ServerOptions.Identity")
	}
	clientAuth := tls.RequireAnyClientCert
	if opts.AllowNoClientCert {
		clientAuth = tls.RequestClientCert
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: slices.Clone(opts.NextProtos),
		// Chain verification is SPIFFE's (URI SAN, trust domain, current
		// bundle) in VerifyConnection, not the web PKI's.
		ClientAuth: clientAuth,
		// Without resumption every handshake presents and checks a
		// certificate, so a dropped root or an expired leaf cannot ride on an
		// old session.
		SessionTicketsDisabled: true,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			id, err := opts.Identity(hello)
			if err != nil {
				return nil, err
			}
			return src.Get(hello.Context(), id)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkSuite(cs); err != nil {
				return err
			}
			if len(cs.PeerCertificates) == 0 && opts.AllowNoClientCert {
				return nil
			}
			peer, _, err := x509svid.Verify(cs.PeerCertificates, bundle)
			if err != nil {
				return fmt.Errorf("identity: client certificate refused: %w", err)
			}
			if opts.Authorize != nil {
				if err := opts.Authorize(peer); err != nil {
					return fmt.Errorf("identity: client %q refused: %w", peer, err)
				}
			}
			return nil
		},
	}, nil
}

// ClientConfig is the client side of mesh mTLS: it presents local's
// certificate from src and accepts the server only if its chain verifies
// against bundle and its SPIFFE ID is one of expected (the destination's
// identities; identity.ControlID for the xDS/CA channel).
func ClientConfig(src Source, bundle *Bundle, local spiffeid.ID, expected []spiffeid.ID, nextProtos ...string) (*tls.Config, error) {
	if src == nil || bundle == nil {
		return nil, errors.New("identity: ClientConfig needs a certificate Source and a Bundle")
	}
	if len(expected) == 0 {
		return nil, fmt.Errorf("identity: client config for %q: no expected server identities; give the destination's SPIFFE IDs", local)
	}
	want := slices.Clone(expected)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: slices.Clone(nextProtos),
		// Verified below against the SPIFFE bundle and the expected IDs;
		// hostnames mean nothing here.
		InsecureSkipVerify: true,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return src.Get(cri.Context(), local)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkSuite(cs); err != nil {
				return err
			}
			peer, _, err := x509svid.Verify(cs.PeerCertificates, bundle)
			if err != nil {
				return fmt.Errorf("identity: server certificate refused: %w", err)
			}
			if !slices.Contains(want, peer) {
				return fmt.Errorf("identity: server is %q, want one of [%s]", peer, joinIDs(want))
			}
			return nil
		},
	}, nil
}

// checkSuite enforces AES-GCM: crypto/tls cannot be told which TLS 1.3 suites
// to offer, so a ChaCha20 negotiation is refused after the fact (ztunnel
// offers only AES-GCM, and Go picks AES-GCM whenever both ends have AES
// hardware).
func checkSuite(cs tls.ConnectionState) error {
	switch cs.CipherSuite {
	case tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384:
		return nil
	}
	return fmt.Errorf("identity: negotiated cipher suite %s; want TLS_AES_128_GCM_SHA256 or TLS_AES_256_GCM_SHA384", tls.CipherSuiteName(cs.CipherSuite))
}

func joinIDs(ids []spiffeid.ID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return strings.Join(s, " ")
}

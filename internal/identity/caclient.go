package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
)

// CAClient is a Fetcher over the control plane's certificate service. The
// connection it is given must authenticate with the node's (or waypoint's)
// own certificate: ClientConfig with a Source that reads Manager.Current.
type CAClient struct {
	c cav1.CertificateServiceClient
}

// NewCAClient wraps conn. It does no I/O.
func NewCAClient(conn grpc.ClientConnInterface) *CAClient {
	return &CAClient{c: cav1.NewCertificateServiceClient(conn)}
}

// CreateCertificate implements Fetcher.
func (c *CAClient) CreateCertificate(ctx context.Context, id spiffeid.ID, csrPEM []byte, validity time.Duration) (*Issued, error) {
	resp, err := c.c.CreateCertificate(ctx, &cav1.CreateCertificateRequest{
		Identity: id.String(),
		CsrPem:   csrPEM,
		Validity: durationpb.New(validity),
	})
	if err != nil {
		return nil, fmt.Errorf("CA CreateCertificate: %w", err)
	}
	iss, err := parseIssued(resp.GetCertChainPem(), resp.GetTrustBundlePem())
	if err != nil {
		return nil, err
	}
	iss.Generation = resp.GetTrustBundleGeneration()
	return iss, nil
}

func parseIssued(chainPEM, rootsPEM [][]byte) (*Issued, error) {
	chain, err := parseCertsPEM(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("CA response cert_chain_pem: %w", err)
	}
	iss := &Issued{Chain: chain}
	if len(rootsPEM) > 0 {
		if iss.Roots, err = parseCertsPEM(rootsPEM); err != nil {
			return nil, fmt.Errorf("CA response trust_bundle_pem: %w", err)
		}
	}
	return iss, nil
}

// JoinResult is what a node gets from joining: its own certificate (private
// key included, generated here) and the mesh's roots.
type JoinResult struct {
	Certificate *tls.Certificate
	Roots       []*x509.Certificate
	Generation  uint64 // of Roots; for Bundle.SetRootsAt
}

// Join bootstraps a node: it dials the control plane at addr over TLS
// without a client certificate, accepts the server only if its chain leads
// to a CA certificate whose SubjectPublicKeyInfo hashes to pin
// ("sha256:<hex>", from the join string) and its identity is
// spiffe://<td>/ambit/control, and only then sends the join token and a CSR
// for node. The server must therefore include the pinned CA certificate in
// the chain it presents. The returned roots must contain the pinned key.
func Join(ctx context.Context, addr, joinToken, pin string, node spiffeid.ID, opts ...grpc.DialOption) (*JoinResult, error) {
	res, err := join(ctx, addr, joinToken, pin, node, opts)
	if err != nil {
		return nil, fmt.Errorf("identity: join %s as %q: %w", addr, node, err)
	}
	return res, nil
}

func join(ctx context.Context, addr, joinToken, pin string, node spiffeid.ID, opts []grpc.DialOption) (*JoinResult, error) {
	digest, err := parsePin(pin)
	if err != nil {
		return nil, err
	}
	if joinToken == "" {
		return nil, errors.New("join token is empty; create one with `ambit token create --node <name>`")
	}
	control := ControlID(node.TrustDomain())
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The pin replaces the web PKI: verified in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, digest, control)
		},
	}
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	key, csr, err := newKeyAndCSR(node)
	if err != nil {
		return nil, err
	}
	resp, err := cav1.NewCertificateServiceClient(conn).Join(ctx, &cav1.JoinRequest{Token: joinToken, CsrPem: csr})
	if err != nil {
		return nil, fmt.Errorf("CA Join: %w", err)
	}
	iss, err := parseIssued(resp.GetCertChainPem(), resp.GetTrustBundlePem())
	if err != nil {
		return nil, err
	}
	if len(iss.Roots) == 0 {
		return nil, errors.New("CA Join response has no trust_bundle_pem; the node could not verify any peer")
	}
	pinned := false
	for _, r := range iss.Roots {
		pinned = pinned || matchesPin(r, digest)
	}
	if !pinned {
		return nil, fmt.Errorf("CA Join response's trust bundle does not contain the pinned CA key %s", pin)
	}
	cert, err := assemble(node, key, iss.Chain, iss.Roots, nil)
	if err != nil {
		return nil, err
	}
	return &JoinResult{Certificate: cert, Roots: iss.Roots, Generation: resp.GetTrustBundleGeneration()}, nil
}

// verifyPinned accepts a server chain that verifies up to a presented CA
// certificate with the pinned key and whose leaf is the control plane.
func verifyPinned(cs tls.ConnectionState, digest []byte, control spiffeid.ID) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return errors.New("control plane presented no certificate")
	}
	anchors, inter := x509.NewCertPool(), x509.NewCertPool()
	found := false
	for _, c := range certs[1:] {
		inter.AddCert(c)
		if c.IsCA && matchesPin(c, digest) {
			anchors.AddCert(c)
			found = true
		}
	}
	if !found {
		return errors.New("control plane's certificate chain does not include a CA certificate with the pinned key (wrong pin, or a server that is not this mesh's control plane)")
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots: anchors, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("control plane's certificate does not chain to the pinned CA: %w", err)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return fmt.Errorf("control plane's certificate: %w", err)
	}
	if id != control {
		return fmt.Errorf("server is %q, want the control plane %q", id, control)
	}
	return nil
}

// Package identitytest is a small in-memory SPIFFE CA and certificate
// service for tests and benchmarks of identity users (HBONE, xDS, the
// proxies) that do not want the control plane's real CA and its state dir.
package identitytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	neturl "net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ambitmesh/ambit/internal/identity"
	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
)

// CA is a self-signed P-256 root that signs leaves directly. It implements
// identity.Fetcher, so a Manager can use it without any network.
type CA struct {
	TD   spiffeid.TrustDomain
	Root *x509.Certificate
	key  *ecdsa.PrivateKey
	ttl  atomic.Int64

	mu     sync.Mutex
	bundle []*x509.Certificate
	// gen versions bundle like the real CA's trust_bundle_generation, so a
	// response computed before a SetBundle cannot undo it when it lands late.
	gen uint64
}

// NewCA makes a root for td whose leaves live at most ttl.
func NewCA(td spiffeid.TrustDomain, ttl time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	sn := serial()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"identitytest"}, CommonName: fmt.Sprintf("root %s %x", td.Name(), sn.Bytes()[:4])},
		URIs:                  []*neturl.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{TD: td, Root: root, key: key, bundle: []*x509.Certificate{root}, gen: 1}
	ca.ttl.Store(int64(ttl))
	return ca, nil
}

// MustNewCA is NewCA for tests.
func MustNewCA(tb testing.TB, td string, ttl time.Duration) *CA {
	tb.Helper()
	ca, err := NewCA(spiffeid.RequireTrustDomainFromString(td), ttl)
	if err != nil {
		tb.Fatal(err)
	}
	return ca
}

// SetTTL changes the lifetime of later leaves.
func (ca *CA) SetTTL(ttl time.Duration) { ca.ttl.Store(int64(ttl)) }

// SetBundle sets the roots returned with each certificate (default: Root),
// e.g. {old, new} during a rotation.
func (ca *CA) SetBundle(roots ...*x509.Certificate) {
	ca.mu.Lock()
	ca.bundle = slices.Clone(roots)
	ca.gen++
	ca.mu.Unlock()
}

// Bundle is the roots returned with each certificate.
func (ca *CA) Bundle() []*x509.Certificate {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return slices.Clone(ca.bundle)
}

// Sign makes a leaf for pub carrying id, valid in [notBefore, notAfter].
func (ca *CA) Sign(pub any, id spiffeid.ID, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		URIs:                  []*neturl.URL{id.URL()},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Root, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Issue makes a key and a leaf for id valid in [notBefore, notAfter]; with
// withRoot the chain also carries the root (as a control plane's serving
// chain does, for pinning).
func (ca *CA) Issue(id spiffeid.ID, notBefore, notAfter time.Time, withRoot bool) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Sign(key.Public(), id, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	if withRoot {
		c.Certificate = append(c.Certificate, ca.Root.Raw)
	}
	return c, nil
}

// MustIssue is Issue for tests, valid from an hour ago for ttl from now.
func (ca *CA) MustIssue(tb testing.TB, id spiffeid.ID, ttl time.Duration) *tls.Certificate {
	tb.Helper()
	now := time.Now()
	c, err := ca.Issue(id, now.Add(-time.Hour), now.Add(ttl), false)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// CreateCertificate implements identity.Fetcher: it checks the CSR's
// signature and that its only URI SAN is id, and signs for
// min(validity, ttl) from now.
func (ca *CA) CreateCertificate(_ context.Context, id spiffeid.ID, csrPEM []byte, validity time.Duration) (*identity.Issued, error) {
	leaf, err := ca.signCSR(id, csrPEM, validity)
	if err != nil {
		return nil, err
	}
	ca.mu.Lock()
	roots, gen := slices.Clone(ca.bundle), ca.gen
	ca.mu.Unlock()
	return &identity.Issued{Chain: []*x509.Certificate{leaf}, Roots: roots, Generation: gen}, nil
}

func (ca *CA) signCSR(id spiffeid.ID, csrPEM []byte, validity time.Duration) (*x509.Certificate, error) {
	if !id.MemberOf(ca.TD) {
		return nil, fmt.Errorf("identitytest: %q is not in trust domain %q", id, ca.TD)
	}
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("identitytest: CSR is not a PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("identitytest: CSR: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("identitytest: CSR signature: %w", err)
	}
	if len(req.URIs) != 1 || req.URIs[0].String() != id.String() {
		return nil, fmt.Errorf("identitytest: CSR URI SANs %v, want [%s]", req.URIs, id)
	}
	ttl := time.Duration(ca.ttl.Load())
	if validity > 0 && validity < ttl {
		ttl = validity
	}
	now := time.Now()
	return ca.Sign(req.PublicKey, id, now, now.Add(ttl))
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

// Server is a CertificateService over real gRPC and TLS, serving the
// control plane's identity with a chain that ends in the root (so Join can
// check the pin). Join accepts Token once for Node; CreateCertificate
// requires a client certificate from the CA and lets a node proxy ask for
// any identity of the trust domain (the real CA checks placement).
type Server struct {
	cav1.UnimplementedCertificateServiceServer
	CA    *CA
	Addr  string
	Token string
	Node  spiffeid.ID

	Joins   atomic.Int64 // Join calls received (past TLS)
	Creates atomic.Int64 // CreateCertificate calls received (past TLS)

	used atomic.Bool
}

// StartServer serves on a loopback port until the test ends.
func StartServer(tb testing.TB, ca *CA, token string, node spiffeid.ID) *Server {
	tb.Helper()
	serving, err := ca.Issue(identity.ControlID(ca.TD), time.Now().Add(-time.Hour), time.Now().Add(time.Hour), true)
	if err != nil {
		tb.Fatal(err)
	}
	bundle := identity.NewBundle(ca.TD, []*x509.Certificate{ca.Root})
	src := identity.SourceFunc(func(context.Context, spiffeid.ID) (*tls.Certificate, error) { return serving, nil })
	cfg, err := identity.ServerConfig(src, bundle, identity.ServerOptions{
		Identity:          identity.FixedIdentity(identity.ControlID(ca.TD)),
		AllowNoClientCert: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{CA: ca, Addr: lis.Addr().String(), Token: token, Node: node}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	cav1.RegisterCertificateServiceServer(gs, s)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	tb.Cleanup(func() { gs.Stop(); <-done })
	return s
}

// Join implements cav1.CertificateServiceServer.
func (s *Server) Join(_ context.Context, req *cav1.JoinRequest) (*cav1.JoinResponse, error) {
	s.Joins.Add(1)
	if req.GetToken() != s.Token || !s.used.CompareAndSwap(false, true) {
		return nil, status.Error(codes.Unauthenticated, "identitytest: join token unknown or already used")
	}
	leaf, err := s.CA.signCSR(s.Node, req.GetCsrPem(), 0)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &cav1.JoinResponse{CertChainPem: [][]byte{pemCert(leaf)}, TrustBundlePem: pemCerts(s.CA.Bundle())}, nil
}

// CreateCertificate implements cav1.CertificateServiceServer.
func (s *Server) CreateCertificate(ctx context.Context, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
	s.Creates.Add(1)
	p, _ := peer.FromContext(ctx)
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "identitytest: no TLS")
	}
	caller, err := identity.PeerID(ti.State) // verified by ServerConfig when present
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if caller != s.Node {
		return nil, status.Errorf(codes.PermissionDenied, "identitytest: caller %s is not node %s", caller, s.Node)
	}
	id, err := spiffeid.FromString(req.GetIdentity())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	leaf, err := s.CA.signCSR(id, req.GetCsrPem(), req.GetValidity().AsDuration())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &cav1.CreateCertificateResponse{CertChainPem: [][]byte{pemCert(leaf)}, TrustBundlePem: pemCerts(s.CA.Bundle())}, nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func pemCerts(cs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = pemCert(c)
	}
	return out
}

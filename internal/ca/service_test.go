package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambitmesh/ambit/internal/identity"
	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
)

const (
	idReviews  = "spiffe://cluster.local/ns/shop/sa/reviews"  // on node-a
	idRatings  = "spiffe://cluster.local/ns/shop/sa/ratings"  // on node-b
	idWaypoint = "spiffe://cluster.local/ns/shop/sa/waypoint" // gateway shop/waypoint
)

var testAuthz = staticAuthz{
	nodes: map[string][]string{
		"node-a": {idReviews},
		"node-b": {idRatings},
	},
	gateways: map[string]bool{"shop/waypoint": true},
}

type env struct {
	s       *server
	ca      *CA
	tokClk  *clock
	nodeA   *tls.Certificate
	gateway *tls.Certificate
}

func setup(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	c := openCA(t, dir, newClock())
	tokClk := newClock()
	tokens := NewTokenStore(TokensFile(dir), tokClk.Now)
	s := startServer(t, c, testAuthz, tokens)
	e := &env{s: s, ca: c, tokClk: tokClk}
	e.nodeA = e.join(t, NodeSubject("node-a"))
	e.gateway = e.join(t, GatewaySubject("shop", "waypoint"))
	return e
}

// join runs the real bootstrap: token -> Join without client certificate.
func (e *env) join(t *testing.T, sub Subject) *tls.Certificate {
	t.Helper()
	tok, _, err := e.s.tokens.Create(sub, TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := sub.ID(e.ca.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	csr, key := newCSR(t, id.String())
	resp, err := e.s.client(t, nil).Join(context.Background(), &cav1.JoinRequest{Token: tok, CsrPem: csr})
	if err != nil {
		t.Fatalf("Join %s: %v", sub, err)
	}
	chain := parseChain(t, resp.CertChainPem)
	checkLeaf(t, chain, parseChain(t, resp.TrustBundlePem), id)
	if resp.TrustBundleGeneration != e.ca.Bundle().Generation {
		t.Errorf("Join bundle generation %d, want %d", resp.TrustBundleGeneration, e.ca.Bundle().Generation)
	}
	return tlsCert(chain, key)
}

// create asks for id with a fresh CSR for csrID as the holder of cert.
func (e *env) create(t *testing.T, cert *tls.Certificate, id, csrID string) (*cav1.CreateCertificateResponse, *ecdsa.PrivateKey, error) {
	t.Helper()
	csr, key := newCSR(t, csrID)
	resp, err := e.s.client(t, cert).CreateCertificate(context.Background(), &cav1.CreateCertificateRequest{Identity: id, CsrPem: csr})
	return resp, key, err
}

// checkLeaf verifies chain against roots with crypto/x509 for both TLS
// roles and go-spiffe, and checks the leaf's shape.
func checkLeaf(t *testing.T, chain, roots []*x509.Certificate, want spiffeid.ID) {
	t.Helper()
	rootPool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Errorf("leaf %s does not verify for %v: %v", want, eku, err)
		}
	}
	b := newBundle(spiffeid.RequireTrustDomainFromString(testTD), 1, roots)
	got, _, err := x509svid.Verify(chain, b.X509Bundle())
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if got != want {
		t.Errorf("SPIFFE ID %s, want %s", got, want)
	}
	if len(leaf.URIs) != 1 || leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("leaf URIs %v IsCA %v KeyUsage %v; want one URI, not a CA, DigitalSignature", leaf.URIs, leaf.IsCA, leaf.KeyUsage)
	}
	if d := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage); d != "" {
		t.Errorf("ExtKeyUsage (-want +got):\n%s", d)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > DefaultLeafTTL+clockSkew || life < DefaultLeafTTL {
		t.Errorf("leaf lifetime %s, want the 24h TTL plus the %s backdating", life, clockSkew)
	}
	if leaf.SerialNumber.BitLen() < 120 {
		t.Errorf("serial %x has %d bits, want a random 128-bit serial", leaf.SerialNumber, leaf.SerialNumber.BitLen())
	}
}

func TestCreateCertificate(t *testing.T) {
	e := setup(t)
	tests := []struct {
		name   string
		caller func() *tls.Certificate
		id     string
		ttl    time.Duration
		want   time.Duration // lifetime without backdating
	}{
		{"node gets a workload on its node", func() *tls.Certificate { return e.nodeA }, idReviews, 0, DefaultLeafTTL},
		{"node renews its own identity", func() *tls.Certificate { return e.nodeA }, "spiffe://cluster.local/ambit/node/node-a", 0, DefaultLeafTTL},
		{"gateway renews its own identity", func() *tls.Certificate { return e.gateway }, idWaypoint, 0, DefaultLeafTTL},
		{"shorter validity honoured", func() *tls.Certificate { return e.nodeA }, idReviews, time.Hour, time.Hour},
		{"longer validity capped", func() *tls.Certificate { return e.nodeA }, idReviews, 100 * time.Hour, DefaultLeafTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, _ := newCSR(t, tt.id)
			resp, err := e.s.client(t, tt.caller()).CreateCertificate(context.Background(), &cav1.CreateCertificateRequest{
				Identity: tt.id, CsrPem: csr, Validity: durationpb.New(tt.ttl),
			})
			if err != nil {
				t.Fatal(err)
			}
			chain := parseChain(t, resp.CertChainPem)
			want := mustID(t, tt.id)
			if tt.want == DefaultLeafTTL {
				checkLeaf(t, chain, parseChain(t, resp.TrustBundlePem), want)
			}
			if got := chain[0].NotAfter.Sub(chain[0].NotBefore) - clockSkew; got != tt.want {
				t.Errorf("lifetime %s, want %s", got, tt.want)
			}
		})
	}
}

// TestRefused sends every bad input of issue 3 over real gRPC/TLS: each is
// refused with the right code, counted under its reason, issues nothing,
// and the CA serves a valid request right after.
func TestRefused(t *testing.T) {
	e := setup(t)

	// A different CA (same trust domain, other root).
	other := openCA(t, t.TempDir(), newClock())
	foreignKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fi, err := other.issue(foreignKey.Public(), mustID(t, "spiffe://cluster.local/ambit/node/node-a"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	foreignCA := tlsCert(fi.Chain, foreignKey)
	// Our root, another trust domain (e.g. a second mesh under one company root).
	tdKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ti, err := e.ca.issue(tdKey.Public(), mustID(t, "spiffe://other.example/ambit/node/node-a"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	foreignTD := tlsCert(ti.Chain, tdKey)
	// A plain workload certificate (no Gateway of that name).
	wr, wkey, err := e.create(t, e.nodeA, idReviews, idReviews)
	if err != nil {
		t.Fatal(err)
	}
	workload := tlsCert(parseChain(t, wr.CertChainPem), wkey)

	ctx := context.Background()
	createWith := func(cert *tls.Certificate, id string, csr []byte) func(*testing.T) error {
		return func(t *testing.T) error {
			_, err := e.s.client(t, cert).CreateCertificate(ctx, &cav1.CreateCertificateRequest{Identity: id, CsrPem: csr})
			return err
		}
	}
	csrFor := func(uris ...string) []byte { b, _ := newCSR(t, uris...); return b }
	join := func(tok string, csr []byte) func(*testing.T) error {
		return func(t *testing.T) error {
			_, err := e.s.client(t, nil).Join(ctx, &cav1.JoinRequest{Token: tok, CsrPem: csr})
			return err
		}
	}
	newToken := func(sub Subject, ttl time.Duration) string {
		tok, _, err := e.s.tokens.Create(sub, TokenOptions{TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	nodeC := "spiffe://cluster.local/ambit/node/node-c"
	usedTok := newToken(NodeSubject("node-c"), 0)
	if err := join(usedTok, csrFor(nodeC))(t); err != nil {
		t.Fatalf("first use of token: %v", err)
	}
	expiredTok := newToken(NodeSubject("node-c"), time.Minute)
	e.tokClk.Advance(2 * time.Minute)
	tampered := csrFor(idReviews)
	tampered[len(tampered)/2] ^= 0x01 // inside the base64 body

	tests := []struct {
		name   string
		do     func(*testing.T) error
		code   codes.Code
		reason string
	}{
		{"CSR SAN is not the requested identity", createWith(e.nodeA, idReviews, csrFor(idRatings)), codes.InvalidArgument, "identity_mismatch"},
		{"CSR with a second URI SAN", createWith(e.nodeA, idReviews, csrFor(idReviews, idRatings)), codes.InvalidArgument, "identity_mismatch"},
		{"CSR without URI SAN", createWith(e.nodeA, idReviews, csrFor()), codes.InvalidArgument, "identity_mismatch"},
		{"CSR for another node's workload", createWith(e.nodeA, idRatings, csrFor(idRatings)), codes.PermissionDenied, "permission_denied"},
		{"node asks for another node's identity", createWith(e.nodeA, "spiffe://cluster.local/ambit/node/node-b", csrFor("spiffe://cluster.local/ambit/node/node-b")), codes.PermissionDenied, "permission_denied"},
		{"node asks for the control plane identity", createWith(e.nodeA, "spiffe://cluster.local/ambit/control", csrFor("spiffe://cluster.local/ambit/control")), codes.PermissionDenied, "permission_denied"},
		{"identity in another trust domain", createWith(e.nodeA, "spiffe://other.example/ns/shop/sa/reviews", csrFor("spiffe://other.example/ns/shop/sa/reviews")), codes.PermissionDenied, "foreign_trust_domain"},
		{"malformed identity", createWith(e.nodeA, "reviews", csrFor(idReviews)), codes.InvalidArgument, "invalid_argument"},
		{"gateway asks for another identity", createWith(e.gateway, idReviews, csrFor(idReviews)), codes.PermissionDenied, "permission_denied"},
		{"workload certificate is not a gateway", createWith(workload, idReviews, csrFor(idReviews)), codes.PermissionDenied, "permission_denied"},
		{"CSR without authentication", createWith(nil, idReviews, csrFor(idReviews)), codes.Unauthenticated, "unauthenticated"},
		{"garbage CSR bytes", createWith(e.nodeA, idReviews, []byte("\x00\x01 definitely not a CSR")), codes.InvalidArgument, "invalid_csr"},
		{"CSR signature does not verify", createWith(e.nodeA, idReviews, tampered), codes.InvalidArgument, "invalid_csr"},
		{"client certificate from a foreign CA", createWith(foreignCA, idReviews, csrFor(idReviews)), codes.Unauthenticated, "untrusted_peer"},
		{"client certificate from a foreign trust domain", createWith(foreignTD, idReviews, csrFor(idReviews)), codes.Unauthenticated, "foreign_trust_domain"},
		{"reused join token", join(usedTok, csrFor(nodeC)), codes.Unauthenticated, "bad_token"},
		{"expired join token", join(expiredTok, csrFor(nodeC)), codes.Unauthenticated, "bad_token"},
		{"unknown join token", join("ambitjoin.0123456789ab.0123456789abcdef0123456789abcdef", csrFor(nodeC)), codes.Unauthenticated, "bad_token"},
		{"malformed join token", join("let me in", csrFor(nodeC)), codes.Unauthenticated, "bad_token"},
		{"join token's wrong secret", join(usedTok[:len(usedTok)-4]+"0000", csrFor(nodeC)), codes.Unauthenticated, "bad_token"},
		{"join CSR for another node", join(newToken(NodeSubject("node-d"), 0), csrFor(nodeC)), codes.InvalidArgument, "identity_mismatch"},
		{"join with garbage CSR", join(newToken(NodeSubject("node-d"), 0), []byte("garbage")), codes.InvalidArgument, "invalid_csr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issued, refused := issuedCount(), refusedCount(tt.reason)
			err := tt.do(t)
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code %v (%v), want %v", got, err, tt.code)
			}
			if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, "ca: ") {
				t.Errorf("message %q does not come from the CA", msg)
			}
			if got := refusedCount(tt.reason) - refused; got != 1 {
				t.Errorf("refused{reason=%q} grew by %v, want 1", tt.reason, got)
			}
			if got := issuedCount() - issued; got != 0 {
				t.Errorf("issued grew by %v, want 0", got)
			}
			// The CA keeps serving.
			if _, _, err := e.create(t, e.nodeA, idReviews, idReviews); err != nil {
				t.Fatalf("valid request after the refusal: %v", err)
			}
		})
	}
}

// A CSR rejected during Join must not burn the single-use token.
func TestJoinTokenSurvivesBadCSR(t *testing.T) {
	e := setup(t)
	tok, _, err := e.s.tokens.Create(NodeSubject("node-b"), TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cl := e.s.client(t, nil)
	if _, err := cl.Join(context.Background(), &cav1.JoinRequest{Token: tok, CsrPem: []byte("garbage")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("garbage CSR: %v, want InvalidArgument", err)
	}
	csr, _ := newCSR(t, "spiffe://cluster.local/ambit/node/node-b")
	if _, err := cl.Join(context.Background(), &cav1.JoinRequest{Token: tok, CsrPem: csr}); err != nil {
		t.Fatalf("join after a bad CSR: %v", err)
	}
	if _, err := cl.Join(context.Background(), &cav1.JoinRequest{Token: tok, CsrPem: csr}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("second join: %v, want Unauthenticated", err)
	}
}

// TestAuthenticate runs Service.Authenticate (the xDS authenticator) in a
// real TLS gRPC server.
func TestAuthenticate(t *testing.T) {
	e := setup(t)
	wr, wkey, err := e.create(t, e.nodeA, idReviews, idReviews)
	if err != nil {
		t.Fatal(err)
	}
	workload := tlsCert(parseChain(t, wr.CertChainPem), wkey)
	other := openCA(t, t.TempDir(), newClock())
	fk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fi, err := other.issue(fk.Public(), mustID(t, "spiffe://cluster.local/ambit/node/node-a"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := e.ca.ServerTLSConfig([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			node, err := e.s.svc.Authenticate(ctx)
			if err != nil {
				return nil, err
			}
			_ = grpc.SetHeader(ctx, metadata.Pairs("node-id", node))
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(l) }()
	defer func() { gs.Stop(); <-done }()
	hs := &server{ca: e.ca, addr: l.Addr().String()}

	tests := []struct {
		name     string
		cert     *tls.Certificate
		wantNode string
		wantCode codes.Code
	}{
		{"node certificate", e.nodeA, "node/node-a", codes.OK},
		{"gateway certificate", e.gateway, "gateway/shop/waypoint", codes.OK},
		{"workload certificate", workload, "", codes.PermissionDenied},
		{"no certificate", nil, "", codes.Unauthenticated},
		{"foreign CA", tlsCert(fi.Chain, fk), "", codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, err := grpc.NewClient(hs.addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(e.ca, tt.cert))))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			var hdr metadata.MD
			_, err = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code %v (%v), want %v", got, err, tt.wantCode)
			}
			if got := strings.Join(hdr.Get("node-id"), ","); got != tt.wantNode {
				t.Errorf("node ID %q, want %q", got, tt.wantNode)
			}
		})
	}
}

func clientTLS(c *CA, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: c.Bundle().Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// The serving chain carries the control identity and ends with the root
// whose pin RootPin prints, so a joining proxy can pin it in the handshake.
func TestServingCertificateAndPin(t *testing.T) {
	c := openCA(t, t.TempDir(), newClock())
	s := startServer(t, c, testAuthz, nil)
	var seen [][]*x509.Certificate
	cfg := &tls.Config{
		InsecureSkipVerify: true, // the pin is the trust anchor here
		MinVersion:         tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			seen = append(seen, cs.PeerCertificates)
			return nil
		},
	}
	conn, err := tls.Dial("tcp", s.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	chain := seen[0]
	if got := identity.SPKIPin(chain[len(chain)-1]); got != c.RootPin() {
		t.Errorf("last certificate's pin %s, want RootPin %s", got, c.RootPin())
	}
	if !strings.HasPrefix(c.RootPin(), "sha256:") || len(c.RootPin()) != len("sha256:")+64 {
		t.Errorf("RootPin %q, want sha256:<64 hex>", c.RootPin())
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil || id != identity.ControlID(c.TrustDomain()) {
		t.Errorf("serving identity %v (%v), want %s", id, err, identity.ControlID(c.TrustDomain()))
	}
	if d := cmp.Diff([]string{"localhost"}, chain[0].DNSNames); d != "" {
		t.Errorf("DNS SANs (-want +got):\n%s", d)
	}
	// Join refused without a token store.
	csr, _ := newCSR(t, "spiffe://cluster.local/ambit/node/x")
	if _, err := s.client(t, nil).Join(context.Background(), &cav1.JoinRequest{Token: "x", CsrPem: csr}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Join without tokens: %v, want FailedPrecondition", err)
	}
}

// The serving certificate is renewed at half life.
func TestServingCertificateRenewal(t *testing.T) {
	clk := newClock()
	c := openCA(t, t.TempDir(), clk)
	if _, err := c.ServerTLSConfig(nil, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	first, err := c.servingCertificate()
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultLeafTTL/2 - time.Minute - clockSkew/2)
	if same, _ := c.servingCertificate(); same != first {
		t.Error("serving certificate re-issued before half life")
	}
	clk.Advance(clockSkew)
	if renewed, _ := c.servingCertificate(); renewed == first {
		t.Error("serving certificate not re-issued after half life")
	}
}

package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/ambitmesh/ambit/internal/ca"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/identity/identitytest"
)

// dialControl is the node's CA/xDS channel after joining: mTLS with the
// node certificate (read with Current, never fetched) and the control
// plane's identity expected.
func dialControl(t *testing.T, addr string, m **identity.Manager, b *identity.Bundle, node spiffeid.ID) *grpc.ClientConn {
	t.Helper()
	cached := identity.SourceFunc(func(_ context.Context, id spiffeid.ID) (*tls.Certificate, error) { return (*m).Current(id) })
	cfg, err := identity.ClientConfig(cached, b, node, []spiffeid.ID{identity.ControlID(b.TrustDomain())})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestJoinAndFetchOverGRPC(t *testing.T) {
	testCA := identitytest.MustNewCA(t, td.Name(), time.Hour)
	node, _ := identity.NodeID(td, "n1")
	srv := identitytest.StartServer(t, testCA, "tok-1", node)
	otherCA := identitytest.MustNewCA(t, td.Name(), time.Hour)
	ctx := context.Background()

	refusals := []struct {
		name, pin, want string
		node            spiffeid.ID
	}{
		{"pin of another CA", identity.SPKIPin(otherCA.Root), "pinned key", node},
		{"malformed pin", "sha256:abc", "want \"sha256:", node},
		{"control plane of another trust domain", identity.SPKIPin(testCA.Root), "want the control plane", spiffeid.RequireFromString("spiffe://other.org/ambit/node/n1")},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := identity.Join(ctx, srv.Addr, "tok-1", tt.pin, tt.node)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Join error = %v, want one mentioning %q", err, tt.want)
			}
			// The token never left the node: the server saw no Join.
			if n := srv.Joins.Load(); n != 0 {
				t.Fatalf("server received %d Join calls from a node that should not have trusted it", n)
			}
		})
	}

	res, err := identity.Join(ctx, srv.Addr, "tok-1", identity.SPKIPin(testCA.Root), node)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := identity.PeerID(tls.ConnectionState{PeerCertificates: []*x509.Certificate{res.Certificate.Leaf}}); err != nil || got != node {
		t.Fatalf("joined certificate is for %v (%v), want %s", got, err, node)
	}
	if len(res.Roots) != 1 || !res.Roots[0].Equal(testCA.Root) {
		t.Fatalf("join returned %d roots, want the CA's root", len(res.Roots))
	}
	if _, err := identity.Join(ctx, srv.Addr, "tok-1", identity.SPKIPin(testCA.Root), node); status.Code(err) != codes.Unauthenticated {
		t.Errorf("second Join with a single-use token = %v, want Unauthenticated", err)
	}

	bundle := identity.NewBundle(td, res.Roots)
	var m *identity.Manager
	conn := dialControl(t, srv.Addr, &m, bundle, node)
	m = startManager(t, identity.Config{TrustDomain: td, Fetcher: identity.NewCAClient(conn), Bundle: bundle})
	if err := m.Install(node, res.Certificate); err != nil {
		t.Fatal(err)
	}
	w := wid("shop", "reviews")
	c, err := m.Get(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := x509svid.Verify([]*x509.Certificate{c.Leaf}, bundle); err != nil || got != w {
		t.Errorf("workload certificate verifies as %v (%v), want %s", got, err, w)
	}
}

// staticAuthz places workloads on nodes for the real CA.
type staticAuthz map[string][]string

func (a staticAuthz) NodeServes(node, id string) bool {
	for _, w := range a[node] {
		if w == id {
			return true
		}
	}
	return false
}
func (staticAuthz) GatewayExists(string, string) bool { return false }

// TestAgainstRealCA joins the control plane's CA (internal/ca) with a real
// join token and pin, fetches workload certificates, has the node
// certificate renewed through CreateCertificate (authenticated by the
// current node certificate) and checks what the CA refuses.
func TestAgainstRealCA(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	authority, err := ca.Open(ca.Options{StateDir: dir, TrustDomain: td.Name(), LeafTTL: time.Minute, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	tokens := ca.NewTokenStore(ca.TokensFile(dir), nil)
	onNode, elsewhere := wid("shop", "reviews"), wid("shop", "ratings")
	svc := ca.NewService(authority, ca.ServiceOptions{
		Authorizer: staticAuthz{"n1": {onNode.String()}, "n2": {elsewhere.String()}},
		Tokens:     tokens, Logger: quiet,
	})
	srvCfg, err := authority.ServerTLSConfig(nil, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvCfg)))
	svc.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	addr := lis.Addr().String()

	tok, _, err := tokens.Create(ca.NodeSubject("n1"), ca.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := identity.SPKIPin(authority.Bundle().X509Bundle().X509Authorities()[0]), authority.RootPin(); got != want {
		t.Fatalf("identity.SPKIPin = %s, ca.RootPin = %s; the join string's pin format differs", got, want)
	}
	node, _ := identity.NodeID(td, "n1")
	ctx := context.Background()
	res, err := identity.Join(ctx, addr, tok, authority.RootPin(), node)
	if err != nil {
		t.Fatal(err)
	}

	bundle := identity.NewBundle(td, nil)
	if _, err := bundle.SetRootsAt(res.Generation, res.Roots); err != nil {
		t.Fatal(err)
	}
	if res.Generation == 0 || bundle.Generation() != authority.Bundle().Generation {
		t.Errorf("bundle generation %d after Join (response %d), want the CA's %d", bundle.Generation(), res.Generation, authority.Bundle().Generation)
	}
	var m *identity.Manager
	conn := dialControl(t, addr, &m, bundle, node)
	f := newFetcher(identity.NewCAClient(conn))
	// Renew early (3% of the CA's 1 minute) so the node certificate is
	// renewed twice within the test.
	m = startManager(t, identity.Config{TrustDomain: td, Fetcher: f, Bundle: bundle, RenewFraction: 0.03, RenewJitter: 0.005})
	if err := m.Install(node, res.Certificate); err != nil {
		t.Fatal(err)
	}

	c, err := m.Get(ctx, onNode)
	if err != nil {
		t.Fatal(err)
	}
	// The issued leaf verifies with crypto/x509 against the distributed
	// bundle and carries the SPIFFE ID.
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: poolOf(bundle.Roots()), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued certificate does not verify against the bundle: %v", err)
	}
	if len(c.Leaf.URIs) != 1 || c.Leaf.URIs[0].String() != onNode.String() {
		t.Errorf("issued certificate URIs = %v, want [%s]", c.Leaf.URIs, onNode)
	}
	if _, err := m.Get(ctx, elsewhere); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Get(%s) (a workload on another node) = %v, want PermissionDenied", elsewhere, err)
	}

	// The node certificate is renewed through CreateCertificate, twice: the
	// second renewal authenticates with the first renewal's certificate.
	for i := range 2 {
		ev := f.next(t, 10*time.Second, okFor(node))
		waitCurrent(t, m, node, ev.leaf)
		t.Logf("node certificate renewal %d: serial %x", i+1, ev.leaf.SerialNumber)
	}
	// The renewed node certificate still authenticates: one more workload.
	if _, err := m.Get(ctx, onNode); err != nil {
		t.Errorf("Get after node renewals: %v", err)
	}
}

func waitCurrent(t *testing.T, m *identity.Manager, id spiffeid.ID, leaf *x509.Certificate) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := m.Current(id)
		if err == nil && c.Leaf.Equal(leaf) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Current(%s) never became the renewed certificate", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func poolOf(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

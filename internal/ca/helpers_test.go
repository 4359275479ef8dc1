package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock for the CA and token store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

const testTD = "cluster.local"

func openCA(t *testing.T, dir string, clk *clock, mod ...func(*Options)) *CA {
	t.Helper()
	o := Options{StateDir: dir, TrustDomain: testTD, Logger: quietLogger(), Now: clk.Now}
	for _, m := range mod {
		m(&o)
	}
	c, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c
}

func mustID(t *testing.T, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// newCSR makes a P-256 key and a PEM CSR whose URI SANs are uris.
func newCSR(t testing.TB, uris ...string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}

func parseChain(t *testing.T, pems [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, p := range pems {
		blk, _ := pem.Decode(p)
		if blk == nil {
			t.Fatalf("not PEM: %q", p)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func tlsCert(chain []*x509.Certificate, key crypto.Signer) *tls.Certificate {
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// staticAuthz is the test's mesh model: node -> identities on it, and the
// gateways that exist.
type staticAuthz struct {
	nodes    map[string][]string
	gateways map[string]bool // "ns/name"
}

func (a staticAuthz) NodeServes(node, id string) bool {
	for _, x := range a.nodes[node] {
		if x == id {
			return true
		}
	}
	return false
}

func (a staticAuthz) GatewayExists(ns, name string) bool { return a.gateways[ns+"/"+name] }

// server is a real gRPC server with the CA's TLS config on 127.0.0.1:0.
type server struct {
	ca     *CA
	svc    *Service
	tokens *TokenStore
	addr   string
}

func startServer(t *testing.T, c *CA, authz Authorizer, tokens *TokenStore) *server {
	t.Helper()
	cfg, err := c.ServerTLSConfig([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	svc := NewService(c, ServiceOptions{Authorizer: authz, Tokens: tokens, Logger: quietLogger()})
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	svc.Register(gs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(l) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return &server{ca: c, svc: svc, tokens: tokens, addr: l.Addr().String()}
}

// client dials s trusting the CA's bundle, presenting cert when non-nil.
func (s *server) client(t *testing.T, cert *tls.Certificate) cav1.CertificateServiceClient {
	t.Helper()
	cfg := &tls.Config{RootCAs: s.ca.Bundle().Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cav1.NewCertificateServiceClient(cc)
}

func issuedCount() float64 {
	var n float64
	for _, k := range []string{"node", "gateway", "workload"} {
		n += counterValue(issuedTotal.WithLabelValues(k))
	}
	return n
}

func refusedCount(reason string) float64 {
	return counterValue(refusedTotal.WithLabelValues(reason))
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// pki builds test CA material (a "company" root and intermediates).
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(t *testing.T, cn string, parent *pki, mod func(*x509.Certificate)) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if mod != nil {
		mod(tmpl)
	}
	pcert, pkey := tmpl, key
	if parent != nil {
		pcert, pkey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pcert, key.Public(), pkey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{cert: c, key: key}
}

func writePEM(t *testing.T, path string, blocks ...any) {
	t.Helper()
	var out []byte
	for _, b := range blocks {
		switch v := b.(type) {
		case *x509.Certificate:
			out = append(out, encodeCert(v)...)
		case *ecdsa.PrivateKey:
			der, err := x509.MarshalPKCS8PrivateKey(v)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...)
		case []byte:
			out = append(out, v...)
		}
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// pluginDir writes Istio-style plug-in files for inter signed by root.
func pluginDir(t *testing.T, root, inter *pki) string {
	t.Helper()
	dir := t.TempDir()
	writePEM(t, filepath.Join(dir, PluginCACert), inter.cert)
	writePEM(t, filepath.Join(dir, PluginCAKey), inter.key)
	writePEM(t, filepath.Join(dir, PluginCertChain), inter.cert, root.cert)
	writePEM(t, filepath.Join(dir, PluginRootCert), root.cert)
	return dir
}

// Package identity benchmarks a node proxy's certificate start-up against
// the control plane's real CA (internal/ca) over gRPC and TLS on loopback:
// how long until a node with 100 workload identities holds a valid
// certificate for each, from a cold start (join, dial, 100 CSRs).
package identity

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ambitmesh/ambit/internal/ca"
	"github.com/ambitmesh/ambit/internal/identity"
)

const identities = 100

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

type allowAll struct{}

func (allowAll) NodeServes(string, string) bool    { return true }
func (allowAll) GatewayExists(string, string) bool { return false }

type env struct {
	addr, token, pin string
	node             spiffeid.ID
	ids              []spiffeid.ID
}

// startCA runs the real CA service on loopback until the benchmark ends.
func startCA(tb testing.TB) *env {
	tb.Helper()
	dir := tb.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	authority, err := ca.Open(ca.Options{StateDir: dir, TrustDomain: td.Name(), Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	tokens := ca.NewTokenStore(ca.TokensFile(dir), nil)
	token, _, err := tokens.Create(ca.NodeSubject("n1"), ca.TokenOptions{Reusable: true, TTL: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	cfg, err := authority.ServerTLSConfig(nil, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	ca.NewService(authority, ca.ServiceOptions{Authorizer: allowAll{}, Tokens: tokens, Logger: quiet}).Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	tb.Cleanup(func() { gs.Stop(); <-done })
	node, _ := identity.NodeID(td, "n1")
	e := &env{addr: lis.Addr().String(), token: token, pin: authority.RootPin(), node: node}
	for i := range identities {
		id, err := identity.WorkloadID(td, fmt.Sprintf("ns-%02d", i%10), fmt.Sprintf("sa-%03d", i))
		if err != nil {
			tb.Fatal(err)
		}
		e.ids = append(e.ids, id)
	}
	return e
}

// coldStart is one node start: Join, dial the CA with the node
// certificate, then every identity requested at once (as a node proxy does
// when it learns its workloads from xDS). It returns when all are held.
func coldStart(ctx context.Context, e *env) error {
	res, err := identity.Join(ctx, e.addr, e.token, e.pin, e.node)
	if err != nil {
		return err
	}
	bundle := identity.NewBundle(td, res.Roots)
	var m *identity.Manager
	cached := identity.SourceFunc(func(_ context.Context, id spiffeid.ID) (*tls.Certificate, error) { return m.Current(id) })
	cfg, err := identity.ClientConfig(cached, bundle, e.node, []spiffeid.ID{identity.ControlID(td)})
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return err
	}
	defer conn.Close()
	m, err = identity.NewManager(identity.Config{TrustDomain: td, Fetcher: identity.NewCAClient(conn), Bundle: bundle, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if err := m.Install(e.node, res.Certificate); err != nil {
		return err
	}
	errs := make(chan error, len(e.ids))
	var wg sync.WaitGroup
	for _, id := range e.ids {
		wg.Go(func() {
			c, err := m.Get(ctx, id)
			if err == nil && !time.Now().Before(c.Leaf.NotAfter) {
				err = fmt.Errorf("certificate for %s already expired", id)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	if n := len(m.Identities()); n != len(e.ids)+1 {
		return fmt.Errorf("manager holds %d identities, want %d", n, len(e.ids)+1)
	}
	return nil
}

// TestColdStart keeps the harness honest in the normal test run.
func TestColdStart(t *testing.T) {
	if err := coldStart(context.Background(), startCA(t)); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkColdStart100: one op = a node start until 100 workload
// certificates (plus its node certificate) are held.
func BenchmarkColdStart100(b *testing.B) {
	e := startCA(b)
	ctx := context.Background()
	var worst time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if err := coldStart(ctx, e); err != nil {
			b.Fatal(err)
		}
		worst = max(worst, time.Since(t0))
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/start")
	b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
	b.ReportMetric(float64(identities)*float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkGetCached is the per-handshake cost of reading a held
// certificate (what GetCertificate/GetClientCertificate do), all cores.
func BenchmarkGetCached(b *testing.B) {
	e := startCA(b)
	res, err := identity.Join(context.Background(), e.addr, e.token, e.pin, e.node)
	if err != nil {
		b.Fatal(err)
	}
	m, err := identity.NewManager(identity.Config{TrustDomain: td, Fetcher: unusedFetcher{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Install(e.node, res.Certificate); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Get(ctx, e.node); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

type unusedFetcher struct{}

func (unusedFetcher) CreateCertificate(context.Context, spiffeid.ID, []byte, time.Duration) (*identity.Issued, error) {
	return nil, fmt.Errorf("not used")
}

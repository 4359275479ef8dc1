// Package ca benchmarks the control plane's certificate authority: CSR
// checking and signing with ECDSA P-256, directly and through the real
// gRPC/TLS certificate service. See README.md.
package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ambitmesh/ambit/internal/ca"
	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
)

const workloadID = "spiffe://cluster.local/ns/bench/sa/app"

func csrPEM(tb testing.TB, id string) ([]byte, *ecdsa.PrivateKey) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}

func openCA(tb testing.TB) *ca.CA {
	tb.Helper()
	c, err := ca.Open(ca.Options{StateDir: tb.TempDir(), TrustDomain: "cluster.local", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// latencies collects per-operation durations for percentiles.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) { l.mu.Lock(); l.d = append(l.d, d); l.mu.Unlock() }

func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	slices.Sort(l.d)
	pct := func(p float64) float64 {
		return float64(l.d[int(p*float64(len(l.d)-1))].Microseconds())
	}
	b.ReportMetric(float64(len(l.d))/elapsed.Seconds(), "signs/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkSignCSR is CA.SignCSR alone: parse the PEM CSR, verify its
// signature and SAN, sign the leaf (crypto/x509 re-verifies what it signed).
// "serial" is one goroutine; "parallel" uses GOMAXPROCS goroutines.
func BenchmarkSignCSR(b *testing.B) {
	c := openCA(b)
	id := spiffeid.RequireFromString(workloadID)
	csrs := make([][]byte, 64)
	for i := range csrs {
		csrs[i], _ = csrPEM(b, workloadID)
	}
	b.Run("serial", func(b *testing.B) {
		var lat latencies
		b.ResetTimer()
		start := time.Now()
		for i := 0; b.Loop(); i++ {
			t0 := time.Now()
			if _, err := c.SignCSR(csrs[i%len(csrs)], id, 0); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(t0))
		}
		lat.report(b, time.Since(start))
	})
	b.Run("parallel", func(b *testing.B) {
		var lat latencies
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				t0 := time.Now()
				if _, err := c.SignCSR(csrs[i%len(csrs)], id, 0); err != nil {
					b.Error(err)
					return
				}
				lat.add(time.Since(t0))
				i++
			}
		})
		lat.report(b, time.Since(start))
	})
}

// BenchmarkCreateCertificate is the whole service path: a node proxy with
// its joined node certificate calls CreateCertificate over real gRPC with
// mTLS on 127.0.0.1 (peer verification against the bundle, authorization,
// signing, response). Clients run in-process and share the CPU with the
// server. Latency is per RPC as the client sees it.
func BenchmarkCreateCertificate(b *testing.B) {
	c := openCA(b)
	tokens := ca.NewTokenStore(b.TempDir()+"/tokens.json", nil)
	cfg, err := c.ServerTLSConfig(nil, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		b.Fatal(err)
	}
	svc := ca.NewService(c, ca.ServiceOptions{Authorizer: allowAll{}, Tokens: tokens, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	svc.Register(gs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(l) }()
	defer func() { gs.Stop(); <-done }()

	dial := func(cert *tls.Certificate) cav1.CertificateServiceClient {
		tc := &tls.Config{RootCAs: c.Bundle().Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return cav1.NewCertificateServiceClient(cc)
	}
	tok, _, err := tokens.Create(ca.NodeSubject("bench-node"), ca.TokenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ncsr, nkey := csrPEM(b, "spiffe://cluster.local/ambit/node/bench-node")
	jr, err := dial(nil).Join(context.Background(), &cav1.JoinRequest{Token: tok, CsrPem: ncsr})
	if err != nil {
		b.Fatal(err)
	}
	nodeCert := &tls.Certificate{PrivateKey: nkey}
	for _, p := range jr.CertChainPem {
		blk, _ := pem.Decode(p)
		nodeCert.Certificate = append(nodeCert.Certificate, blk.Bytes)
	}
	client := dial(nodeCert)
	csrs := make([][]byte, 64)
	for i := range csrs {
		csrs[i], _ = csrPEM(b, workloadID)
	}
	for _, conc := range []int{1, 16} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			var lat latencies
			b.ResetTimer()
			start := time.Now()
			var (
				wg   sync.WaitGroup
				next = make(chan int)
			)
			for w := range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						t0 := time.Now()
						_, err := client.CreateCertificate(context.Background(), &cav1.CreateCertificateRequest{Identity: workloadID, CsrPem: csrs[(i+w)%len(csrs)]})
						if err != nil {
							b.Error(err)
							return
						}
						lat.add(time.Since(t0))
					}
				}()
			}
			for i := 0; i < b.N; i++ {
				next <- i
			}
			close(next)
			wg.Wait()
			lat.report(b, time.Since(start))
		})
	}
}

type allowAll struct{}

func (allowAll) NodeServes(string, string) bool    { return true }
func (allowAll) GatewayExists(string, string) bool { return false }

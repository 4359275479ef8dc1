// Package hbone benchmarks internal/hbone on loopback: one bulk stream's
// throughput and request/response latency through a Dialer and a Server
// (real TLS 1.3 mTLS, HTTP/2 CONNECT, a real upstream TCP server), each
// next to the same measurement over plain TCP to the same upstream.
//
//	go test ./bench/hbone -run '^$' -bench . -benchtime 3s
package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/identity/identitytest"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("cluster.local")
	clientID = spiffeid.RequireFromSegments(td, "ns", "bench", "sa", "client")
	serverID = spiffeid.RequireFromSegments(td, "ns", "bench", "sa", "server")
)

type staticCerts map[spiffeid.ID]*tls.Certificate

func (s staticCerts) Get(_ context.Context, id spiffeid.ID) (*tls.Certificate, error) {
	return s[id], nil
}

// upstream runs serve per connection on loopback until the benchmark ends.
func upstream(b *testing.B, serve func(net.Conn)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); serve(c) }()
		}
	}()
	b.Cleanup(func() { _ = l.Close(); wg.Wait() })
	return l.Addr().String()
}

// tunnel starts an HBONE server dialing the CONNECT authority and returns a
// Dialer and the request to reach target through it.
func tunnel(b *testing.B, target string) (*hbone.Dialer, *hbone.DialRequest) {
	ca := identitytest.MustNewCA(b, td.Name(), time.Hour)
	src := staticCerts{clientID: ca.MustIssue(b, clientID, time.Hour), serverID: ca.MustIssue(b, serverID, time.Hour)}
	bundle := identity.NewBundle(td, []*x509.Certificate{ca.Root})
	quiet := slog.New(slog.DiscardHandler)
	srv, err := hbone.NewServer(hbone.ServerConfig{
		Source: src, Bundle: bundle, Identity: identity.FixedIdentity(serverID), Logger: quiet,
		Handler: hbone.HandlerFunc(func(ctx context.Context, req *hbone.Request) (io.ReadWriteCloser, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", req.Authority.String())
		}),
	})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, l) }()
	d, err := hbone.NewDialer(hbone.DialerConfig{Source: src, Bundle: bundle, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close(); cancel(); <-done })
	return d, &hbone.DialRequest{
		Address:     netip.MustParseAddrPort(l.Addr().String()),
		Authority:   target,
		Source:      clientID,
		Destination: []spiffeid.ID{serverID},
	}
}

type dialFunc func() (net.Conn, error)

func paths(b *testing.B, target string) map[string]dialFunc {
	d, req := tunnel(b, target)
	return map[string]dialFunc{
		"tcp":   func() (net.Conn, error) { return net.Dial("tcp", target) },
		"hbone": func() (net.Conn, error) { return d.Dial(context.Background(), req) },
		// A node proxy's outbound side: the client speaks plain TCP to a
		// local relay that tunnels it. "relay-pipe" copies the request
		// direction in its own goroutine through Conn.Write; "relay" hands
		// the client socket to the stream (DialRequest.Body).
		"relay-pipe": relayPath(b, d, req, false),
		"relay":      relayPath(b, d, req, true),
	}
}

func relayPath(b *testing.B, d *hbone.Dialer, tmpl *hbone.DialRequest, body bool) dialFunc {
	addr := upstream(b, func(c net.Conn) {
		req := *tmpl
		if body {
			req.Body = c
		}
		nc, err := d.Dial(context.Background(), &req)
		if err != nil {
			return
		}
		t := nc.(*hbone.Conn)
		defer t.Close()
		if body {
			_, _ = io.Copy(c, t)
			_ = c.(*net.TCPConn).CloseWrite()
			<-t.Sent()
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(t, c)
			_ = t.CloseWrite()
		}()
		_, _ = io.Copy(c, t)
		_ = c.(*net.TCPConn).CloseWrite()
		<-done
	})
	return func() (net.Conn, error) { return net.Dial("tcp", addr) }
}

// BenchmarkBulk sends b.N chunks of 256 KiB on one stream to a sink that
// discards them; MB/s is the goodput of that single stream.
func BenchmarkBulk(b *testing.B) {
	const chunk = 256 << 10
	sink := upstream(b, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		var ack [8]byte
		for i := range ack {
			ack[i] = byte(n >> (8 * i))
		}
		_, _ = c.Write(ack[:])
	})
	for _, name := range []string{"tcp", "hbone", "relay-pipe", "relay"} {
		b.Run(name, func(b *testing.B) {
			dial := paths(b, sink)[name]
			c, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			// Wait for the sink to have everything before stopping the clock.
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				b.Fatal(err)
			}
			var ack [8]byte
			if _, err := io.ReadFull(c, ack[:]); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			var n int64
			for i := range ack {
				n |= int64(ack[i]) << (8 * i)
			}
			if n != int64(b.N)*chunk {
				b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*chunk)
			}
		})
	}
}

// BenchmarkRequestResponse measures one 1 KiB request answered by a 1 KiB
// response on an established stream (as fortio's 1 KB payload over a kept
// connection), reporting p50/p99 latency.
func BenchmarkRequestResponse(b *testing.B) {
	const size = 1024
	echo := upstream(b, func(c net.Conn) {
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	for _, name := range []string{"tcp", "hbone", "relay-pipe", "relay"} {
		b.Run(name, func(b *testing.B) {
			dial := paths(b, echo)[name]
			c, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := make([]byte, size)
			resp := make([]byte, size)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
		})
	}
}

// BenchmarkDial measures opening a stream on a warm pooled connection
// (CONNECT round trip + upstream dial), against a plain TCP connect.
func BenchmarkDial(b *testing.B) {
	target := upstream(b, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	for _, name := range []string{"tcp", "hbone"} {
		b.Run(name, func(b *testing.B) {
			dial := paths(b, target)[name]
			warm, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			defer warm.Close()
			b.ResetTimer()
			for range b.N {
				c, err := dial()
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

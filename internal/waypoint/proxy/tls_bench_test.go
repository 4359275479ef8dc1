package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"

	"github.com/ambitmesh/ambit/internal/echo"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// benchEcho runs an HTTP echo backend for benchmarks.
func benchEcho(b *testing.B) netip.AddrPort {
	ctx, cancel := context.WithCancel(context.Background())
	s := echo.New(echo.Options{HTTPAddress: "127.0.0.1:0", Context: echo.Context{Pod: "bench"}})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	<-s.Ready()
	return netip.MustParseAddrPort(s.HTTPAddr().String())
}

// BenchmarkHTTPS measures requests through an HTTPS listener (ECDSA
// P-256, TLS 1.3) to an echo backend, with 1 KiB answers: on one
// keep-alive connection (HTTP/1.1 and HTTP/2), and with a new connection
// and full handshake per request.
func BenchmarkHTTPS(b *testing.B) {
	ca := newTestCA(b)
	sec, _ := ca.secret(b, "web", "web.example.com")
	ls := []*gatewayv1.Listener{tlsListenerProto("web", "HTTPS", "Terminate", "web.example.com", "web", "web")}
	g := startPort(b, FamilyTLS, 443, ls, []*gatewayv1.Backend{backend("web", benchEcho(b))}, sec)
	g.e.cfg.AccessLog = nil
	run := func(b *testing.B, c *http.Client) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := c.Get("https://web.example.com/?size=1024")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	b.Run("plain-http-baseline", func(b *testing.B) {
		l := &gatewayv1.Listener{Name: "http", Port: 80, Protocol: "HTTP", VirtualHosts: ls[0].VirtualHosts}
		h := startPort(b, FamilyHTTP, 80, []*gatewayv1.Listener{l}, []*gatewayv1.Backend{backend("web", benchEcho(b))})
		h.e.cfg.AccessLog = nil
		tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, h.addr)
		}}
		b.Cleanup(tr.CloseIdleConnections)
		b.ReportAllocs()
		for b.Loop() {
			resp, err := (&http.Client{Transport: tr}).Get("http://web.example.com/?size=1024")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.Run("keepalive-h1", func(b *testing.B) { run(b, httpsClient(b, g.addr, "web.example.com", ca.Pool, false)) })
	b.Run("keepalive-h2", func(b *testing.B) { run(b, httpsClient(b, g.addr, "web.example.com", ca.Pool, true)) })
	b.Run("handshake-per-request", func(b *testing.B) {
		c := httpsClient(b, g.addr, "web.example.com", ca.Pool, false)
		c.Transport.(*http.Transport).DisableKeepAlives = true
		run(b, c)
	})
}

// BenchmarkPassthroughConnect measures a new TLS connection through a
// Passthrough listener (ClientHello read and replayed, backend picked,
// bytes relayed) up to the end of the client's handshake with the backend.
func BenchmarkPassthroughConnect(b *testing.B) {
	ca := newTestCA(b)
	ls := []*gatewayv1.Listener{tlsListenerProto("pass", "TLS", "Passthrough", "db.example.com", "db")}
	g := startPort(b, FamilyTLS, 443, ls, []*gatewayv1.Backend{backend("db", startTLSEcho(b, ca, "db", "db.example.com"))})
	g.e.cfg.AccessLog = nil
	conf := &tls.Config{ServerName: "db.example.com", RootCAs: ca.Pool}
	b.ReportAllocs()
	for b.Loop() {
		raw, err := net.Dial("tcp", g.addr)
		if err != nil {
			b.Fatal(err)
		}
		c := tls.Client(raw, conf)
		if err := c.Handshake(); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

package hbone_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/identity/identitytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func wid(ns, sa string) spiffeid.ID {
	id, err := identity.WorkloadID(td, ns, sa)
	if err != nil {
		panic(err)
	}
	return id
}

var (
	clientID = wid("default", "client")
	serverID = wid("default", "server")
)

// certs issues (and caches) a leaf per identity from ca.
type certs struct {
	ca *identitytest.CA
	mu sync.Mutex
	m  map[spiffeid.ID]*tls.Certificate
}

func (c *certs) Get(_ context.Context, id spiffeid.ID) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert, ok := c.m[id]; ok {
		return cert, nil
	}
	now := time.Now()
	cert, err := c.ca.Issue(id, now.Add(-time.Hour), now.Add(time.Hour), false)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[spiffeid.ID]*tls.Certificate{}
	}
	c.m[id] = cert
	return cert, nil
}

// logBuf collects log lines from every goroutine.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.SplitSeq(l.b.String(), "\n") {
		if line != "" && strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// countingListener counts accepted connections and the ones still open.
type countingListener struct {
	net.Listener
	accepts atomic.Int64
	open    atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepts.Add(1)
	l.open.Add(1)
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// env is a CA, an HBONE server on loopback in front of a dialing handler,
// and a Dialer.
type env struct {
	t       testing.TB
	ca      *identitytest.CA
	src     *certs
	bundle  *identity.Bundle
	lis     *countingListener
	addr    netip.AddrPort
	logs    *logBuf
	handled atomic.Int64 // Handler calls
	reqs    chan *hbone.Request
	dialer  *hbone.Dialer
	// stop cancels Serve's context (the connections drain); served gets
	// Serve's result.
	stop   context.CancelFunc
	served chan error
}

type envOpts struct {
	server func(*hbone.ServerConfig)
	dialer func(*hbone.DialerConfig)
	// handler, when set, replaces the default (dial the authority over TCP).
	handler hbone.HandlerFunc
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{t: t, logs: &logBuf{}, reqs: make(chan *hbone.Request, 256)}
	e.ca = identitytest.MustNewCA(t, td.Name(), time.Hour)
	e.src = &certs{ca: e.ca}
	e.bundle = identity.NewBundle(td, []*x509.Certificate{e.ca.Root})
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := o.handler
	if h == nil {
		h = func(ctx context.Context, req *hbone.Request) (io.ReadWriteCloser, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", req.Authority.String())
			if err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	cfg := hbone.ServerConfig{
		Source:   e.src,
		Bundle:   e.bundle,
		Identity: identity.FixedIdentity(serverID),
		Handler: hbone.HandlerFunc(func(ctx context.Context, req *hbone.Request) (io.ReadWriteCloser, error) {
			e.handled.Add(1)
			select {
			case e.reqs <- req:
			default:
			}
			return h(ctx, req)
		}),
		Logger:           logger,
		HandshakeTimeout: 2 * time.Second,
	}
	if o.server != nil {
		o.server(&cfg)
	}
	srv, err := hbone.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.lis = &countingListener{Listener: l}
	e.addr = netip.MustParseAddrPort(l.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, e.lis) }()

	dcfg := hbone.DialerConfig{Source: e.src, Bundle: e.bundle, Logger: logger}
	if o.dialer != nil {
		o.dialer(&dcfg)
	}
	e.dialer, err = hbone.NewDialer(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	e.stop, e.served = cancel, done
	t.Cleanup(func() {
		_ = e.dialer.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

func (e *env) req(authority string) *hbone.DialRequest {
	return &hbone.DialRequest{
		Address:     e.addr,
		Authority:   authority,
		Source:      clientID,
		Destination: []spiffeid.ID{serverID},
	}
}

func (e *env) dial(authority string) net.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dialer.Dial(ctx, e.req(authority))
	if err != nil {
		e.t.Fatalf("Dial %s: %v", authority, err)
	}
	return c
}

// echoServer echoes every connection until the test ends; it half-closes
// its write side after the client's EOF.
func echoServer(t *testing.T) string {
	t.Helper()
	return tcpServer(t, func(c net.Conn) {
		bp := make([]byte, 32<<10)
		for {
			n, err := c.Read(bp)
			if n > 0 {
				if _, werr := c.Write(bp[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}

// tcpServer runs serve per accepted connection (then closes it) until the
// test ends.
func tcpServer(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// socketPair dials l and accepts: app is the application's end, body the
// end a tunnel reads (DialRequest.Body).
func socketPair(tb testing.TB, l net.Listener) (app, body net.Conn) {
	tb.Helper()
	app, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	body, err = l.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	return app, body
}

// closedPort is a loopback port nobody listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statusOf(err error) int {
	var se *hbone.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

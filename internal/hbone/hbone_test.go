package hbone_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
)

func TestEchoRoundTripAndBulk(t *testing.T) {
	e := newEnv(t, envOpts{})
	echo := echoServer(t)
	c := e.dial(echo)
	defer c.Close()

	// Small request/response.
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo = %q, %v; want \"ping\"", got, err)
	}

	// 16 MiB both ways at once (more than both HTTP/2 windows), then
	// half-close: the echo server sees EOF, closes, and we read EOF.
	const size = 16 << 20
	payload := make([]byte, size)
	_, _ = rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*hbone.Conn).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("read echo: %v after %d bytes", err, n)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != size {
		t.Fatalf("echoed %d bytes, want %d", n, size)
	}
	want := sha256.Sum256(payload)
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("echoed bytes differ from the payload")
	}
}

func TestHalfCloseKeepsReadSide(t *testing.T) {
	e := newEnv(t, envOpts{})
	// Reads to EOF, then answers with the byte count: only works if the
	// client's END_STREAM became a half-close (not a close) upstream.
	upstream := tcpServer(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "got %d", n)
	})
	c := e.dial(upstream)
	defer c.Close()
	if _, err := c.Write(bytes.Repeat([]byte("x"), 100000)); err != nil {
		t.Fatal(err)
	}
	if err := c.(*hbone.Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "got 100000" {
		t.Fatalf("upstream answered %q, want \"got 100000\"", got)
	}
	if _, err := c.Write([]byte("late")); err == nil {
		t.Fatal("Write after CloseWrite succeeded")
	}
}

func TestServerClosesFirst(t *testing.T) {
	e := newEnv(t, envOpts{})
	upstream := tcpServer(t, func(c net.Conn) { _, _ = c.Write([]byte("bye")) })
	c := e.dial(upstream)
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want \"bye\" then EOF", got, err)
	}
}

func TestStatusCodes(t *testing.T) {
	e := newEnv(t, envOpts{handler: func(ctx context.Context, req *hbone.Request) (io.ReadWriteCloser, error) {
		switch req.Authority.Port() {
		case 1:
			return nil, fmt.Errorf("node: %s: %w", req.Authority, hbone.ErrNotLocal)
		case 2:
			return nil, fmt.Errorf("node: policy ns/deny-all: %w", hbone.ErrDenied)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", req.Authority.String())
	}})
	echo := echoServer(t)
	cases := []struct {
		name      string
		authority string
		want      int // 0: success
		handled   bool
	}{
		{"ok", echo, 0, true},
		{"not local", "10.1.2.3:1", http.StatusBadRequest, true},
		{"denied", "10.1.2.3:2", http.StatusUnauthorized, true},
		{"upstream refused", closedPort(t), http.StatusServiceUnavailable, true},
		{"hostname authority", "example.com:80", http.StatusBadRequest, false},
		{"port zero", "10.1.2.3:0", http.StatusBadRequest, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.handled.Load()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := e.dialer.Dial(ctx, e.req(tc.authority))
			if c != nil {
				defer c.Close()
			}
			if got := statusOf(err); got != tc.want {
				t.Fatalf("Dial %s: status %d (err %v), want %d", tc.authority, got, err, tc.want)
			}
			if tc.want != 0 && c != nil {
				t.Fatal("Dial returned a conn with an error status")
			}
			if handled := e.handled.Load() > before; handled != tc.handled {
				t.Fatalf("handler called = %v, want %v", handled, tc.handled)
			}
		})
	}
}

func TestAnswers200OnlyAfterUpstreamConnected(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	echo := echoServer(t)
	e := newEnv(t, envOpts{handler: func(ctx context.Context, req *hbone.Request) (io.ReadWriteCloser, error) {
		close(entered)
		<-release
		var d net.Dialer
		return d.DialContext(ctx, "tcp", req.Authority.String())
	}})
	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := e.dialer.Dial(context.Background(), e.req(echo))
		res <- result{c, err}
	}()
	<-entered
	select {
	case r := <-res:
		t.Fatalf("Dial returned (%v) while the upstream was not connected yet", r.err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.c.Close()
}

func TestHeadersArriveParsed(t *testing.T) {
	e := newEnv(t, envOpts{})
	echo := echoServer(t)
	tp, err := hbone.ParseTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if err != nil {
		t.Fatal(err)
	}
	req := e.req(echo)
	req.Forwarded = hbone.Forwarded{For: netip.MustParseAddrPort("10.0.0.9:41234"), Host: "web.default.svc.cluster.local"}
	req.Baggage = hbone.Baggage{ClusterName: "c1", Namespace: "default", WorkloadKind: "deployment", WorkloadName: "client", ServiceName: "client", ServiceVersion: "v1", Region: "eu-west-1", Zone: "eu-west-1a"}
	req.TraceParent = tp
	c, err := e.dialer.Dial(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := <-e.reqs
	want := hbone.Request{
		Peer:        clientID,
		Authority:   netip.MustParseAddrPort(echo),
		Forwarded:   req.Forwarded,
		Baggage:     req.Baggage,
		TraceParent: tp,
	}
	if d := cmp.Diff(want, *got, cmp.FilterPath(func(p cmp.Path) bool {
		f := p.String()
		return f == "Header" || f == "LocalAddr" || f == "RemoteAddr"
	}, cmp.Ignore()), cmpopts.EquateComparable(spiffeid.ID{}, netip.AddrPort{})); d != "" {
		t.Fatalf("request at the handler (-want +got):\n%s", d)
	}
	if got.LocalAddr != e.addr {
		t.Errorf("LocalAddr = %v, want %v", got.LocalAddr, e.addr)
	}
	if got.RemoteAddr.String() != c.LocalAddr().String() {
		t.Errorf("RemoteAddr = %v, want the client's %v", got.RemoteAddr, c.LocalAddr())
	}
	for h, v := range map[string]string{
		"Forwarded":   `for="10.0.0.9:41234";host=web.default.svc.cluster.local`,
		"Baggage":     "k8s.cluster.name=c1,k8s.namespace.name=default,k8s.deployment.name=client,service.name=client,service.version=v1,cloud.region=eu-west-1,cloud.availability_zone=eu-west-1a",
		"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	} {
		if g := got.Header.Get(h); g != v {
			t.Errorf("header %s = %q, want %q", h, g, v)
		}
	}
	if ua := got.Header.Values("User-Agent"); len(ua) != 0 {
		t.Errorf("User-Agent sent: %q", ua)
	}
	if c.(*hbone.Conn).PeerID() != serverID {
		t.Errorf("PeerID = %v, want %v", c.(*hbone.Conn).PeerID(), serverID)
	}

	// Without a traceparent the client makes one and the server sees it.
	c2, err := e.dialer.Dial(context.Background(), e.req(echo))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got2 := <-e.reqs
	if sent := c2.(*hbone.Conn).TraceParent(); !sent.IsValid() || got2.TraceParent != sent {
		t.Fatalf("generated traceparent %v, server saw %v", sent, got2.TraceParent)
	}
	if got2.Header.Get("Forwarded") != "" || got2.Header.Get("Baggage") != "" {
		t.Fatalf("empty Forwarded/Baggage were sent: %v", got2.Header)
	}
}

// rawH2Client is an HTTP/2 client with a valid mesh certificate, for
// requests the Dialer would never send.
func rawH2Client(t *testing.T, e *env) *http.Client {
	cfg, err := identity.ClientConfig(e.src, e.bundle, clientID, []spiffeid.ID{serverID}, "h2")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http2.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestNonConnectIs400(t *testing.T) {
	e := newEnv(t, envOpts{})
	hc := rawH2Client(t, e)
	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, "https://"+e.addr.String()+"/", nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: status %d, want 400", method, resp.StatusCode)
		}
	}
	if n := e.handled.Load(); n != 0 {
		t.Fatalf("handler called %d times for non-CONNECT requests", n)
	}
	if n := len(e.logs.lines("stream refused")); n != 2 {
		t.Fatalf("%d 'stream refused' log lines, want 2:\n%s", n, e.logs.lines(""))
	}
}

func TestPoolReusesOneConnection(t *testing.T) {
	e := newEnv(t, envOpts{})
	echo := echoServer(t)
	for i := range 10 {
		c := e.dial(echo)
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != byte(i) {
			t.Fatalf("dial %d: echo %v, %v", i, b, err)
		}
		c.Close()
	}
	if n := e.lis.accepts.Load(); n != 1 {
		t.Fatalf("10 sequential dials made %d TCP connections, want 1", n)
	}
	// Another destination identity set is another pool key.
	req := e.req(echo)
	req.Destination = []spiffeid.ID{serverID, wid("default", "other")}
	c, err := e.dialer.Dial(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := e.lis.accepts.Load(); n != 2 {
		t.Fatalf("a different destination identity set made %d TCP connections in total, want 2", n)
	}
}

func TestPoolStreamLimit(t *testing.T) {
	cases := []struct {
		name       string
		serverMax  uint32
		streams    int
		wantConns  int64
		clientMax  int
		wantPerKey int
	}{
		{"client limit 100", 0, 101, 2, 0, 2},
		{"server advertises 5", 5, 11, 3, 0, 3},
		{"client configured 3", 0, 7, 3, 3, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{
				server: func(c *hbone.ServerConfig) { c.MaxConcurrentStreams = tc.serverMax },
				dialer: func(c *hbone.DialerConfig) { c.MaxStreamsPerConn = tc.clientMax },
			})
			echo := echoServer(t)
			var conns []net.Conn
			for range tc.streams {
				conns = append(conns, e.dial(echo))
			}
			if n := e.lis.accepts.Load(); n != tc.wantConns {
				t.Fatalf("%d open streams used %d TCP connections, want %d", tc.streams, n, tc.wantConns)
			}
			for k, n := range e.dialer.Conns() {
				if n != tc.wantPerKey {
					t.Fatalf("pool %v holds %d connections, want %d", k, n, tc.wantPerKey)
				}
			}
			// Every stream still works.
			for i, c := range conns {
				msg := []byte(strconv.Itoa(i))
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("stream %d echoed %q, %v", i, got, err)
				}
			}
			for _, c := range conns {
				c.Close()
			}
		})
	}
}

func TestConcurrentFirstDialsShareOneDial(t *testing.T) {
	var tcpDials atomic.Int64
	gate := make(chan struct{})
	e := newEnv(t, envOpts{dialer: func(c *hbone.DialerConfig) {
		c.DialTCP = func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			tcpDials.Add(1)
			<-gate // hold the first dial until every caller has started
			var d net.Dialer
			return d.DialContext(ctx, "tcp", dst.String())
		}
	}})
	echo := echoServer(t)
	const callers = 20
	var started, wg sync.WaitGroup
	started.Add(callers)
	errs := make(chan error, callers)
	conns := make(chan net.Conn, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			c, err := e.dialer.Dial(context.Background(), e.req(echo))
			if err != nil {
				errs <- err
				return
			}
			conns <- c
		}()
	}
	started.Wait()
	eventually(t, 5*time.Second, "the first TCP dial", func() bool { return tcpDials.Load() == 1 })
	close(gate)
	wg.Wait()
	close(errs)
	close(conns)
	for err := range errs {
		t.Fatal(err)
	}
	for c := range conns {
		c.Close()
	}
	if n := tcpDials.Load(); n != 1 {
		t.Fatalf("%d concurrent first dials made %d TCP dials, want 1", callers, n)
	}
	if n := e.lis.accepts.Load(); n != 1 {
		t.Fatalf("server accepted %d connections, want 1", n)
	}
}

func TestIdleConnectionReleased(t *testing.T) {
	e := newEnv(t, envOpts{dialer: func(c *hbone.DialerConfig) { c.IdleTimeout = 100 * time.Millisecond }})
	echo := echoServer(t)
	c := e.dial(echo)
	c.Close()
	eventually(t, 5*time.Second, "the idle connection to close", func() bool {
		return e.lis.open.Load() == 0 && len(e.dialer.Conns()) == 0
	})
	c = e.dial(echo)
	c.Close()
	if n := e.lis.accepts.Load(); n != 2 {
		t.Fatalf("dial after idle release: %d accepts, want 2", n)
	}
}

func TestBusyConnectionNotReleased(t *testing.T) {
	e := newEnv(t, envOpts{dialer: func(c *hbone.DialerConfig) { c.IdleTimeout = 50 * time.Millisecond }})
	echo := echoServer(t)
	c := e.dial(echo)
	defer c.Close()
	// Several idle periods pass with the stream open; it must keep working.
	for i := range 5 {
		time.Sleep(30 * time.Millisecond)
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("stream broke while open: %v", err)
		}
	}
	if n := e.lis.accepts.Load(); n != 1 {
		t.Fatalf("%d accepts, want 1", n)
	}
}

func TestDialContextCancelled(t *testing.T) {
	block := make(chan struct{})
	e := newEnv(t, envOpts{handler: func(ctx context.Context, req *hbone.Request) (io.ReadWriteCloser, error) {
		if req.Authority.Addr() == netip.MustParseAddr("10.0.0.1") {
			select {
			case <-block:
			case <-ctx.Done(): // the client's reset cancels the stream
			}
			return nil, errors.New("gave up")
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", req.Authority.String())
	}})
	defer close(block)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := e.dialer.Dial(ctx, e.req("10.0.0.1:80"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial = %v, want context.DeadlineExceeded", err)
	}
	// The slot was given back: the pool is usable and one connection remains.
	echo := echoServer(t)
	c := e.dial(echo)
	c.Close()
	if n := e.lis.accepts.Load(); n != 1 {
		t.Fatalf("%d accepts, want 1", n)
	}
}

func TestDialRequestValidation(t *testing.T) {
	e := newEnv(t, envOpts{})
	cases := map[string]func(*hbone.DialRequest){
		"no address":     func(r *hbone.DialRequest) { r.Address = netip.AddrPort{} },
		"bad authority":  func(r *hbone.DialRequest) { r.Authority = "10.0.0.1" },
		"no source":      func(r *hbone.DialRequest) { r.Source = spiffeid.ID{} },
		"no destination": func(r *hbone.DialRequest) { r.Destination = nil },
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			r := e.req("10.0.0.1:80")
			mut(r)
			if _, err := e.dialer.Dial(context.Background(), r); err == nil {
				t.Fatal("Dial accepted an invalid request")
			}
		})
	}
	if n := e.lis.accepts.Load(); n != 0 {
		t.Fatalf("invalid requests reached the network: %d accepts", n)
	}
}

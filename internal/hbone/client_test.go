package hbone_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
)

// serverTLS is the mesh server TLS config of e's CA, presenting serverID.
func serverTLS(t *testing.T, e *env) *tls.Config {
	t.Helper()
	cfg, err := identity.ServerConfig(e.src, e.bundle, identity.ServerOptions{Identity: identity.FixedIdentity(serverID), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// tlsServer serves each accepted mTLS connection with serve (on its own
// goroutine) until the test ends; it returns the address to dial.
func tlsServer(t *testing.T, e *env, serve func(*tls.Conn)) netip.AddrPort {
	t.Helper()
	cfg := serverTLS(t, e)
	addr := tcpServer(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		defer tc.Close()
		if err := tc.Handshake(); err != nil {
			return
		}
		serve(tc)
	})
	return netip.MustParseAddrPort(addr)
}

// TestClientInteropXNetServer: the Dialer against x/net's http2.Server
// (the reference implementation), to prove the client's wire format: the
// CONNECT and its headers arrive as a standard HTTP/2 request, bytes flow
// both ways through several streams of one connection (bulk beyond the
// windows), END_STREAM reads as the request body's EOF, and 401/503
// answers become StatusErrors.
func TestClientInteropXNetServer(t *testing.T) {
	e := newEnv(t, envOpts{})
	var mu sync.Mutex
	var seen []*http.Request
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		if r.Method != http.MethodConnect || r.ProtoMajor != 2 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		switch r.Host {
		case "10.9.9.9:401":
			w.WriteHeader(http.StatusUnauthorized)
			return
		case "10.9.9.9:503":
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		// Echo until the client's END_STREAM, then say how much came.
		buf := make([]byte, 32<<10)
		total := 0
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				total += n
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					_, _ = io.WriteString(w, "bye")
				}
				return
			}
		}
	})
	h2s := &http2.Server{}
	var accepts sync.WaitGroup
	var n int
	var nmu sync.Mutex
	addr := tlsServer(t, e, func(tc *tls.Conn) {
		nmu.Lock()
		n++
		nmu.Unlock()
		accepts.Add(1)
		defer accepts.Done()
		h2s.ServeConn(tc, &http2.ServeConnOpts{Handler: h})
	})
	req := func(authority string) *hbone.DialRequest {
		r := e.req(authority)
		r.Address = addr
		r.Forwarded = hbone.Forwarded{For: netip.MustParseAddrPort("10.0.1.7:43210"), Host: "web.default.svc.cluster.local"}
		r.Baggage = hbone.Baggage{Namespace: "default", WorkloadName: "client"}
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			c, err := e.dialer.Dial(ctx, req("10.0.2.5:8080"))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			// Bulk: 8 MiB each way, more than both windows, written while
			// the echo is read back.
			payload := make([]byte, 8<<20)
			_, _ = rand.Read(payload)
			got := make(chan []byte, 1)
			go func() {
				b, err := io.ReadAll(c)
				if err != nil {
					t.Errorf("stream %d: read: %v", i, err)
				}
				got <- b
			}()
			if _, err := c.Write(payload); err != nil {
				t.Errorf("stream %d: write: %v", i, err)
			}
			if err := c.(*hbone.Conn).CloseWrite(); err != nil {
				t.Errorf("stream %d: CloseWrite: %v", i, err)
			}
			b := <-got
			if !bytes.Equal(b, append(payload, "bye"...)) {
				t.Errorf("stream %d: echoed %d bytes (want %d + \"bye\"); ends %q", i, len(b), len(payload), b[max(0, len(b)-3):])
			}
		})
	}
	wg.Wait()

	for _, tc := range []struct {
		authority string
		want      int
	}{{"10.9.9.9:401", 401}, {"10.9.9.9:503", 503}} {
		c, err := e.dialer.Dial(ctx, req(tc.authority))
		if c != nil {
			c.Close()
		}
		if got := statusOf(err); got != tc.want {
			t.Fatalf("Dial %s: %v (status %d), want status %d", tc.authority, err, got, tc.want)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	r := seen[0]
	if r.Host != "10.0.2.5:8080" || r.URL.Path != "" || r.URL.Scheme != "" {
		t.Errorf("x/net saw :authority %q, path %q, scheme %q; want the authority only", r.Host, r.URL.Path, r.URL.Scheme)
	}
	if got := r.Header.Get("Forwarded"); got != `for="10.0.1.7:43210";host=web.default.svc.cluster.local` {
		t.Errorf("forwarded = %q", got)
	}
	if got := r.Header.Get("Baggage"); !strings.Contains(got, "k8s.namespace.name=default") {
		t.Errorf("baggage = %q", got)
	}
	if _, err := hbone.ParseTraceParent(r.Header.Get("Traceparent")); err != nil {
		t.Errorf("traceparent: %v", err)
	}
	if len(r.Header.Values("User-Agent")) != 0 {
		t.Errorf("user-agent sent: %q", r.Header.Values("User-Agent"))
	}
	nmu.Lock()
	defer nmu.Unlock()
	if n != 1 {
		t.Errorf("5 streams used %d connections, want 1", n)
	}
}

// rawServer is an HTTP/2 server speaking frames directly, for what a
// well-behaved server never does (stalls, GOAWAY, resets).
type rawServer struct {
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func newRawServer(t *testing.T, tc *tls.Conn, settings ...http2.Setting) *rawServer {
	s := &rawServer{fr: http2.NewFramer(tc, tc)}
	s.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	s.enc = hpack.NewEncoder(&s.buf)
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(tc, pre); err != nil {
		return nil
	}
	if err := s.fr.WriteSettings(settings...); err != nil {
		return nil
	}
	return s
}

// next returns the next frame of type T, skipping others.
func nextFrame[T http2.Frame](s *rawServer) (T, error) {
	for {
		f, err := s.fr.ReadFrame()
		if err != nil {
			var zero T
			return zero, err
		}
		if v, ok := f.(T); ok {
			return v, nil
		}
	}
}

func (s *rawServer) status(id uint32, code string, end bool) error {
	s.buf.Reset()
	_ = s.enc.WriteField(hpack.HeaderField{Name: ":status", Value: code})
	return s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.buf.Bytes(), EndHeaders: true, EndStream: end})
}

// TestDialStalls: every wait in opening a tunnel is bounded: a TCP peer
// that never speaks TLS and a TLS peer that never sends SETTINGS by
// HandshakeTimeout, a server that never answers the CONNECT by the Dial
// context (the stream is then reset with CANCEL).
func TestDialStalls(t *testing.T) {
	e := newEnv(t, envOpts{dialer: func(c *hbone.DialerConfig) { c.HandshakeTimeout = 300 * time.Millisecond }})
	silentTCP := netip.MustParseAddrPort(tcpServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }))
	silentH2 := tlsServer(t, e, func(tc *tls.Conn) { _, _ = io.Copy(io.Discard, tc) })
	rst := make(chan http2.ErrCode, 1)
	noAnswer := tlsServer(t, e, func(tc *tls.Conn) {
		s := newRawServer(t, tc)
		if s == nil {
			return
		}
		if _, err := nextFrame[*http2.MetaHeadersFrame](s); err != nil {
			return
		}
		if f, err := nextFrame[*http2.RSTStreamFrame](s); err == nil {
			rst <- f.ErrCode
		}
		_, _ = io.Copy(io.Discard, tc)
	})
	for _, tc := range []struct {
		name string
		addr netip.AddrPort
		want string
	}{
		{"no TLS", silentTCP, "TLS handshake"},
		{"no SETTINGS", silentH2, "SETTINGS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.req("10.0.0.1:80")
			r.Address = tc.addr
			start := time.Now()
			_, err := e.dialer.Dial(context.Background(), r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial = %v; want an error naming %s", err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("Dial took %v with a 300ms HandshakeTimeout", d)
			}
		})
	}
	t.Run("no answer", func(t *testing.T) {
		r := e.req("10.0.0.1:80")
		r.Address = noAnswer
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if _, err := e.dialer.Dial(ctx, r); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Dial = %v, want context.DeadlineExceeded", err)
		}
		select {
		case code := <-rst:
			if code != http2.ErrCodeCancel {
				t.Fatalf("stream reset with %v, want CANCEL", code)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the unanswered stream was not reset")
		}
	})
}

// TestGoAwayAndResetFromServer: a stream the server resets fails its
// reads with the reset named; after GOAWAY the connection takes no new
// stream (the next Dial opens another connection) while its accepted
// stream keeps working.
func TestGoAwayAndResetFromServer(t *testing.T) {
	e := newEnv(t, envOpts{})
	var mu sync.Mutex
	conns := 0
	addr := tlsServer(t, e, func(tc *tls.Conn) {
		mu.Lock()
		conns++
		first := conns == 1
		mu.Unlock()
		s := newRawServer(t, tc)
		if s == nil {
			return
		}
		for {
			h, err := nextFrame[*http2.MetaHeadersFrame](s)
			if err != nil {
				return
			}
			id := h.StreamID
			switch {
			case first && id == 1:
				// Answer, send a byte, then reset.
				_ = s.status(id, "200", false)
				_ = s.fr.WriteData(id, false, []byte("x"))
				_ = s.fr.WriteRSTStream(id, http2.ErrCodeInternal)
			case first && id == 3:
				_ = s.status(id, "200", false)
				_ = s.fr.WriteGoAway(3, http2.ErrCodeNo, nil)
				_ = s.fr.WriteData(id, true, []byte("still here"))
			default:
				_ = s.status(id, "200", false)
				_ = s.fr.WriteData(id, true, []byte("new conn"))
			}
		}
	})
	dial := func() net.Conn {
		r := e.req("10.0.0.1:80")
		r.Address = addr
		c, err := e.dialer.Dial(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1 := dial()
	b, err := io.ReadAll(c1)
	if err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR") {
		t.Fatalf("reset stream: read %q, %v; want an error naming INTERNAL_ERROR", b, err)
	}
	c1.Close()
	c2 := dial()
	if b, err := io.ReadAll(c2); err != nil || string(b) != "still here" {
		t.Fatalf("stream accepted before GOAWAY: %q, %v", b, err)
	}
	c2.Close()
	c3 := dial()
	if b, err := io.ReadAll(c3); err != nil || string(b) != "new conn" {
		t.Fatalf("stream after GOAWAY: %q, %v", b, err)
	}
	c3.Close()
	mu.Lock()
	defer mu.Unlock()
	if conns != 2 {
		t.Fatalf("%d connections, want 2 (a new one after GOAWAY)", conns)
	}
}

// TestCloseResetsAndReleases: Close of a stream still open both ways
// resets it (CANCEL) and gives its pool slot back, and blocked reads end.
func TestCloseResetsAndReleases(t *testing.T) {
	e := newEnv(t, envOpts{dialer: func(c *hbone.DialerConfig) { c.MaxStreamsPerConn = 1 }})
	echo := echoServer(t)
	c := e.dial(echo)
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		readErr <- err
	}()
	c.Close()
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked Read after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
	// Sent closes once the background close released the slot; with one
	// stream per connection the next dial reuses the connection only if
	// the slot came back.
	select {
	case <-c.(*hbone.Conn).Sent():
	case <-time.After(10 * time.Second):
		t.Fatal("Sent not closed after Close")
	}
	c2 := e.dial(echo)
	c2.Close()
	if n := e.lis.accepts.Load(); n != 1 {
		t.Fatalf("%d connections, want 1: the closed stream's slot was not released", n)
	}
}

// TestDirectWritesKeepOrder: small DATA frames are written to the
// upstream socket by the connection's reader while the stream's writer
// idles; once the upstream stops reading, its socket fills, the rest waits
// in the stream's buffer and the writer takes over. Every byte must
// arrive once and in order through both paths, in both directions.
func TestDirectWritesKeepOrder(t *testing.T) {
	// Small socket buffers towards the upstream, so that they fill.
	small := func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 16<<10)
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
		})
	}
	e := newEnv(t, envOpts{handler: func(ctx context.Context, req *hbone.Request) (io.ReadWriteCloser, error) {
		d := net.Dialer{Control: small}
		return d.DialContext(ctx, "tcp", req.Authority.String())
	}})
	start := make(chan struct{})
	const total = 3 << 20
	lc := net.ListenConfig{Control: small}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-start
		got, _ := io.ReadAll(c)
		_, _ = c.Write(got) // back through the client's direct path
	}()
	upstream := l.Addr().String()
	c := e.dial(upstream)
	defer c.Close()
	want := make([]byte, total)
	for i := range want {
		want[i] = byte(i * 7 / 1000)
	}
	wrote := make(chan error, 1)
	go func() {
		for p := want; len(p) > 0; p = p[min(len(p), 1000):] {
			if _, err := c.Write(p[:min(len(p), 1000)]); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- c.(*hbone.Conn).CloseWrite()
	}()
	// Let the upstream read only once its socket is certainly full: the
	// server's stream buffer holds what did not fit.
	eventually(t, 10*time.Second, "the client to have written 3 MiB", func() bool { return len(wrote) == 1 })
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	close(start)
	// The answer goes to a socket, as in the node proxy: io.Copy uses
	// Conn.WriteTo, whose idle periods the reader fills directly.
	got := make(chan []byte, 1)
	sinkAddr := tcpServer(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- b
	})
	sink, err := net.Dial("tcp", sinkAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(sink, c); err != nil {
		t.Fatal(err)
	}
	_ = sink.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("echoed %d bytes, want %d, equal=false", len(b), total)
	}
}

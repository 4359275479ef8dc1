package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/testkit"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// recorderGateway is a gateway routing everything to a recorder backend.
func recorderGateway(t *testing.T, cfg Config) (*gw, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := &http.Server{Handler: rec, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	g := startGateway(t, cfg, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("rec", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("rec", mustAddrPort(t, ln.Addr()))})
	return g, rec
}

func mustAddrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	return a.(*net.TCPAddr).AddrPort()
}

// rawConn is a client connection speaking bytes.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

func (c *rawConn) send(t *testing.T, raw string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
}

// response reads one response (for a request with method) and its body.
func (c *rawConn) response(t *testing.T, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// closed says whether the proxy closed the connection (EOF within 5s).
func (c *rawConn) closed() bool {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.br.ReadByte()
	return err == io.EOF
}

// Pipelined requests, sent in one write, are each forwarded once and
// answered in order, bodies (Content-Length and chunked) included.
func TestH1Pipelined(t *testing.T) {
	g, rec := recorderGateway(t, Config{})
	c := dialRaw(t, g.addr)
	c.send(t, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"+
		"\r\nGET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	for _, want := range []string{"path=/1", "path=/2", "path=/3", "path=/4"} {
		resp, body := c.response(t, "GET")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("response %d %q; want 200 %q", resp.StatusCode, body, want)
		}
	}
	if !c.closed() {
		t.Error("the connection stayed open after Connection: close")
	}
	got := rec.take()
	want := []string{"/1 ", "/2 hello", "/3 abcde", "/4 "}
	if len(got) != len(want) {
		t.Fatalf("backend saw %+v", got)
	}
	for i, s := range got {
		if s.path+" "+s.body != want[i] {
			t.Errorf("backend request %d: %s %q; want %q", i, s.path, s.body, want[i])
		}
	}
}

// HTTP/1.0 gets no keep-alive unless it asks, and then is told so.
func TestH1HTTP10(t *testing.T) {
	g, _ := recorderGateway(t, Config{})
	c := dialRaw(t, g.addr)
	c.send(t, "GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
	resp, body := c.response(t, "GET")
	if resp.StatusCode != 200 || body != "path=/a" || resp.Header.Get("Connection") != "keep-alive" || resp.ContentLength != int64(len(body)) {
		t.Fatalf("keep-alive HTTP/1.0: %d %q Connection %q Content-Length %d", resp.StatusCode, body, resp.Header.Get("Connection"), resp.ContentLength)
	}
	c.send(t, "GET /b HTTP/1.0\r\nHost: a\r\n\r\n")
	if resp, body = c.response(t, "GET"); body != "path=/b" {
		t.Fatalf("second request: %d %q", resp.StatusCode, body)
	}
	if !c.closed() {
		t.Error("an HTTP/1.0 request without keep-alive left the connection open")
	}
	// Without a Host, as HTTP/1.0 allows: the listener's "*" host serves it.
	c = dialRaw(t, g.addr)
	c.send(t, "GET /c HTTP/1.0\r\n\r\n")
	if resp, body = c.response(t, "GET"); resp.StatusCode != 200 || body != "path=/c" {
		t.Fatalf("HTTP/1.0 without Host: %d %q", resp.StatusCode, body)
	}
}

// A client sending "Expect: 100-continue" gets exactly one 100 Continue,
// once its body is wanted, then the answer.
func TestH1ExpectContinue(t *testing.T) {
	g, rec := recorderGateway(t, Config{})
	c := dialRaw(t, g.addr)
	c.send(t, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q, %v; want a 100 Continue before the body is sent", line, err)
	}
	if blank, _ := c.br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("100 Continue followed by %q", blank)
	}
	c.send(t, "body")
	resp, body := c.response(t, "POST")
	if resp.StatusCode != 200 || body != "path=/up" {
		t.Fatalf("after the body: %d %q (a second 100 would show here)", resp.StatusCode, body)
	}
	if got := rec.take(); len(got) != 1 || got[0].body != "body" {
		t.Errorf("backend saw %+v", got)
	}
	// The connection serves the next request.
	c.send(t, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body = c.response(t, "GET"); body != "path=/next" {
		t.Fatalf("next request: %d %q", resp.StatusCode, body)
	}
}

// A chunked request's trailers reach the backend.
func TestH1RequestTrailers(t *testing.T) {
	got := make(chan http.Header, 1)
	up := startH1Backend(t, func(_, _ int, r *http.Request, _ *bufio.Reader, w net.Conn) bool {
		b, _ := io.ReadAll(r.Body)
		got <- r.Trailer
		return ok(w, "", string(b))
	})
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("up", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("up", up.addr)})
	c := dialRaw(t, g.addr)
	c.send(t, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n4\r\ndata\r\n0\r\nX-Sum: 42\r\n\r\n")
	resp, body := c.response(t, "POST")
	if resp.StatusCode != 200 || body != "data" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if tr := <-got; tr.Get("X-Sum") != "42" {
		t.Errorf("backend trailers %v; want X-Sum: 42", tr)
	}
}

// HEAD: the head of the GET answer, no body, and the connection stays
// usable.
func TestH1Head(t *testing.T) {
	g, _ := recorderGateway(t, Config{})
	c := dialRaw(t, g.addr)
	c.send(t, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := c.response(t, "HEAD")
	if resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	if resp, body = c.response(t, "GET"); body != "path=/g" {
		t.Fatalf("GET after HEAD: %d %q (a HEAD body would show here)", resp.StatusCode, body)
	}
}

// writeCounter counts the writes to a connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int32
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A small response goes out in one write, head and body, and gets a
// Content-Length when the handler gave none.
func TestH1SmallResponseOneWrite(t *testing.T) {
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	client, server := net.Pipe()
	wc := &writeCounter{Conn: server}
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.serveH1(context.Background(), wc, 80, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-A", "1")
			_, _ = io.WriteString(w, "hello, ")
			_, _ = io.WriteString(w, "world")
		}), nil, nil)
	}()
	go func() { _, _ = io.WriteString(client, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") }()
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = client.Close()
	<-done
	if string(b) != "hello, world" || resp.ContentLength != 12 || resp.Header.Get("X-A") != "1" || resp.Header.Get("Date") == "" {
		t.Errorf("response %q, Content-Length %d, header %v", b, resp.ContentLength, resp.Header)
	}
	if n := wc.writes.Load(); n != 1 {
		t.Errorf("%d writes for the response; want 1", n)
	}
}

// A streamed body of unknown length is chunked, flushed as written, and
// ends with the handler's trailers.
func TestH1ChunkedResponseTrailers(t *testing.T) {
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	flushed := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		e.serveH1(context.Background(), c, 80, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Done")
			_, _ = io.WriteString(w, "part1")
			w.(http.Flusher).Flush()
			<-flushed
			_, _ = io.WriteString(w, "part2")
			w.Header().Set("X-Done", "yes")
			w.Header().Set(http.TrailerPrefix+"X-Late", "too")
		}), nil, nil)
	}()
	c := dialRaw(t, ln.Addr().String())
	c.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "part1" {
		t.Fatalf("first part %q, %v; want it flushed before the handler ends", buf, err)
	}
	close(flushed)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "part2" || resp.TransferEncoding == nil || resp.Trailer.Get("X-Done") != "yes" || resp.Trailer.Get("X-Late") != "too" {
		t.Errorf("rest %q, transfer encoding %v, trailer %v", rest, resp.TransferEncoding, resp.Trailer)
	}
}

// A client leaving while the upstream has not answered cancels the
// upstream request (its connection is closed), and the access log says DC.
func TestH1ClientGoneCancelsUpstream(t *testing.T) {
	upstreamClosed := make(chan struct{})
	var once sync.Once
	up := startH1Backend(t, func(_, _ int, r *http.Request, br *bufio.Reader, w net.Conn) bool {
		// Never answer: wait for the proxy to give the request up.
		_, _ = br.ReadByte()
		once.Do(func() { close(upstreamClosed) })
		return false
	})
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("up", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("up", up.addr)})
	c := dialRaw(t, g.addr)
	c.send(t, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
	testkit.Eventually(t, 5*time.Second, "the request at the backend", func() bool { return up.accepts.Load() == 1 })
	_ = c.Close()
	select {
	case <-upstreamClosed:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not cancelled 5s after the client left")
	}
	testkit.Eventually(t, 5*time.Second, "a DC access log line", func() bool {
		return strings.Contains(g.log.String(), `"path":"/hang","protocol":"HTTP/1.1","status":499,"flags":"DC"`)
	})
}

// Shutdown closes idle connections at once and lets a request in flight
// finish.
func TestH1Shutdown(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	up := startH1Backend(t, func(_, _ int, r *http.Request, _ *bufio.Reader, w net.Conn) bool {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		return ok(w, "", "done")
	})
	t.Cleanup(free) // before the backend's cleanup, which waits for it
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if err := e.Apply([]*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("up", 1))}}, "*")},
		nil, []*gatewayv1.Backend{backend("up", up.addr)}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.Serve(ctx, ln, 80, 10*time.Second) }()

	idle := dialRaw(t, ln.Addr().String())
	idle.send(t, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, body := idle.response(t, "GET"); body != "done" {
		t.Fatalf("idle connection's request: %q", body)
	}
	busy := dialRaw(t, ln.Addr().String())
	busy.send(t, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow request did not reach the backend")
	}
	cancel()
	start := time.Now()
	if !idle.closed() || time.Since(start) > 2*time.Second {
		t.Errorf("the idle connection was not closed at once on shutdown (%v)", time.Since(start))
	}
	free()
	resp, body := busy.response(t, "GET")
	if resp.StatusCode != 200 || body != "done" {
		t.Errorf("the request in flight at shutdown: %d %q; want it finished", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Error("the response finished during shutdown did not say Connection: close (the client would reuse the connection)")
	}
	if !busy.closed() {
		t.Error("the busy connection stayed open after its response")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Serve did not return after the last connection closed")
	}
}

// HTTPS connections that negotiate HTTP/1.1 are served by the same loop,
// with the connection's TLS state: the backend is told the scheme was
// https.
func TestH1OverHTTPS(t *testing.T) {
	ca := newTestCA(t)
	sec, _ := ca.secret(t, "web", "web.example.com")
	ls := []*gatewayv1.Listener{tlsListenerProto("web", "HTTPS", "Terminate", "web.example.com", "web", "web")}
	g := startPort(t, FamilyTLS, 443, ls, []*gatewayv1.Backend{backend("web", startEcho(t, "web-pod"))}, sec)
	c := httpsClient(t, g.addr, "web.example.com", ca.Pool, false)
	for range 2 { // the second on the kept-alive connection
		resp, err := c.Get("https://web.example.com/tls")
		if err != nil {
			t.Fatal(err)
		}
		var body echo.Response
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 1 {
			t.Fatalf("%s %d, %v", resp.Proto, resp.StatusCode, err)
		}
		if got := body.Headers["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "https" {
			t.Errorf("backend saw X-Forwarded-Proto %q; want https", got)
		}
	}
}

// The read header timeout bounds the head only: a body may take longer.
func TestH1SlowBodyOutlivesHeaderTimeout(t *testing.T) {
	g, rec := recorderGateway(t, Config{ReadHeaderTimeout: 200 * time.Millisecond})
	c := dialRaw(t, g.addr)
	c.send(t, "POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
	// The client pauses mid-body for longer than the header timeout: the
	// pause is the scenario, not a synchronisation.
	<-time.After(500 * time.Millisecond)
	c.send(t, "world")
	resp, body := c.response(t, "POST")
	if resp.StatusCode != 200 || body != "path=/slow" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if got := rec.take(); len(got) != 1 || got[0].body != "helloworld" {
		t.Errorf("backend saw %+v", got)
	}
}

// A client that stops reading its response does not hold the request
// (its goroutine and upstream connection) forever: a write that makes no
// progress for the idle timeout ends it, as Envoy's stream idle timeout.
func TestH1ClientNotReadingTimesOut(t *testing.T) {
	big := strings.Repeat("x", 32<<20) // beyond any socket buffers
	up := startH1Backend(t, func(_, _ int, r *http.Request, _ *bufio.Reader, w net.Conn) bool {
		return ok(w, "", big)
	})
	g := startGateway(t, Config{IdleTimeout: 300 * time.Millisecond},
		[]*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("up", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("up", up.addr)})
	c := dialRaw(t, g.addr)
	c.send(t, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
	// Never read: the request must still end, and be logged.
	testkit.Eventually(t, 10*time.Second, "a DC access log line for /big", func() bool {
		return strings.Contains(g.log.String(), `"path":"/big","protocol":"HTTP/1.1","status":200,"flags":"DC"`)
	})
}

// An answer that needs none of the request body (here a 404) is not held
// back until the client has sent all of it: a client that waits gets it,
// with Connection: close, after a bounded drain.
func TestH1AnswerBeforeBodyComplete(t *testing.T) {
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/only"), ref("x", 1))}}, "*")}, nil)
	c := dialRaw(t, g.addr)
	c.send(t, "POST /nomatch HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, body := c.response(t, "POST")
	if resp.StatusCode != http.StatusNotFound || !resp.Close {
		t.Fatalf("answer %d %q close=%v; want 404 and Connection: close", resp.StatusCode, body, resp.Close)
	}
	if !c.closed() {
		t.Error("the connection stayed open with the request body unfinished")
	}
}

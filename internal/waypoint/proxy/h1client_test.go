package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/testkit"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// h1Backend serves raw HTTP/1.1 on real sockets: handle gets each request
// of a connection (head read, body not) with the connection's index and
// the request's index on it, and writes what it likes; false closes the
// connection.
type h1Backend struct {
	addr    netip.AddrPort
	accepts atomic.Int32
}

func startH1Backend(t *testing.T, handle func(conn, req int, r *http.Request, br *bufio.Reader, c net.Conn) bool) *h1Backend {
	t.Helper()
	b := &h1Backend{}
	b.addr = startRawBackend(t, func(c *net.TCPConn) {
		defer c.Close()
		conn := int(b.accepts.Add(1)) - 1
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if !handle(conn, i, r, br, c) {
				return
			}
		}
	})
	return b
}

func (b *h1Backend) url(path string) string { return "http://" + b.addr.String() + path }

func newTestH1Client(t *testing.T) *h1Client {
	c := newH1Client((&net.Dialer{}).DialContext)
	t.Cleanup(c.Close)
	return c
}

// noDeadlineConn is a connection without deadlines, as an HBONE stream.
type noDeadlineConn struct{ net.Conn }

func (noDeadlineConn) SetDeadline(time.Time) error      { return os.ErrNoDeadline }
func (noDeadlineConn) SetReadDeadline(time.Time) error  { return os.ErrNoDeadline }
func (noDeadlineConn) SetWriteDeadline(time.Time) error { return os.ErrNoDeadline }

func h1Get(t *testing.T, c *h1Client, ctx context.Context, method, url string, body io.Reader) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, string(b), err
}

func ok(w net.Conn, extra, body string) bool {
	_, err := fmt.Fprintf(w, "HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s", extra, len(body), body)
	return err == nil
}

// TestH1ClientPoolsAndFramesResponses: keep-alive connections are reused
// for Content-Length, chunked (with trailers) and bodiless answers, and a
// response that says Connection: close, or has no length, is not reused.
func TestH1ClientPoolsAndFramesResponses(t *testing.T) {
	b := startH1Backend(t, func(conn, i int, r *http.Request, _ *bufio.Reader, w net.Conn) bool {
		switch r.URL.Path {
		case "/chunked":
			_, err := io.WriteString(w, "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n")
			return err == nil
		case "/close":
			ok(w, "Connection: close\r\n", "bye")
			return false
		case "/unframed":
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\n\r\nuntil-eof")
			return false
		case "/empty":
			_, err := io.WriteString(w, "HTTP/1.1 204 No Content\r\n\r\n")
			return err == nil
		}
		if r.Method == "HEAD" {
			_, err := io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
			return err == nil
		}
		return ok(w, "", fmt.Sprintf("conn %d req %d", conn, i))
	})
	c := newTestH1Client(t)
	ctx := t.Context()
	for i := range 3 {
		_, body, err := h1Get(t, c, ctx, "GET", b.url("/"), nil)
		if want := fmt.Sprintf("conn 0 req %d", i); err != nil || body != want {
			t.Fatalf("request %d: %q, %v; want %q", i, body, err, want)
		}
	}
	resp, body, err := h1Get(t, c, ctx, "GET", b.url("/chunked"), nil)
	if err != nil || body != "abcde" || resp.Trailer.Get("X-Sum") != "5" {
		t.Fatalf("chunked: %q trailer %v, %v", body, resp.Trailer, err)
	}
	if _, _, err := h1Get(t, c, ctx, "HEAD", b.url("/"), nil); err != nil {
		t.Fatal(err)
	}
	if resp, _, err := h1Get(t, c, ctx, "GET", b.url("/empty"), nil); err != nil || resp.StatusCode != 204 {
		t.Fatalf("204: %v", err)
	}
	if _, body, _ := h1Get(t, c, ctx, "GET", b.url("/"), nil); body != "conn 0 req 6" {
		t.Fatalf("after chunked, HEAD and 204 the connection was not reused: %q", body)
	}
	if _, body, err := h1Get(t, c, ctx, "GET", b.url("/close"), nil); err != nil || body != "bye" {
		t.Fatalf("close: %q, %v", body, err)
	}
	if _, body, _ := h1Get(t, c, ctx, "GET", b.url("/unframed"), nil); body != "until-eof" {
		t.Fatalf("unframed: %q", body)
	}
	if _, body, _ := h1Get(t, c, ctx, "GET", b.url("/"), nil); body != "conn 2 req 0" {
		t.Fatalf("after Connection: close and a close-delimited body, want a third connection, got %q", body)
	}
}

// TestH1ClientStaleConnection: a pooled connection the server closes
// without answering is retried once on a new one for a GET, never for a
// POST; a POST checks a pooled connection first, so one the server closed
// a while ago costs nothing.
func TestH1ClientStaleConnection(t *testing.T) {
	// Every connection answers its first request and drops the second
	// unanswered.
	b := startH1Backend(t, func(conn, i int, _ *http.Request, _ *bufio.Reader, w net.Conn) bool {
		return i == 0 && ok(w, "", fmt.Sprintf("conn %d", conn))
	})
	c := newTestH1Client(t)
	ctx := t.Context()
	if _, body, err := h1Get(t, c, ctx, "GET", b.url("/"), nil); err != nil || body != "conn 0" {
		t.Fatalf("%q, %v", body, err)
	}
	if _, body, err := h1Get(t, c, ctx, "GET", b.url("/"), nil); err != nil || body != "conn 1" {
		t.Fatalf("GET on a dropped connection: %q, %v; want it sent again on a new one", body, err)
	}
	_, _, err := h1Get(t, c, ctx, "POST", b.url("/"), nil)
	if err == nil {
		t.Fatal("POST on a dropped connection succeeded; it must not be sent twice")
	}
	if n := b.accepts.Load(); n != 2 {
		t.Fatalf("%d connections; the POST was sent again", n)
	}

	// A server that closes right after answering: once the close is
	// visible, a POST does not pick the dead connection.
	closing := startH1Backend(t, func(conn, _ int, _ *http.Request, _ *bufio.Reader, w net.Conn) bool {
		ok(w, "", fmt.Sprintf("conn %d", conn))
		return false
	})
	if _, _, err := h1Get(t, c, ctx, "GET", closing.url("/"), nil); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c, closing.addr.String())
	if _, body, err := h1Get(t, c, ctx, "POST", closing.url("/"), strings.NewReader("x")); err != nil || body != "conn 1" {
		t.Fatalf("POST after the server closed the pooled connection: %q, %v", body, err)
	}
}

// waitClosed waits until the peer's close of the idle connection to key
// is visible to a peek.
func waitClosed(t *testing.T, c *h1Client, key string) {
	t.Helper()
	c.mu.Lock()
	pc := c.idle[key][0]
	c.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for connAlive(pc.conn) {
		if time.Now().After(deadline) {
			t.Fatal("the server's close never showed")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestH1ClientEarlyResponse: a server that answers before reading an
// upload gets its answer through while the upload is still open, and the
// upload stops: the connection is closed, not reused.
func TestH1ClientEarlyResponse(t *testing.T) {
	closed := make(chan struct{})
	got := make(chan string, 1)
	b := startH1Backend(t, func(conn, _ int, _ *http.Request, br *bufio.Reader, w net.Conn) bool {
		if conn > 0 {
			return ok(w, "", "fresh")
		}
		if _, err := io.WriteString(w, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 4\r\n\r\nbig!"); err != nil {
			return false
		}
		// Read what the client uploads until it closes.
		b, _ := io.ReadAll(br)
		got <- string(b)
		close(closed)
		return false
	})
	c := newTestH1Client(t)
	pr, pw := io.Pipe()
	t.Cleanup(func() { _ = pw.Close() })
	req, _ := http.NewRequestWithContext(t.Context(), "POST", b.url("/upload"), pr)
	go func() { _, _ = pw.Write([]byte("first")) }()
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 413 || string(body) != "big!" || err != nil {
		t.Fatalf("early answer: %d %q %v", resp.StatusCode, body, err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the upload to a server that already answered was not stopped")
	}
	if up := <-got; !strings.Contains(up, "first") {
		t.Fatalf("the server did not get the upload's start: %q", up)
	}
	if _, body, err := h1Get(t, c, t.Context(), "GET", b.url("/"), nil); err != nil || body != "fresh" {
		t.Fatalf("next request: %q, %v; want a new connection", body, err)
	}
}

// TestH1ClientUpload: a streamed upload of unknown length goes chunked,
// and the connection is reused after it.
func TestH1ClientUpload(t *testing.T) {
	b := startH1Backend(t, func(conn, _ int, r *http.Request, _ *bufio.Reader, w net.Conn) bool {
		body, err := io.ReadAll(r.Body)
		return err == nil && ok(w, "", fmt.Sprintf("conn %d %v %s", conn, r.TransferEncoding, body))
	})
	c := newTestH1Client(t)
	for range 2 {
		_, body, err := h1Get(t, c, t.Context(), "PUT", b.url("/"), io.MultiReader(strings.NewReader("ab"), strings.NewReader("cd")))
		if err != nil || body != "conn 0 [chunked] abcd" {
			t.Fatalf("%q, %v", body, err)
		}
	}
}

// TestH1ClientTimeoutsAndCancel: the context's deadline and cancellation
// abort a round trip waiting for the head or in the middle of the body;
// the connection is not reused.
func TestH1ClientTimeoutsAndCancel(t *testing.T) {
	t.Run("tcp", func(t *testing.T) { testH1ClientTimeouts(t, newTestH1Client(t)) })
	t.Run("stream-without-deadlines", func(t *testing.T) {
		c := newH1Client(func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			return noDeadlineConn{conn}, err
		})
		t.Cleanup(c.Close)
		testH1ClientTimeouts(t, c)
	})
}

func testH1ClientTimeouts(t *testing.T, c *h1Client) {
	b := startH1Backend(t, func(conn, _ int, r *http.Request, _ *bufio.Reader, w net.Conn) bool {
		switch r.URL.Path {
		case "/slow-head":
		case "/slow-body":
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
		default:
			return ok(w, "", fmt.Sprintf("conn %d", conn))
		}
		<-t.Context().Done()
		return false
	})
	t.Cleanup(c.Close) // before the backend's: it waits for the pooled connection to close
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := h1Get(t, c, ctx, "GET", b.url("/slow-head"), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow head: %v; want a deadline error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timed out after %v", d)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	resp, body, err := h1Get(t, c, ctx, "GET", b.url("/slow-body"), nil)
	if resp == nil || body != "half" || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow body: %q, %v; want the half and a deadline error", body, err)
	}
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, _, err := h1Get(t, c, ctx, "GET", b.url("/slow-head"), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, body, _ := h1Get(t, c, t.Context(), "GET", b.url("/"), nil); body != "conn 3" {
		t.Fatalf("after three aborted round trips: %q; want a fourth connection", body)
	}
}

// TestH1ClientInformational: 1xx answers before the final one reach the
// client trace (ReverseProxy forwards them downstream), up to a bound.
func TestH1ClientInformational(t *testing.T) {
	b := startH1Backend(t, func(_ int, _ int, r *http.Request, _ *bufio.Reader, w net.Conn) bool {
		n := 1
		if r.URL.Path == "/many" {
			n = h1Max1xx + 1
		}
		for range n {
			_, _ = io.WriteString(w, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
		}
		return ok(w, "", "final")
	})
	c := newTestH1Client(t)
	var hints []string
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
			return nil
		},
	})
	resp, body, err := h1Get(t, c, ctx, "GET", b.url("/"), nil)
	if err != nil || resp.StatusCode != 200 || body != "final" || len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" {
		t.Fatalf("%v %q %v hints %q", resp, body, err, hints)
	}
	if _, _, err := h1Get(t, c, t.Context(), "GET", b.url("/many"), nil); !errors.Is(err, errH1Too1xx) {
		t.Fatalf("%d informational answers: %v", h1Max1xx+1, err)
	}
}

// TestH1WriteHead: a bodiless request's head reads back as sent, with
// http.Request.Write's framing, and a header a filter could have broken
// is refused by checkHead.
func TestH1WriteHead(t *testing.T) {
	req, _ := http.NewRequest("DELETE", "http://10.0.0.1:8080/a%2Fb/c?x=1&y", nil)
	req.Host = "shop.example.com"
	req.Header = http.Header{"User-Agent": {""}, "X-Two": {"1", " 2 "}, "Content-Length": {"7"}, "Te": {"trailers"}}
	var buf strings.Builder
	w := bufio.NewWriter(&buf)
	if err := checkHead(req); err != nil {
		t.Fatal(err)
	}
	writeHead(w, req)
	_ = w.Flush()
	got, err := http.ReadRequest(bufio.NewReader(strings.NewReader(buf.String())))
	if err != nil {
		t.Fatalf("%v in %q", err, buf.String())
	}
	if got.Method != "DELETE" || got.RequestURI != "/a%2Fb/c?x=1&y" || got.Host != "shop.example.com" ||
		got.ContentLength != 0 || got.Header.Get("Content-Length") != "0" || strings.Join(got.Header["X-Two"], ",") != "1,2" ||
		got.Header.Get("Te") != "trailers" || got.Header["User-Agent"] != nil {
		t.Fatalf("read back %q as %s %s host %q header %v", buf.String(), got.Method, got.RequestURI, got.Host, got.Header)
	}
	for name, h := range map[string]http.Header{
		"value with a line break": {"X-Inject": {"a\r\nEvil: 1"}},
		"name with a colon":       {"X:Bad": {"1"}},
	} {
		req.Header = h
		if err := checkHead(req); !errors.Is(err, errH1BadHead) {
			t.Errorf("%s: %v; want %v", name, err, errH1BadHead)
		}
	}
}

// TestEarlyAnswerThroughGateway: a backend that refuses an upload before
// reading it has its answer reach the client through the gateway while
// the client is still uploading, and its connection is not reused; a
// pooled connection the backend drops is replaced for the next GET
// without the client seeing an error.
func TestEarlyAnswerThroughGateway(t *testing.T) {
	up := startH1Backend(t, func(conn, i int, r *http.Request, br *bufio.Reader, w net.Conn) bool {
		if r.Method == "POST" {
			_, _ = io.WriteString(w, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
			_, _ = io.Copy(io.Discard, br) // until the gateway gives up the upload
			return false
		}
		// Each connection serves one GET, then drops the next unanswered.
		return i == 0 && ok(w, "", fmt.Sprintf("conn %d", conn))
	})
	g := startGateway(t, Config{},
		[]*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("up", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("up", up.addr)})
	c := client(t)
	pr, pw := io.Pipe()
	t.Cleanup(func() { _ = pw.Close() })
	go func() {
		for {
			if _, err := pw.Write(make([]byte, 1024)); err != nil {
				return
			}
		}
	}()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://"+g.addr+"/upload", pr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || string(body) != "too large" {
		t.Fatalf("%d %q; want the backend's early 413", resp.StatusCode, body)
	}
	for i, want := range []string{"conn 1", "conn 2"} {
		resp, err := c.Get("http://" + g.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("GET %d: %d %q; want %q (a new connection)", i, resp.StatusCode, body, want)
		}
	}
}

// TestH1ClientBadHeadKeepsPool: a request whose head cannot be written (a
// filter set a header value with a control byte) fails at once with 502
// and a log line naming the field; the pooled connection it was given is
// not blamed for it: no redial, and the next request reuses it.
func TestH1ClientBadHeadKeepsPool(t *testing.T) {
	b := startH1Backend(t, func(_, _ int, _ *http.Request, _ *bufio.Reader, c net.Conn) bool {
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	bad := rt("bad", prefix("/bad"), ref("up", 1))
	bad.Filters = []*gatewayv1.Filter{{Kind: &gatewayv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &gatewayv1.HeaderModifier{
		Set: []*gatewayv1.Header{{Name: "x-bad", Value: "a\x00b"}}}}}}
	routes := map[string][]*gatewayv1.Route{"*": {bad, rt("good", prefix("/"), ref("up", 1))}}
	logs := &testkit.LogBuffer{}
	g := startGateway(t, Config{Logger: testLogger(logs)}, []*gatewayv1.Listener{listener(routes, "*")}, []*gatewayv1.Backend{backend("up", b.addr)})
	get := func(path string) int {
		t.Helper()
		resp, err := http.Get("http://" + g.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if s := get("/one"); s != http.StatusOK {
		t.Fatalf("first request: %d", s)
	}
	if s := get("/bad"); s != http.StatusBadGateway {
		t.Errorf("request with an invalid header: %d; want 502", s)
	}
	waitLog(t, g.log, `"path":"/bad"`)
	if s := logs.String(); !strings.Contains(s, `"msg":"proxy: request not sent upstream","path":"/bad","error":"proxy: upstream `) ||
		!strings.Contains(s, `invalid value for header field \"X-Bad\"`) {
		t.Errorf("log %s; want a line naming the invalid field", s)
	}
	if s := get("/two"); s != http.StatusOK {
		t.Fatalf("request after the invalid one: %d", s)
	}
	if n := b.accepts.Load(); n != 1 {
		t.Errorf("backend accepted %d connections; want 1 (the pooled one kept)", n)
	}
}

// TestH1ClientBadHeadWithBody: a request with a body, written by
// http.Request.Write rather than writeHead, is held to the same rules: a
// filter's invalid header name or value gets 502 and a log line naming
// the field, nothing reaches the backend, and the pooled connection is
// neither closed nor joined by a new one.
func TestH1ClientBadHeadWithBody(t *testing.T) {
	var seen atomic.Int32
	b := startH1Backend(t, func(_, _ int, r *http.Request, _ *bufio.Reader, c net.Conn) bool {
		seen.Add(1)
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return false
		}
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	modify := func(name, path, header, value string) *gatewayv1.Route {
		r := rt(name, prefix(path), ref("up", 1))
		r.Filters = []*gatewayv1.Filter{{Kind: &gatewayv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &gatewayv1.HeaderModifier{
			Set: []*gatewayv1.Header{{Name: header, Value: value}}}}}}
		return r
	}
	routes := map[string][]*gatewayv1.Route{"*": {
		modify("badname", "/badname", "x bad:name", "1"),
		modify("badvalue", "/badvalue", "x-bad", "a\x00b"),
		rt("good", prefix("/"), ref("up", 1)),
	}}
	logs := &testkit.LogBuffer{}
	g := startGateway(t, Config{Logger: testLogger(logs)}, []*gatewayv1.Listener{listener(routes, "*")}, []*gatewayv1.Backend{backend("up", b.addr)})
	post := func(path string) int {
		t.Helper()
		resp, err := http.Post("http://"+g.addr+path, "text/plain", strings.NewReader("some body"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	idle := func() int {
		g.e.fast.mu.Lock()
		defer g.e.fast.mu.Unlock()
		return len(g.e.fast.idle[b.addr.String()])
	}
	if s := post("/one"); s != http.StatusOK {
		t.Fatalf("first request: %d", s)
	}
	for path, field := range map[string]string{
		"/badname":  `invalid header field name \"x bad:name\"`,
		"/badvalue": `invalid value for header field \"X-Bad\"`,
	} {
		if s := post(path); s != http.StatusBadGateway {
			t.Errorf("%s: %d; want 502", path, s)
		}
		waitLog(t, g.log, `"path":"`+path+`"`)
		if s := logs.String(); !strings.Contains(s, `"msg":"proxy: request not sent upstream","path":"`+path+`","error":"proxy: upstream `) ||
			!strings.Contains(s, field) {
			t.Errorf("%s: log %s; want a line naming the invalid field", path, s)
		}
		if n := idle(); n != 1 {
			t.Errorf("%s: %d idle connections to the backend; want the 1 pooled before", path, n)
		}
	}
	if n := seen.Load(); n != 1 {
		t.Errorf("backend saw %d requests; want 1 (the invalid ones not sent)", n)
	}
	if s := post("/two"); s != http.StatusOK {
		t.Fatalf("request after the invalid ones: %d", s)
	}
	if n := b.accepts.Load(); n != 1 {
		t.Errorf("backend accepted %d connections; want 1 (the pooled one kept)", n)
	}
}

// TestH1ClientResponseFraming: heads longer than the read buffer are read
// whole and bounded, an HTTP/1.0 keep-alive answer keeps its connection, a
// folded head, a body cut short and a malformed trailer are errors and
// cost the connection.
func TestH1ClientResponseFraming(t *testing.T) {
	long := strings.Repeat("v", 64<<10)
	b := startH1Backend(t, func(conn, i int, r *http.Request, _ *bufio.Reader, w net.Conn) bool {
		var err error
		switch r.URL.Path {
		case "/long":
			return ok(w, "X-Long: "+long+"\r\nX-After: 1\r\n", fmt.Sprintf("conn %d", conn))
		case "/huge":
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\n")
			for range 20 {
				_, _ = io.WriteString(w, "X-Long: "+long+"\r\n")
			}
			return false
		case "/http10":
			_, err = fmt.Fprintf(w, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 6\r\n\r\nconn %d", conn)
		case "/short":
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			return false
		case "/folded":
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n")
			return false
		case "/badtrailer":
			_, err = io.WriteString(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nBad Trailer: x\r\n\r\n")
		}
		return err == nil
	})
	c := newTestH1Client(t)
	ctx := t.Context()
	resp, body, err := h1Get(t, c, ctx, "GET", b.url("/long"), nil)
	if err != nil || body != "conn 0" || resp.Header.Get("X-Long") != long || resp.Header.Get("X-After") != "1" {
		t.Fatalf("64 KiB field: %q, %v", body, err)
	}
	if _, body, err := h1Get(t, c, ctx, "GET", b.url("/http10"), nil); err != nil || body != "conn 0" {
		t.Fatalf("HTTP/1.0 keep-alive after a long head: %q, %v; want the same connection", body, err)
	}
	if _, body, err := h1Get(t, c, ctx, "GET", b.url("/http10"), nil); err != nil || body != "conn 0" {
		t.Fatalf("after HTTP/1.0 keep-alive: %q, %v; want the same connection", body, err)
	}
	if _, _, err := h1Get(t, c, ctx, "GET", b.url("/huge"), nil); !errors.Is(err, errH1HeadTooLarge) {
		t.Fatalf("head over %d bytes: %v", h1MaxResponseHead, err)
	}
	if _, body, err := h1Get(t, c, ctx, "GET", b.url("/short"), nil); !errors.Is(err, io.ErrUnexpectedEOF) || body != "abc" {
		t.Fatalf("body cut short: %q, %v", body, err)
	}
	if _, _, err := h1Get(t, c, ctx, "GET", b.url("/folded"), nil); err == nil || !strings.Contains(err.Error(), "obsolete line folding") {
		t.Fatalf("obs-fold in a response head: %v", err)
	}
	if _, body, err := h1Get(t, c, ctx, "GET", b.url("/badtrailer"), nil); err == nil || body != "a" {
		t.Fatalf("malformed trailer: %q, %v", body, err)
	}
	if _, body, err := h1Get(t, c, ctx, "GET", b.url("/http10"), nil); err != nil || body == "conn 0" {
		t.Fatalf("after a malformed trailer: %q, %v; want a new connection", body, err)
	}
}

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambitmesh/ambit/internal/testkit"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// seen is one request as the backend received it.
type seen struct {
	method, path string
	contentLength,
	transferEncoding []string
	body string
}

// recorder is a backend that records every request and answers with its
// path, so a test can compare the request boundaries the proxy saw with
// the ones the backend saw.
type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	// The raw framing headers are gone from r.Header once parsed; what
	// arrived on the wire is in r.TransferEncoding and r.ContentLength.
	s := seen{method: r.Method, path: r.URL.Path, transferEncoding: r.TransferEncoding, body: string(body)}
	if r.ContentLength >= 0 && len(r.TransferEncoding) == 0 {
		s.contentLength = []string{fmt.Sprint(r.ContentLength)}
	}
	rec.reqs = append(rec.reqs, s)
	rec.mu.Unlock()
	_, _ = io.WriteString(w, "path="+r.URL.Path)
}

func (rec *recorder) take() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := rec.reqs
	rec.reqs = nil
	return out
}

// exchange writes raw on a fresh connection and reads every response
// until the proxy closes the connection (or 5 s pass).
func exchange(t *testing.T, addr, raw string) (statuses []int, bodies []string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the proxy neither answered nor closed the connection within 5s (after %v)", statuses)
			}
			return statuses, bodies
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		statuses, bodies = append(statuses, resp.StatusCode), append(bodies, string(b))
		if resp.Close {
			return statuses, bodies
		}
	}
}

func TestMalformedHTTP1(t *testing.T) {
	rec := &recorder{}
	be := startHandler(t, rec)
	g := startGateway(t, Config{MaxHeaderBytes: 8 << 10},
		[]*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("rec", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("rec", be)})
	big := strings.Repeat("a", 16<<10) // the limit plus net/http's 4 KiB slack, and more

	// Refused by the listener: nothing reaches the backend, the
	// connection is closed, and the access log has a DPE line.
	for _, tc := range []struct {
		name, raw string
		status    int
		reason    string // in the access log's error and the metric's reason
	}{
		{"space in header name", "GET / HTTP/1.1\r\nHost: a\r\nX Bad: 1\r\n\r\n", 400, "bad_request"},
		{"space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"},
		{"NUL in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400, "bad_request"},
		{"bare CR in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400, "bad_request"},
		{"bad method byte", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request"},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400, "bad_request"},
		{"conflicting Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "bad_request"},
		{"non-numeric Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello", 400, "bad_request"},
		{"obfuscated Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501, "unsupported_transfer_encoding"},
		{"chunked then identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 501, "unsupported_transfer_encoding"},
		{"two Transfer-Encoding headers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 501, "unsupported_transfer_encoding"},
		{"unknown HTTP version", "GET / HTTP/9.9\r\nHost: a\r\n\r\n", 505, "unsupported_version"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n", 400, "bad_request"},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "unsupported_version"},
		{"HTTP/0.9 request line", "GET /\r\n\r\n", 400, "bad_request"},
		{"invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad_request"},
		{"empty Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400, "bad_request"},
		{"oversized header", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + big + "\r\n\r\n", 431, "header_too_large"},
		{"oversized request line", "GET /" + big + " HTTP/1.1\r\nHost: a\r\n\r\n", 431, "header_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rejected(tc.reason)
			statuses, _ := exchange(t, g.addr, tc.raw)
			if len(statuses) != 1 || statuses[0] != tc.status {
				t.Fatalf("responses %v, want one %d and the connection closed", statuses, tc.status)
			}
			if got := rec.take(); len(got) != 0 {
				t.Errorf("the backend received %+v", got)
			}
			if d := rejected(tc.reason) - before; d != 1 {
				t.Errorf("ambit_proxy_downstream_rejected_total{reason=%q} went up by %v, want 1", tc.reason, d)
			}
			want := fmt.Sprintf(`"status":%d,"flags":"DPE"`, tc.status)
			testkit.Eventually(t, 5*time.Second, "a DPE access log line", func() bool { return strings.Contains(g.log.String(), want) })
		})
	}

	// Smuggling: whatever the client's framing tricks, the backend sees
	// exactly the requests the proxy answered, re-framed by the proxy
	// (never both Content-Length and chunked), so proxy and backend
	// cannot disagree on where a request ends. Transfer-Encoding
	// overrides Content-Length (RFC 9112 §6.3).
	for _, tc := range []struct {
		name, raw string
		want      []seen // what the backend saw, in order
	}{
		{"CL.TE: chunked body hides a second request from a CL parser",
			"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 59\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
			// Both framings: the proxy answers by the chunked one and
			// closes the connection (RFC 9112 §6.1), so what a CL parser
			// in front took for the body is never served as a request.
			[]seen{{method: "POST", path: "/a", transferEncoding: []string{"chunked"}}}},
		{"HTTP/1.0 with Transfer-Encoding: framing the sender may have meant otherwise",
			"POST /c HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
			// RFC 9112 §6.1: treated as faulty framing, the connection
			// closed after the answer.
			[]seen{{method: "POST", path: "/c"}}},
		{"TE.CL: a CL parser would see a second request inside the chunk",
			"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2f\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\nX-Pad: 12345\r\n\r\n0\r\n\r\n",
			[]seen{{method: "POST", path: "/b", transferEncoding: []string{"chunked"}, body: "GET /smuggled HTTP/1.1\r\nHost: a\r\nX-Pad: 12345\r\n"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, bodies := exchange(t, g.addr, tc.raw)
			got := rec.take()
			if len(got) != len(tc.want) {
				t.Fatalf("backend saw %+v, want %+v (proxy answered %q)", got, tc.want, bodies)
			}
			for i, w := range tc.want {
				s := got[i]
				if s.method != w.method || s.path != w.path || s.body != w.body ||
					fmt.Sprint(s.transferEncoding) != fmt.Sprint(w.transferEncoding) ||
					(len(w.contentLength) > 0 && fmt.Sprint(s.contentLength) != fmt.Sprint(w.contentLength)) {
					t.Errorf("backend request %d: %+v, want %+v", i, s, w)
				}
				if len(s.transferEncoding) > 0 && len(s.contentLength) > 0 {
					t.Errorf("backend request %d has both Content-Length and Transfer-Encoding", i)
				}
				if i >= len(bodies) || bodies[i] != "path="+w.path {
					t.Errorf("proxy answer %d: %q, want the backend's answer for %s", i, bodies, w.path)
				}
			}
		})
	}

	t.Run("malformed chunked body", func(t *testing.T) {
		statuses, _ := exchange(t, g.addr, "POST /chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n")
		if len(statuses) != 1 || statuses[0] != 400 {
			t.Fatalf("responses %v, want one 400 (the client's fault, not the upstream's)", statuses)
		}
		testkit.Eventually(t, 5*time.Second, "a DPE access log line for /chunk", func() bool {
			return strings.Contains(g.log.String(), `"path":"/chunk","protocol":"HTTP/1.1","status":400,"flags":"DPE"`)
		})
		rec.take()
	})

	// Chunk sizes are hex digits only, as net/http and Envoy read them:
	// a sign, a prefix or junk after the digits is refused, not read as
	// a size another parser may read differently.
	for _, size := range []string{"+5", "-0", "0x5", "5 x", "5\x00", " 5", "5_0"} {
		t.Run("chunk size "+strconv.Quote(size), func(t *testing.T) {
			statuses, _ := exchange(t, g.addr, "POST /size HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+size+"\r\nhello\r\n0\r\n\r\n")
			if len(statuses) != 1 || statuses[0] != 400 {
				t.Fatalf("responses %v, want one 400", statuses)
			}
			rec.take()
		})
	}
	t.Run("chunk extension after whitespace", func(t *testing.T) {
		statuses, bodies := exchange(t, g.addr, "POST /ext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5 ;a=b\r\nhello\r\n0\r\n\r\n")
		if len(statuses) != 1 || statuses[0] != 200 || bodies[0] != "path=/ext" {
			t.Fatalf("responses %v %q, want one 200", statuses, bodies)
		}
		// (A refused body's request may reach the backend late: only
		// this one's is looked at.)
		var ext []seen
		for _, s := range rec.take() {
			if s.path == "/ext" {
				ext = append(ext, s)
			}
		}
		if len(ext) != 1 || ext[0].body != "hello" {
			t.Errorf("backend saw %+v for /ext, want one with body hello", ext)
		}
	})

	t.Run("still serving", func(t *testing.T) {
		statuses, bodies := exchange(t, g.addr, "GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if len(statuses) != 1 || statuses[0] != 200 || bodies[0] != "path=/ok" {
			t.Errorf("after the bad input: %v %q", statuses, bodies)
		}
	})
}

// TestSlowClients: a client trickling its request head is cut off at the
// read header timeout, however steadily it sends, and an idle keep-alive
// connection is closed at the idle timeout.
func TestSlowClients(t *testing.T) {
	v1 := startEcho(t, "v1")
	logs := &testkit.LogBuffer{}
	g := startGateway(t, Config{ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 400 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))},
		[]*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("v1", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("v1", v1)})

	t.Run("trickled head", func(t *testing.T) {
		before := rejected("header_timeout")
		conn, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		closed := make(chan time.Duration, 1)
		start := time.Now()
		go func() {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.Copy(io.Discard, conn)
			closed <- time.Since(start)
		}()
		// One header line every 50 ms, for up to 10 s: never a complete head.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n")
		for i := 0; ; i++ {
			select {
			case d := <-closed:
				if d > 3*time.Second {
					t.Errorf("closed after %v, want about the 300ms read header timeout", d)
				}
				testkit.Eventually(t, 5*time.Second, "the header timeout log line", func() bool {
					return strings.Contains(logs.String(), "request head not received within the read header timeout")
				})
				if d := rejected("header_timeout") - before; d != 1 {
					t.Errorf("header_timeout went up by %v, want 1", d)
				}
				return
			case <-tick.C:
				if _, err := fmt.Fprintf(conn, "X-Slow-%d: 1\r\n", i); err != nil {
					continue // the proxy closed; the reader reports it
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the proxy kept a trickling head open for 10s")
			}
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		start := time.Now()
		if n, err := br.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("idle connection: read %d bytes, %v; want EOF at the idle timeout", n, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("idle connection closed after %v, want about 400ms", d)
		}
	})
}

// TestHTTP2Limits reads the SETTINGS the h2c listener announces: the
// per-client stream limit and flow-control windows bound what one client
// can make the proxy buffer.
func TestHTTP2Limits(t *testing.T) {
	v1 := startEcho(t, "v1")
	g := startGateway(t, Config{},
		[]*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("v1", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("v1", v1)})
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	want := map[http2.SettingID]uint32{
		http2.SettingMaxConcurrentStreams: DefaultMaxConcurrentStreams,
		http2.SettingInitialWindowSize:    64 << 10,
		http2.SettingMaxHeaderListSize:    DefaultMaxHeaderBytes,
	}
	for id, w := range want {
		v, ok := sf.Value(id)
		if !ok || v < w/2 || v > w*2 {
			t.Errorf("SETTINGS %v = %d (present %v), want about %d", id, v, ok, w)
		}
	}
	if v, _ := sf.Value(http2.SettingMaxConcurrentStreams); v != DefaultMaxConcurrentStreams {
		t.Errorf("MAX_CONCURRENT_STREAMS %d, want %d", v, DefaultMaxConcurrentStreams)
	}
}

// TestH2Spec runs the h2spec HTTP/2 conformance suite against an HTTP
// listener (h2c, prior knowledge) and an HTTPS listener (h2 by ALPN).
// .ci/run installs h2spec; without it the test skips.
func TestH2Spec(t *testing.T) {
	bin := findTool("h2spec")
	if bin == "" {
		t.Skip("h2spec not installed: go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	}
	t.Run("h2c", func(t *testing.T) {
		g := startGateway(t, Config{},
			[]*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("v1", 1))}}, "*")},
			[]*gatewayv1.Backend{backend("v1", startEcho(t, "v1"))})
		runH2Spec(t, bin, g.addr)
		// The proxy survived the suite's protocol violations.
		if r := g.do(t, client(t), "a", "/after-h2spec", nil); r.status != 200 {
			t.Errorf("after h2spec: %d", r.status)
		}
	})
	t.Run("h2 over TLS", func(t *testing.T) {
		ca := newTestCA(t)
		cert, _ := ca.secret(t, "cert", "h2spec.example.com")
		g := startPort(t, FamilyTLS, 443, []*gatewayv1.Listener{tlsListenerProto("https", "HTTPS", "Terminate", "", "v1", "cert")},
			[]*gatewayv1.Backend{backend("v1", startEcho(t, "v1"))}, cert)
		runH2Spec(t, bin, g.addr, "--tls", "--insecure")
		c := httpsClient(t, g.addr, "h2spec.example.com", ca.Pool, true)
		resp, err := c.Get("https://h2spec.example.com/after-h2spec")
		if err != nil {
			t.Fatalf("after h2spec: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Errorf("after h2spec: %s %d", resp.Proto, resp.StatusCode)
		}
	})
}

// runH2Spec runs h2spec against addr and fails on any failure but Go's
// HTTP/2 server's own (a plain net/http server fails the same cases): it
// answers an invalid preface over HTTP/1.1 instead of closing (h2c),
// closes the connection on a repeated SETTINGS_INITIAL_WINDOW_SIZE, and
// serves requests with connection-specific header fields instead of
// resetting the stream (the proxy drops those fields before forwarding).
func runH2Spec(t *testing.T, bin, addr string, args ...string) {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	out, err := exec.CommandContext(ctx, bin, append([]string{"--host", ap.Addr().String(), "--port", fmt.Sprint(ap.Port()),
		"--timeout", "3", "--junit-report", report}, args...)...).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("Failures:")) {
		t.Fatalf("h2spec: %v\n%s", err, tail(out, 40))
	}
	if !bytes.Contains(out, []byte(" passed, ")) {
		t.Fatalf("h2spec ran no tests:\n%s", tail(out, 40))
	}
	known := map[string]bool{
		"Sends invalid connection preface":                                                             true,
		"Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE":                                        true,
		"Sends a HEADERS frame that contains the connection-specific header field":                     true,
		`Sends a HEADERS frame that contains the TE header field with any value other than "trailers"`: true,
	}
	_, failures, _ := bytes.Cut(out, []byte("Failures:"))
	for l := range strings.Lines(string(failures)) {
		_, name, ok := strings.Cut(l, "× ")
		if !ok {
			continue
		}
		_, name, _ = strings.Cut(strings.TrimSpace(name), ": ")
		if !known[name] {
			t.Errorf("h2spec failure: %s", name)
		}
	}
	for l := range strings.Lines(string(out)) {
		if strings.Contains(l, " tests, ") {
			t.Logf("h2spec: %s", strings.TrimSpace(l))
		}
	}
	if t.Failed() {
		t.Logf("h2spec output:\n%s", tail(out, 80))
	}
}

// findTool looks in PATH, then in $GOBIN / $GOPATH/bin (go install).
func findTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dirs := []string{os.Getenv("GOBIN")}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func tail(b []byte, lines int) string {
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-lines):], "\n")
}

func rejected(reason string) float64 {
	var m dto.Metric
	_ = downstreamRejected.WithLabelValues(reason).Write(&m)
	return m.GetCounter().GetValue()
}

// startRawBackend accepts TCP connections and hands each to handle.
func startRawBackend(t testing.TB, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { handle(c.(*net.TCPConn)) })
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// TestUpstreamFailures: each way a backend can fail before answering
// gets Envoy's status and response flag in the access log, and the
// proxy keeps serving.
func TestUpstreamFailures(t *testing.T) {
	// Reads the request head, then closes: a clean FIN, no response.
	closes := startRawBackend(t, func(c *net.TCPConn) {
		_, _ = http.ReadRequest(bufio.NewReader(c))
		_ = c.Close()
	})
	// Reads the request head, then resets (RST: linger 0).
	resets := startRawBackend(t, func(c *net.TCPConn) {
		_, _ = http.ReadRequest(bufio.NewReader(c))
		_ = c.SetLinger(0)
		_ = c.Close()
	})
	// Answers a head with obsolete line folding.
	folds := startRawBackend(t, func(c *net.TCPConn) {
		_, _ = http.ReadRequest(bufio.NewReader(c))
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n")
		_ = c.Close()
	})
	unavailable := startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }))
	// Answers 503 once, then resets: a retry that fails otherwise.
	var flakyConns atomic.Int32
	flaky := startRawBackend(t, func(c *net.TCPConn) {
		_, _ = http.ReadRequest(bufio.NewReader(c))
		if flakyConns.Add(1) == 1 {
			_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		} else {
			_ = c.SetLinger(0)
		}
		_ = c.Close()
	})
	refused := netip.MustParseAddrPort("127.0.0.1:1") // nothing listens on port 1
	retried := func(name, svc string) *gatewayv1.Route {
		r := rt(name, prefix("/"+name), ref(svc, 1))
		r.Retry = &gatewayv1.Retry{Codes: []uint32{503}, Attempts: 2, Backoff: durationpb.New(time.Millisecond)}
		return r
	}
	routes := []*gatewayv1.Route{
		rt("closes", prefix("/closes"), ref("closes", 1)),
		rt("resets", prefix("/resets"), ref("resets", 1)),
		rt("folds", prefix("/folds"), ref("folds", 1)),
		rt("refused", prefix("/refused"), ref("refused", 1)),
		retried("retried-refused", "refused"),
		retried("retried-503", "unavailable"),
		retried("retried-then-reset", "flaky"),
	}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": routes}, "*")},
		[]*gatewayv1.Backend{backend("closes", closes), backend("resets", resets), backend("folds", folds), backend("refused", refused), backend("unavailable", unavailable), backend("flaky", flaky)})
	c := client(t)
	for _, tc := range []struct {
		path   string
		status int
		flags  string
	}{
		{"/closes", 503, "UC"},
		{"/resets", 503, "UR"},
		{"/folds", 503, "UC"},
		{"/refused", 503, "UF"},
		{"/retried-refused", 503, "UF,URX"},
		{"/retried-503", 503, "URX"},
		// Retries were left, but a reset after the request was sent is
		// not retried: not URX.
		{"/retried-then-reset", 503, "UR"},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			if r := g.do(t, c, "a", tc.path, nil); r.status != tc.status {
				t.Errorf("status %d, want %d", r.status, tc.status)
			}
			want := fmt.Sprintf(`"path":%q,"protocol":"HTTP/1.1","status":%d,"flags":%q`, tc.path, tc.status, tc.flags)
			testkit.Eventually(t, 5*time.Second, want, func() bool { return strings.Contains(g.log.String(), want) })
		})
	}
}

// zeros is an endless body that allocates nothing.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.left))
	clear(p[:n])
	z.left -= int64(n)
	return n, nil
}

// TestBodiesStreamed: 128 MiB up and 128 MiB down pass through the proxy
// while the whole process (client, proxy, backends) allocates a small
// fraction of that, so neither direction is buffered whole.
func TestBodiesStreamed(t *testing.T) {
	const size = 128 << 20
	sink := startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, n)
	}))
	v1 := startEcho(t, "v1")
	g := startGateway(t, Config{},
		[]*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("up", prefix("/up"), ref("sink", 1)), rt("down", prefix("/"), ref("v1", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("sink", sink), backend("v1", v1)})
	c := client(t)
	c.Timeout = time.Minute
	allocated := func() uint64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.TotalAlloc
	}
	// Warm up connections and pools, so the measurement is the transfer.
	g.do(t, c, "a", "/warm", nil)

	t.Run("upload", func(t *testing.T) {
		before := allocated()
		req, err := http.NewRequest("POST", "http://"+g.addr+"/up", &zeros{left: size})
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1 // chunked: the proxy cannot know the size up front
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != fmt.Sprint(size) {
			t.Fatalf("%d %q, want 200 and %d bytes received", resp.StatusCode, body, size)
		}
		a := allocated() - before
		t.Logf("allocated %d KiB", a>>10)
		if a > size/8 {
			t.Errorf("allocated %d MiB while %d MiB went up: the body is being buffered", a>>20, size>>20)
		}
	})
	t.Run("download", func(t *testing.T) {
		before := allocated()
		resp, err := c.Get(fmt.Sprintf("http://%s/down?size=%d", g.addr, size))
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			t.Fatalf("read %d bytes, %v; want %d", n, err, size)
		}
		a := allocated() - before
		t.Logf("allocated %d KiB", a>>10)
		if a > size/8 {
			t.Errorf("allocated %d MiB while %d MiB came down: the body is being buffered", a>>20, size>>20)
		}
	})
}

package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestForwarding: what the engine does to every request through a real
// listener: hop-by-hop fields dropped both ways (RFC 9110 §7.6.1), bodies
// streamed in both directions without waiting for their end, and upstream
// connections pooled per endpoint.
func TestForwarding(t *testing.T) {
	type seen struct {
		header http.Header
		remote string
	}
	var mu sync.Mutex
	var requests []seen
	gotFirst, sendRest, sendEvent := make(chan struct{}), make(chan struct{}), make(chan struct{})
	up := startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, seen{r.Header.Clone(), r.RemoteAddr})
		mu.Unlock()
		switch r.URL.Path {
		case "/upload":
			// Answer with what arrives before the client has sent the rest.
			buf := make([]byte, len("first"))
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			close(gotFirst)
			rest, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s+%s", buf, rest)
		case "/download":
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-sendRest
			_, _ = io.WriteString(w, "rest")
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-sendEvent
			_, _ = io.WriteString(w, "data: 1\n\n")
		case "/hints":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			w.Header().Set("Trailer", "X-Sum")
			w.Header().Set("X-Query", r.URL.RawQuery)
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-Sum", "4")
		default:
			w.Header().Set("Connection", "X-Resp-Hop")
			w.Header().Set("X-Resp-Hop", "1")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("X-End-To-End", "1")
		}
	}))
	routes := map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("up", 1))}}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(routes, "*")}, []*gatewayv1.Backend{backend("up", up)})
	c := client(t)

	t.Run("hop-by-hop fields", func(t *testing.T) {
		conn, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Raw, so the client library adds and strips nothing.
		_, _ = io.WriteString(conn, "GET /hop HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"+
			"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nTE: trailers, deflate\r\n"+
			"Trailer: X-T\r\nX-End-To-End: 1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		mu.Lock()
		h := requests[len(requests)-1].header
		mu.Unlock()
		for _, name := range []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Trailer"} {
			if v, ok := h[name]; ok {
				t.Errorf("upstream got hop-by-hop %s: %q", name, v)
			}
		}
		if h.Get("X-End-To-End") != "1" || h.Get("Te") != "trailers" {
			t.Errorf("upstream got X-End-To-End %q and TE %q, want 1 and trailers (only trailers survives)", h.Get("X-End-To-End"), h.Get("Te"))
		}
		for _, name := range []string{"X-Resp-Hop", "Keep-Alive"} {
			if v, ok := resp.Header[name]; ok {
				t.Errorf("client got hop-by-hop %s: %q", name, v)
			}
		}
		if resp.Header.Get("X-End-To-End") != "1" {
			t.Errorf("client lost X-End-To-End: %v", resp.Header)
		}
	})

	t.Run("1xx, trailers and forwarding fields", func(t *testing.T) {
		conn, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// No User-Agent: the upstream must not get Go's.
		_, _ = io.WriteString(conn, "GET /hints?x=1&y=2;z=3 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.9\r\n"+
			"X-Forwarded-Host: evil\r\nForwarded: for=10.0.0.8\r\n\r\n")
		br := bufio.NewReader(conn)
		hints, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if hints.StatusCode != http.StatusEarlyHints || hints.Header.Get("Link") != "</a.css>; rel=preload" {
			t.Fatalf("first answer %d %v, want 103 with the Link", hints.StatusCode, hints.Header)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "body" || resp.Trailer.Get("X-Sum") != "4" || resp.Header.Get("Link") != "" {
			t.Errorf("answer %d %q, trailer %v, header %v; want 200 body, X-Sum 4 as a trailer, no Link", resp.StatusCode, body, resp.Trailer, resp.Header)
		}
		// Go's parser drops "y=2;z=3"; the upstream must see what routing saw.
		if q := resp.Header.Get("X-Query"); q != "x=1" {
			t.Errorf("upstream query %q, want x=1", q)
		}
		mu.Lock()
		h := requests[len(requests)-1].header
		mu.Unlock()
		if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "10.0.0.9, 127.0.0.1" {
			t.Errorf("upstream X-Forwarded-For %q, want the client's list with the peer appended", got)
		}
		if h.Get("X-Forwarded-Proto") != "http" || h["X-Forwarded-Host"] != nil || h["Forwarded"] != nil || h["User-Agent"] != nil {
			t.Errorf("upstream header %v: want X-Forwarded-Proto http, no client X-Forwarded-Host, Forwarded or User-Agent", h)
		}
	})

	t.Run("request body streamed", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			_, _ = io.WriteString(pw, "first")
			select { // the rest only once the upstream has the start
			case <-gotFirst:
				_, _ = io.WriteString(pw, "rest")
				_ = pw.Close()
			case <-time.After(5 * time.Second):
				_ = pw.CloseWithError(fmt.Errorf("the upstream never received the start of the body: the proxy waits for its end"))
			}
		}()
		req, _ := http.NewRequest("POST", "http://"+g.addr+"/upload", pr)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if b, _ := io.ReadAll(resp.Body); string(b) != "first+rest" {
			t.Errorf("upstream answered %q, want first+rest", b)
		}
	})

	t.Run("response body streamed", func(t *testing.T) {
		defer func() {
			select {
			case <-sendRest:
			default:
				close(sendRest)
			}
		}()
		resp, err := c.Get("http://" + g.addr + "/download")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, len("first"))
		got := make(chan error, 1)
		go func() { _, err := io.ReadFull(resp.Body, buf); got <- err }()
		select {
		case err := <-got:
			if err != nil || string(buf) != "first" {
				t.Fatalf("read %q, %v; want first", buf, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the start of the response did not arrive while the upstream held the rest")
		}
		close(sendRest)
		if rest, _ := io.ReadAll(resp.Body); string(rest) != "rest" {
			t.Errorf("then %q, want rest", rest)
		}
	})

	t.Run("event stream head before its first event", func(t *testing.T) {
		defer close(sendEvent)
		got := make(chan *http.Response, 1)
		go func() {
			resp, err := c.Get("http://" + g.addr + "/events")
			if err != nil {
				t.Error(err)
				resp = nil
			}
			got <- resp
		}()
		select {
		case resp := <-got:
			if resp == nil {
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Errorf("head %d %v, want 200 text/event-stream", resp.StatusCode, resp.Header)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the head of an event stream did not arrive while the upstream held its first event")
		}
	})

	t.Run("upstream connections pooled per endpoint", func(t *testing.T) {
		mu.Lock()
		earlier := map[string]bool{}
		for _, r := range requests {
			earlier[r.remote] = true
		}
		requests = nil
		mu.Unlock()
		for range 20 {
			resp, err := c.Get("http://" + g.addr + "/pooled")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		mu.Lock()
		defer mu.Unlock()
		opened := map[string]bool{}
		for _, r := range requests {
			if !earlier[r.remote] {
				opened[r.remote] = true
			}
		}
		// The earlier subtests' pooled connections may serve some of them
		// (one returning to the pool late, after its body was drained, is
		// taken next): what matters is that 20 sequential requests opened
		// at most one connection, not 20.
		if len(requests) != 20 || len(opened) > 1 {
			t.Errorf("20 sequential requests opened %d new connections to the endpoint (%d requests), want at most 1", len(opened), len(requests))
		}
	})
}

// TestClientGoneMidResponse: a client that closes its connection while the
// response streams is the downstream's doing: the access log says DC, as
// Envoy's does, not UR (which blames the upstream and counts in its
// error rate), and the upstream's connection is closed, not reused.
func TestClientGoneMidResponse(t *testing.T) {
	upstreamSawClose := make(chan struct{})
	up := startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamSawClose)
		for {
			if _, err := io.WriteString(w, "chunk\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}))
	routes := map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("up", 1))}}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(routes, "*")}, []*gatewayv1.Backend{backend("up", up)})
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, len("chunk\n"))); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()
	select {
	case <-upstreamSawClose:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream connection stayed open after the client left")
	}
	waitLog(t, g.log, `"path":"/stream"`)
	if s := g.log.String(); !strings.Contains(s, `"flags":"DC"`) {
		t.Errorf("access log %s; want flags DC (the client left)", s)
	}
}

// TestTimeoutMidResponse: a route timeout that fires while the response
// body streams is an upstream timeout: the access log says UT, as it does
// for a timeout before the head (and as Envoy does), not UR.
func TestTimeoutMidResponse(t *testing.T) {
	up := startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "chunk\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	slow := rt("slow", prefix("/"), ref("up", 1))
	slow.Timeouts = &gatewayv1.Timeouts{Request: durationpb.New(200 * time.Millisecond)}
	routes := map[string][]*gatewayv1.Route{"*": {slow}}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(routes, "*")}, []*gatewayv1.Backend{backend("up", up)})
	resp, err := http.Get("http://" + g.addr + "/stalls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d; want 200 (the head arrived in time)", resp.StatusCode)
	}
	if b, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("body %q read to its end; want it cut short by the timeout", b)
	}
	waitLog(t, g.log, `"path":"/stalls"`)
	if s := g.log.String(); !strings.Contains(s, `"flags":"UT"`) {
		t.Errorf("access log %s; want flags UT (the route timeout fired mid-body)", s)
	}
}

// TestExpectContinue: a client that sends "Expect: 100-continue" gets one
// 100 Continue, as from Envoy (which answers it itself and does not pass
// the expectation on), not the proxy's own and the backend's relayed;
// a backend that answers before reading the body still gets its answer
// through.
func TestExpectContinue(t *testing.T) {
	up := startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusExpectationFailed)
			return
		}
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "got %d", len(b))
	}))
	routes := map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("up", 1))}}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(routes, "*")}, []*gatewayv1.Backend{backend("up", up)})
	h1 := &http.Transport{ExpectContinueTimeout: 10 * time.Second}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Transport{ExpectContinueTimeout: 10 * time.Second, Protocols: &p}
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2c.CloseIdleConnections)
	for _, tc := range []struct {
		tr     *http.Transport
		path   string
		status int
		body   string
	}{
		{h1, "/upload", http.StatusOK, "got 5"}, {h1, "/refuse", http.StatusExpectationFailed, ""},
		{h2c, "/upload", http.StatusOK, "got 5"}, {h2c, "/refuse", http.StatusExpectationFailed, ""},
	} {
		continues := 0
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
				if code == http.StatusContinue {
					continues++
				}
				return nil
			},
		})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+g.addr+tc.path, strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Expect", "100-continue")
		resp, err := tc.tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if tc.tr == h2c && resp.ProtoMajor != 2 {
			t.Fatalf("%s over h2c: answered over %s", tc.path, resp.Proto)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != tc.status || string(b) != tc.body {
			t.Errorf("%s %s: %d %q %v; want %d %q", resp.Proto, tc.path, resp.StatusCode, b, err, tc.status, tc.body)
		}
		if continues > 1 || tc.status == http.StatusOK && continues != 1 {
			t.Errorf("%s %s: %d 100 Continue answers; want one", resp.Proto, tc.path, continues)
		}
	}
}

package echo

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ambitmesh/ambit/internal/testkit"
	echov1 "github.com/ambitmesh/ambit/proto/ambit/echo/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testContext = Context{Namespace: "ns1", Ingress: "gw", Service: "svc1", Pod: "pod-a"}

// start runs a server on loopback ports and stops it (checking Run's
// result) when the test ends.
func start(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.HTTPAddress == "" && opts.GRPCAddress == "" && opts.TCPAddress == "" {
		opts.HTTPAddress, opts.GRPCAddress, opts.TCPAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	}
	if opts.Context == (Context{}) {
		opts.Context = testContext
	}
	s := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run ended before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("server not ready after 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return 10s after cancel")
		}
	})
	return s
}

type client struct {
	name  string
	proto string
	hc    *http.Client
}

// clients returns an HTTP/1.1 client and a prior-knowledge h2c client.
func clients(t *testing.T) []client {
	h1 := &http.Transport{}
	h1.Protocols = new(http.Protocols)
	h1.Protocols.SetHTTP1(true)
	h2 := &http.Transport{}
	h2.Protocols = new(http.Protocols)
	h2.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(func() { h1.CloseIdleConnections(); h2.CloseIdleConnections() })
	return []client{
		{"http1", "HTTP/1.1", &http.Client{Transport: h1}},
		{"h2c", "HTTP/2.0", &http.Client{Transport: h2}},
	}
}

func TestHTTPEchoJSON(t *testing.T) {
	s := start(t, Options{})
	addr := s.HTTPAddr().String()
	_, port, _ := net.SplitHostPort(addr)
	for _, c := range clients(t) {
		t.Run(c.name, func(t *testing.T) {
			var clientAddr string
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				GotConn: func(info httptrace.GotConnInfo) { clientAddr = info.Conn.LocalAddr().String() },
			})
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+addr+"/some//path?x=1&y=2", strings.NewReader("hello"))
			req.Host = "echo.example.com"
			req.Header.Set("X-Test", "a")
			req.Header.Add("X-Test", "b")
			resp, err := c.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, content type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			var got Response
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body is not a Response: %v\n%s", err, body)
			}
			want := Response{
				Path:       "/some//path?x=1&y=2",
				Host:       "echo.example.com",
				Method:     http.MethodPut,
				Proto:      c.proto,
				HTTPPort:   port,
				Context:    testContext,
				RemoteAddr: clientAddr,
				LocalAddr:  addr,
				BodyBytes:  5,
			}
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Response{}, "Headers")); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"a", "b"}, got.Headers["X-Test"]); diff != "" {
				t.Errorf("X-Test header (-want +got):\n%s", diff)
			}

			// The conformance suite decodes these names; a rename would
			// break it even though our own struct still round-trips.
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(body, &raw); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"path", "host", "method", "proto", "headers", "httpPort", "namespace", "ingress", "service", "pod", "remoteAddr"} {
				if _, ok := raw[key]; !ok {
					t.Errorf("JSON lacks %q: %s", key, body)
				}
			}
			if _, ok := raw["tls"]; ok {
				t.Errorf("plaintext answer carries tls: %s", body)
			}
		})
	}
}

func TestHTTPEchoTLS(t *testing.T) {
	s := New(Options{Context: testContext})
	ts := httptest.NewUnstartedServer(s.Handler())
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL + "/tls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Response
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := &TLSAssertions{Version: "TLSv1.3", NegotiatedProtocol: "h2", CipherSuite: got.TLS.CipherSuite}
	if diff := cmp.Diff(want, got.TLS); diff != "" {
		t.Errorf("tls (-want +got):\n%s", diff)
	}
	if got.TLS.CipherSuite == "" || got.Proto != "HTTP/2.0" {
		t.Errorf("want a cipher suite and HTTP/2.0, got %+v", got)
	}
}

func TestHTTPStatus(t *testing.T) {
	s := start(t, Options{})
	base := "http://" + s.HTTPAddr().String()
	tests := []struct {
		path     string
		want     int
		wantBody bool
	}{
		{"/status/200", 200, false},
		{"/status/201", 201, false},
		{"/status/404", 404, false},
		{"/status/418", 418, false},
		{"/status/503", 503, false},
		{"/status/599", 599, false},
		{"/status/302?delay=1ms", 302, false},
		{"/status/abc", 400, true},
		{"/status/99", 400, true},
		{"/status/100", 400, true},
		{"/status/600", 400, true},
		{"/status/2000", 400, true},
		{"/status/", 400, true},
	}
	for _, c := range clients(t) {
		c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		for _, tc := range tests {
			t.Run(c.name+tc.path, func(t *testing.T) {
				resp, err := c.hc.Get(base + tc.path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Errorf("status %d, want %d (%s)", resp.StatusCode, tc.want, body)
				}
				if hasBody := len(body) > 0; hasBody != tc.wantBody {
					t.Errorf("body %q, want a body: %v", body, tc.wantBody)
				}
				if tc.wantBody && !strings.Contains(string(body), "/status/NNN") {
					t.Errorf("error body does not say what is valid: %s", body)
				}
			})
		}
	}
}

func TestHTTPSetResponseHeaders(t *testing.T) {
	s := start(t, Options{})
	for _, path := range []string{"/", "/status/202", "/?size=3"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.HTTPAddr().String()+path, nil)
		req.Header.Add(EchoSetHeader, "X-One: 1, x-lower:two")
		req.Header.Add(EchoSetHeader, "X-One: 3")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// Header() canonicalises on read; the wire keeps "x-lower".
		got := map[string]string{"X-One": resp.Header.Get("X-One"), "X-Lower": resp.Header.Get("X-Lower")}
		want := map[string]string{"X-One": "1,3", "X-Lower": "two"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: response headers (-want +got):\n%s", path, diff)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestHTTPSize(t *testing.T) {
	s := start(t, Options{})
	base := "http://" + s.HTTPAddr().String()
	for _, c := range clients(t) {
		for _, n := range []int64{0, 1, 10 << 20} {
			t.Run(fmt.Sprintf("%s/%d", c.name, n), func(t *testing.T) {
				resp, err := c.hc.Get(base + "/any?size=" + strconv.FormatInt(n, 10))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				head := make([]byte, min(n, 40))
				if _, err := io.ReadFull(resp.Body, head); err != nil {
					t.Fatal(err)
				}
				rest, err := io.Copy(io.Discard, resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if got := int64(len(head)) + rest; got != n || resp.ContentLength != n {
					t.Errorf("read %d bytes, Content-Length %d; want %d", got, resp.ContentLength, n)
				}
				if !bytes.Equal(head, filler()[:len(head)]) {
					t.Errorf("body starts %q, want the filler pattern", head)
				}
			})
		}
	}
	for _, q := range []string{"size=-1", "size=x", "size=" + strconv.FormatInt(DefaultMaxSize+1, 10)} {
		resp, err := http.Get(base + "/?" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "size=") {
			t.Errorf("%s: status %d %s, want 400 naming size", q, resp.StatusCode, body)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestHTTPDelay(t *testing.T) {
	s := start(t, Options{MaxDelay: 40 * time.Second})
	base := "http://" + s.HTTPAddr().String()
	for _, c := range clients(t) {
		t.Run(c.name+"/waits", func(t *testing.T) {
			begin := time.Now()
			resp, err := c.hc.Get(base + "/?delay=100ms")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || time.Since(begin) < 100*time.Millisecond {
				t.Errorf("status %d after %s, want 200 after at least 100ms", resp.StatusCode, time.Since(begin))
			}
		})
		t.Run(c.name+"/client-gone", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/?delay=30s", nil)
			errc := make(chan error, 1)
			go func() {
				resp, err := c.hc.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			testkit.Eventually(t, 10*time.Second, "the delayed request is in flight", func() bool { return s.InFlight() == 1 })
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("client: %v, want context.Canceled", err)
			}
			// Well before 30s: the handler noticed the client left.
			testkit.Eventually(t, 10*time.Second, "the handler stopped", func() bool { return s.InFlight() == 0 })
		})
	}
	for _, q := range []string{"delay=abc", "delay=-1s", "delay=41s"} {
		resp, err := http.Get(base + "/?" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "40s") {
			t.Errorf("%s: status %d %s, want 400 naming the 40s limit", q, resp.StatusCode, body)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestGracefulShutdown(t *testing.T) {
	tests := []struct {
		name       string
		grace      time.Duration
		delay      string
		wantStatus int // 0: the request fails
	}{
		{"in-flight request finishes", 10 * time.Second, "300ms", 200},
		{"grace period over cuts it", 50 * time.Millisecond, "30s", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{HTTPAddress: "127.0.0.1:0", ShutdownTimeout: tc.grace})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			<-s.Ready()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			type result struct {
				status int
				err    error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := (&http.Client{Transport: tr}).Get("http://" + s.HTTPAddr().String() + "/?delay=" + tc.delay)
				if err != nil {
					res <- result{err: err}
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				res <- result{resp.StatusCode, err}
			}()
			testkit.Eventually(t, 10*time.Second, "request in flight", func() bool { return s.InFlight() == 1 })
			cancel()
			r := <-res
			if tc.wantStatus == 0 && r.err == nil {
				t.Errorf("request succeeded with %d, want it cut", r.status)
			}
			if tc.wantStatus != 0 && (r.err != nil || r.status != tc.wantStatus) {
				t.Errorf("got %d, %v; want %d", r.status, r.err, tc.wantStatus)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
			if _, err := net.Dial("tcp", s.HTTPAddr().String()); err == nil {
				t.Error("listener still accepts after Run returned")
			}
		})
	}
}

func TestWebSocketEcho(t *testing.T) {
	s := start(t, Options{})
	addr := s.HTTPAddr().String()
	ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, msg := range []any{"hello", strings.Repeat("x", 100_000), []byte{0, 1, 2, 255}} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		want := wsMessage{typ: websocket.TextFrame}
		switch msg := msg.(type) {
		case string:
			want.data = []byte(msg)
		case []byte:
			want = wsMessage{data: msg, typ: websocket.BinaryFrame}
		}
		var got wsMessage
		if err := wsCodec.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got.typ != want.typ || !bytes.Equal(got.data, want.data) {
			t.Errorf("got frame type %d with %d bytes, want type %d with %d", got.typ, len(got.data), want.typ, len(want.data))
		}
	}
}

func TestGRPCEcho(t *testing.T) {
	s := start(t, Options{})
	addr := s.GRPCAddr().String()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-test", "b", "x-test", "a")
	payload := []byte("payload bytes")

	tests := []struct {
		method string
		code   codes.Code
	}{
		{"/ambit.echo.v1.EchoService/Echo", codes.OK},
		{"/" + ConformanceService + "/Echo", codes.OK},
		{"/" + ConformanceService + "/EchoTwo", codes.OK},
		{"/" + ConformanceService + "/EchoThree", codes.Unimplemented},
	}
	for _, tc := range tests {
		t.Run(tc.method, func(t *testing.T) {
			var resp echov1.EchoResponse
			err := conn.Invoke(ctx, tc.method, &echov1.EchoRequest{Payload: payload}, &resp)
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if tc.code != codes.OK {
				return
			}
			a := resp.GetAssertions()
			want := &echov1.Assertions{
				FullyQualifiedMethod: tc.method,
				Authority:            addr,
				Context:              &echov1.Context{Namespace: "ns1", Ingress: "gw", ServiceName: "svc1", Pod: "pod-a"},
				LocalAddress:         addr,
				PeerAddress:          a.GetPeerAddress(),
			}
			if diff := cmp.Diff(want, a, protocmp.Transform(), protocmp.IgnoreFields(&echov1.Assertions{}, "headers")); diff != "" {
				t.Errorf("assertions (-want +got):\n%s", diff)
			}
			host, port, err := net.SplitHostPort(a.GetPeerAddress())
			if err != nil || host != "127.0.0.1" || port == "0" {
				t.Errorf("peer address %q, want 127.0.0.1:<port>", a.GetPeerAddress())
			}
			var xtest []string
			for _, h := range a.GetHeaders() {
				if h.GetKey() == "x-test" {
					xtest = append(xtest, h.GetValue())
				}
			}
			if diff := cmp.Diff([]string{"a", "b"}, xtest); diff != "" {
				t.Errorf("x-test metadata, sorted (-want +got):\n%s", diff)
			}
			if !bytes.Equal(resp.GetRequest().GetPayload(), payload) {
				t.Errorf("request payload %q, want %q", resp.GetRequest().GetPayload(), payload)
			}
		})
	}
}

func TestTCPEcho(t *testing.T) {
	s := start(t, Options{})
	for _, n := range []int{0, 1, 4 << 20} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			payload := make([]byte, n)
			_, _ = rand.Read(payload)
			c, err := net.Dial("tcp", s.TCPAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Write concurrently: the server echoes while we send, and
			// would block on a full socket buffer if nobody read.
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(payload)
				if err == nil {
					// Half-close: the server must still send everything back.
					err = c.(*net.TCPConn).CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Errorf("got %d bytes back, want the %d sent", len(got), n)
			}
		})
	}
}

func TestTCPClosedOnShutdown(t *testing.T) {
	s := New(Options{TCPAddress: "127.0.0.1:0"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Ready()
	c, err := net.Dial("tcp", s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n, err := c.Read(buf); err == nil {
		t.Errorf("read %d bytes after shutdown, want the connection closed", n)
	}
}

func TestRunErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"nothing enabled", Options{}, "nothing to serve"},
		{"port in use", Options{HTTPAddress: "127.0.0.1:0", GRPCAddress: busy.Addr().String()}, "listen grpc on"},
		{"bad address", Options{TCPAddress: "nonsense"}, "listen tcp on \"nonsense\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.opts)
			err := s.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run: %v, want an error containing %q", err, tc.wantErr)
			}
			if s.HTTPAddr() != nil {
				t.Errorf("HTTPAddr %v after a failed Run, want nil", s.HTTPAddr())
			}
		})
	}
	s := start(t, Options{})
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Run: %v, want an error", err)
	}
}

func TestConcurrentMixedLoad(t *testing.T) {
	// Many clients on both protocols at once: -race checks the handler and
	// the in-flight tracker.
	s := start(t, Options{})
	base := "http://" + s.HTTPAddr().String()
	cs := clients(t)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 100 {
		wg.Go(func() {
			c := cs[i%2]
			resp, err := c.hc.Get(base + "/?size=" + strconv.Itoa(i*100))
			if err != nil {
				errs <- err
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != int64(i*100) {
				errs <- fmt.Errorf("%s: %d bytes, %v; want %d", c.name, n, err, i*100)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDebugRequestLog(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		t.Run(level.String(), func(t *testing.T) {
			var logs testkit.LogBuffer
			s := start(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level}))})
			addr := s.HTTPAddr().String()
			resp, err := http.Get("http://" + addr + "/status/418?size=7")
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			http.DefaultClient.CloseIdleConnections()
			if resp.StatusCode != 418 || n != 7 {
				t.Errorf("status %d with %d bytes, want 418 with 7", resp.StatusCode, n)
			}
			// The debug path wraps the ResponseWriter; the WebSocket
			// handshake must still be able to hijack through it.
			ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://"+addr)
			if err != nil {
				t.Fatalf("websocket through the %s logging path: %v", level, err)
			}
			ws.Close()
			logged := strings.Contains(logs.String(), `msg="echo: http request" method=GET target="/status/418?size=7" proto=HTTP/1.1`) &&
				strings.Contains(logs.String(), "status=418 bytes=7")
			if logged != (level == slog.LevelDebug) {
				t.Errorf("at %s, request logged: %v; logs:\n%s", level, logged, logs.String())
			}
		})
	}
}

func TestShutdownClosesWebSockets(t *testing.T) {
	s := New(Options{HTTPAddress: "127.0.0.1:0", ShutdownTimeout: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Ready()
	addr := s.HTTPAddr().String()
	ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	testkit.Eventually(t, 10*time.Second, "websocket handler running", func() bool { return s.InFlight() == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still waits for an open WebSocket 10s after cancel")
	}
	var m wsMessage
	if err := wsCodec.Receive(ws, &m); err == nil {
		t.Error("websocket still open after shutdown")
	}
}

// BenchmarkHTTP1KB is the echo's own cost per keep-alive request with a 1 KB
// body (the shape of the proxy benchmarks), over loopback.
func BenchmarkHTTP1KB(b *testing.B) {
	for _, proto := range []string{"http1", "h2c"} {
		b.Run(proto, func(b *testing.B) {
			s := New(Options{HTTPAddress: "127.0.0.1:0"})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			<-s.Ready()
			tr := &http.Transport{MaxIdleConnsPerHost: 64, Protocols: new(http.Protocols)}
			if proto == "h2c" {
				tr.Protocols.SetUnencryptedHTTP2(true)
			} else {
				tr.Protocols.SetHTTP1(true)
			}
			hc := &http.Client{Transport: tr}
			url := "http://" + s.HTTPAddr().String() + "/?size=1024"
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := hc.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			b.StopTimer()
			tr.CloseIdleConnections()
			cancel()
			if err := <-done; err != nil {
				b.Error(err)
			}
		})
	}
}

// TestHTTPRetrySimulation: /retry/ fails the first succeedAfter requests
// of a uuid (with responseCode, or a connection reset), then echoes.
func TestHTTPRetrySimulation(t *testing.T) {
	s := start(t, Options{})
	base := "http://" + s.HTTPAddr().String() + "/retry/x"
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func(query string) (int, error) {
		resp, err := hc.Get(base + "?" + query)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.ReadAll(resp.Body)
		return resp.StatusCode, nil
	}
	for i, want := range []int{503, 503, 200, 200} {
		if got, err := get("uuid=a&succeedAfter=2&responseCode=503"); err != nil || got != want {
			t.Errorf("uuid a, request %d: %d, %v; want %d", i+1, got, err, want)
		}
	}
	if got, err := get("uuid=b&succeedAfter=1"); err == nil {
		t.Errorf("uuid b, request 1: status %d; want the connection reset", got)
	}
	if got, err := get("uuid=b&succeedAfter=1"); err != nil || got != 200 {
		t.Errorf("uuid b, request 2: %d, %v; want 200", got, err)
	}
	for _, q := range []string{"succeedAfter=1", "uuid=c", "uuid=c&succeedAfter=1&responseCode=abc", "uuid=c&succeedAfter=1&delayRetry=1h"} {
		if got, err := get(q); err != nil || got != 400 {
			t.Errorf("%s: %d, %v; want 400", q, got, err)
		}
	}
}

// selfSigned is a certificate for names, and a pool that trusts it.
func selfSigned(t *testing.T, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// With Options.TLS the HTTP port is an HTTPS port: HTTP/1.1 and HTTP/2 by
// ALPN, answers carrying the SNI the client sent, cleartext refused.
func TestHTTPSListener(t *testing.T) {
	cert, pool := selfSigned(t, "abc.example.com")
	s := start(t, Options{HTTPAddress: "127.0.0.1:0", TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	url := "https://" + s.HTTPAddr().String() + "/backend"
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "abc.example.com"}, Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP1(proto == "HTTP/1.1")
		tr.Protocols.SetHTTP2(proto == "HTTP/2.0")
		resp, err := (&http.Client{Transport: tr}).Get(url)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		var got Response
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		if got.Proto != proto || got.TLS == nil || got.TLS.ServerName != "abc.example.com" || got.Path != "/backend" {
			t.Errorf("%s: answer %+v (tls %+v), want proto %s, SNI abc.example.com, path /backend", proto, got, got.TLS, proto)
		}
	}
	resp, err := http.Get("http://" + s.HTTPAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("cleartext request to the HTTPS port: %s, want 400 Bad Request", resp.Status)
	}
}

package proxy

import (
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

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"golang.org/x/net/websocket"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/testkit"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startEcho runs an echo server named name and returns its address.
func startEcho(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := echo.New(echo.Options{HTTPAddress: "127.0.0.1:0", Context: echo.Context{Pod: name}})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("echo %s: %v", name, err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("echo %s: %v", name, err)
	}
	return netip.MustParseAddrPort(s.HTTPAddr().String())
}

// startHandler serves h on a real socket.
func startHandler(t *testing.T, h http.Handler) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return netip.MustParseAddrPort(ln.Addr().String())
}

func backend(name string, eps ...netip.AddrPort) *gatewayv1.Backend {
	b := &gatewayv1.Backend{Namespace: "default", Name: name, Hostname: name + ".default.svc.cluster.local",
		Ports: []*workloadv1.ServicePort{{Port: 80, Protocol: "TCP"}}}
	for i, ep := range eps {
		ip := ep.Addr().As4()
		b.Endpoints = append(b.Endpoints, &gatewayv1.Endpoint{
			Workload:  &gatewayv1.ObjectRef{Namespace: "default", Name: name + "-" + string(rune('a'+i))},
			Addresses: [][]byte{ip[:]},
			Ports:     []*workloadv1.PortMapping{{ServicePort: 80, TargetPort: uint32(ep.Port())}},
		})
	}
	return b
}

func ref(svc string, w uint32) *gatewayv1.BackendRef {
	return &gatewayv1.BackendRef{Service: "default/" + svc, Port: 80, Weight: w}
}

func prefix(p string) *gatewayv1.RouteMatch {
	return &gatewayv1.RouteMatch{Path: &gatewayv1.PathMatch{Type: gatewayv1.MatchType_MATCH_TYPE_PATH_PREFIX, Value: p}}
}

func rt(name string, m *gatewayv1.RouteMatch, bs ...*gatewayv1.BackendRef) *gatewayv1.Route {
	return &gatewayv1.Route{Source: &gatewayv1.RouteSource{Kind: "HTTPRoute", Namespace: "default", Name: name}, Match: m, Backends: bs}
}

func listener(hosts map[string][]*gatewayv1.Route, order ...string) *gatewayv1.Listener {
	l := &gatewayv1.Listener{Name: "http", Port: 80, Protocol: "HTTP"}
	for _, h := range order {
		l.VirtualHosts = append(l.VirtualHosts, &gatewayv1.VirtualHost{Hostname: h, Routes: hosts[h]})
	}
	return l
}

type gw struct {
	e    *Engine
	addr string
	log  *testkit.LogBuffer
}

// startGateway serves port 80 through Serve, the access log in gw.log.
func startGateway(t *testing.T, cfg Config, ls []*gatewayv1.Listener, bs []*gatewayv1.Backend) *gw {
	t.Helper()
	logs := &testkit.LogBuffer{}
	cfg.AccessLog = testLogger(logs)
	return serveEngine(t, cfg, logs, ls, bs, nil, func(ctx context.Context, e *Engine, ln net.Listener) error {
		return e.Serve(ctx, ln, 80, time.Second)
	})
}

// serveEngine applies the configuration to a new engine and serves it on
// a loopback port with serve until the test ends.
func serveEngine(t testing.TB, cfg Config, logs *testkit.LogBuffer, ls []*gatewayv1.Listener, bs []*gatewayv1.Backend, ss []*gatewayv1.Secret,
	serve func(context.Context, *Engine, net.Listener) error) *gw {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ls, nil, bs, ss...); err != nil {
		t.Fatalf("apply: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, e, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		e.Close()
	})
	return &gw{e: e, addr: ln.Addr().String(), log: logs}
}

func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type result struct {
	status int
	header http.Header
	echo   echo.Response
}

func (g *gw) do(t *testing.T, c *http.Client, host, path string, hdr map[string]string) result {
	t.Helper()
	return g.doMethod(t, c, "GET", host, path, hdr)
}

func (g *gw) doMethod(t *testing.T, c *http.Client, method, host, path string, hdr map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+g.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := result{status: resp.StatusCode, header: resp.Header}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &r.echo); err != nil {
			t.Fatalf("decode %q: %v", body, err)
		}
	}
	return r
}

func TestRouting(t *testing.T) {
	v1, v2, eu := startEcho(t, "v1"), startEcho(t, "v2"), startEcho(t, "eu")
	down := netip.MustParseAddrPort("127.0.0.1:1") // nothing listens on port 1
	hdrMatch := prefix("/")
	hdrMatch.Headers = []*gatewayv1.StringMatch{{Type: gatewayv1.MatchType_MATCH_TYPE_EXACT, Name: "x-region", Value: "eu"}}
	redirect := rt("redirect", prefix("/old"))
	redirect.Filters = []*gatewayv1.Filter{{Kind: &gatewayv1.Filter_RequestRedirect{RequestRedirect: &gatewayv1.Redirect{Hostname: "new.example.com", StatusCode: 301}}}}
	rewrite := rt("rewrite", prefix("/api"), ref("v1", 1))
	rewrite.Filters = []*gatewayv1.Filter{
		{Kind: &gatewayv1.Filter_UrlRewrite{UrlRewrite: &gatewayv1.URLRewrite{Hostname: "internal.example.com", Path: &gatewayv1.PathModifier{Kind: &gatewayv1.PathModifier_ReplacePrefixMatch{ReplacePrefixMatch: "/v2"}}}}},
		{Kind: &gatewayv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &gatewayv1.HeaderModifier{Set: []*gatewayv1.Header{{Name: "x-added", Value: "yes"}}, Remove: []string{"x-drop"}}}},
		{Kind: &gatewayv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &gatewayv1.HeaderModifier{Add: []*gatewayv1.Header{{Name: "x-resp", Value: "r"}}}}},
	}
	invalid := rt("invalid", prefix("/invalid"), &gatewayv1.BackendRef{Weight: 1, Invalid: "BackendNotFound"})
	timeout := rt("timeout", prefix("/slow"), ref("v1", 1))
	timeout.Timeouts = &gatewayv1.Timeouts{Request: durationpb.New(100 * time.Millisecond)}
	routes := map[string][]*gatewayv1.Route{
		"app.example.com": {
			rt("eu", hdrMatch, ref("eu", 1)),
			redirect, rewrite, invalid, timeout,
			rt("down", prefix("/down"), ref("down", 1)),
			rt("empty", prefix("/empty"), ref("empty", 1)),
			rt("default", prefix("/"), ref("v1", 1)),
		},
		"split.example.com": {rt("split", prefix("/"), ref("v1", 90), ref("v2", 10))},
	}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(routes, "app.example.com", "split.example.com")},
		[]*gatewayv1.Backend{backend("v1", v1), backend("v2", v2), backend("eu", eu), backend("down", down), backend("empty")})
	c := client(t)

	tests := []struct {
		name, host, path string
		hdr              map[string]string
		status           int
		pod              string
		check            func(t *testing.T, r result)
		flag             string
	}{
		{name: "default route", host: "app.example.com", path: "/x", status: 200, pod: "v1"},
		{name: "unknown host", host: "nope.example.com", path: "/", status: 404, flag: `"flags":"NR"`},
		{name: "header routing", host: "app.example.com", path: "/x", hdr: map[string]string{"x-region": "eu"}, status: 200, pod: "eu"},
		{name: "redirect", host: "app.example.com", path: "/old/a", status: 301, check: func(t *testing.T, r result) {
			if got, want := r.header.Get("Location"), "http://new.example.com/old/a"; got != want {
				t.Errorf("Location %q, want %q", got, want)
			}
		}},
		{name: "rewrite and header modifiers", host: "app.example.com", path: "/api/users?q=1", hdr: map[string]string{"x-drop": "1"}, status: 200, pod: "v1",
			check: func(t *testing.T, r result) {
				if r.echo.Path != "/v2/users?q=1" || r.echo.Host != "internal.example.com" {
					t.Errorf("upstream saw %s %s, want internal.example.com /v2/users?q=1", r.echo.Host, r.echo.Path)
				}
				if r.echo.Headers["X-Added"] == nil || r.echo.Headers["X-Drop"] != nil {
					t.Errorf("request headers %v: want X-Added and no X-Drop", r.echo.Headers)
				}
				if r.header.Get("X-Resp") != "r" {
					t.Errorf("response header X-Resp %q", r.header.Get("X-Resp"))
				}
				if len(r.echo.Headers["X-Request-Id"]) != 1 || r.echo.Headers["X-Forwarded-For"][0] != "127.0.0.1" {
					t.Errorf("x-request-id %v, x-forwarded-for %v", r.echo.Headers["X-Request-Id"], r.echo.Headers["X-Forwarded-For"])
				}
			}},
		{name: "xff appended, traceparent and request id kept", host: "app.example.com", path: "/",
			hdr: map[string]string{"X-Forwarded-For": "10.1.1.1", "X-Request-Id": "abc", "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, status: 200, pod: "v1",
			check: func(t *testing.T, r result) {
				h := r.echo.Headers
				if h["X-Forwarded-For"][0] != "10.1.1.1, 127.0.0.1" || h["X-Request-Id"][0] != "abc" || h["Traceparent"][0] != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
					t.Errorf("headers %v", h)
				}
			}},
		{name: "malformed traceparent replaced, its tracestate dropped, baggage kept", host: "app.example.com", path: "/",
			hdr: map[string]string{"Traceparent": "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "Tracestate": "a=b", "Baggage": "k=v"}, status: 200, pod: "v1",
			check: func(t *testing.T, r result) {
				h := r.echo.Headers
				tp := strings.Join(h["Traceparent"], ",")
				if len(tp) != 55 || !strings.HasPrefix(tp, "00-") || strings.Contains(tp, "0AF7") || h["Tracestate"] != nil || strings.Join(h["Baggage"], ",") != "k=v" {
					t.Errorf("traceparent %q tracestate %v baggage %v", tp, h["Tracestate"], h["Baggage"])
				}
			}},
		{name: "invalid backend", host: "app.example.com", path: "/invalid", status: 500},
		{name: "backend down", host: "app.example.com", path: "/down", status: 503, flag: `"flags":"UF"`},
		{name: "no endpoints", host: "app.example.com", path: "/empty", status: 503, flag: `"flags":"UH"`},
		{name: "request timeout", host: "app.example.com", path: "/slow?delay=2s", status: 504, flag: `"flags":"UT"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := g.do(t, c, tc.host, tc.path, tc.hdr)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d", r.status, tc.status)
			}
			if tc.pod != "" && r.echo.Pod != tc.pod {
				t.Errorf("served by %q, want %q", r.echo.Pod, tc.pod)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
			if tc.flag != "" {
				testkit.Eventually(t, 5*time.Second, "access log "+tc.flag, func() bool { return strings.Contains(g.log.String(), tc.flag) })
			}
		})
	}

	t.Run("weighted split", func(t *testing.T) {
		const n = 1000
		count := map[string]int{}
		for range n {
			count[g.do(t, c, "split.example.com", "/", nil).echo.Pod]++
		}
		// 90/10 over 1000: mean 100, sd ~9.5; 5 sd either side.
		if count["v2"] < 52 || count["v2"] > 148 || count["v1"]+count["v2"] != n {
			t.Errorf("split %v, want about 900/100", count)
		}
	})
}

func TestRetryOnSecondEndpoint(t *testing.T) {
	var failed atomic.Int64
	bad := startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		failed.Add(1)
		w.WriteHeader(503)
	}))
	good := startEcho(t, "good")
	r := rt("retry", prefix("/"), ref("svc", 1))
	r.Retry = &gatewayv1.Retry{Codes: []uint32{503}, Attempts: 1, Backoff: durationpb.New(time.Millisecond)}
	noRetry := rt("noretry", prefix("/"), ref("svc", 1))
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"retry": {r}, "noretry": {noRetry}}, "retry", "noretry")},
		[]*gatewayv1.Backend{backend("svc", bad, good)})
	c := client(t)
	for i := range 20 {
		if res := g.do(t, c, "retry", "/", nil); res.status != 200 || res.echo.Pod != "good" {
			t.Fatalf("request %d: %d from %q, want 200 from good\n%s", i, res.status, res.echo.Pod, g.log.String())
		}
	}
	if failed.Load() == 0 {
		t.Fatal("the failing endpoint was never tried, so no retry was exercised")
	}
	// Without a retry policy the 503s reach the client.
	saw503 := false
	for range 40 {
		if g.do(t, c, "noretry", "/", nil).status == 503 {
			saw503 = true
			break
		}
	}
	if !saw503 {
		t.Error("without retry no 503 in 40 requests")
	}
}

func TestDownstreamProtocols(t *testing.T) {
	v1 := startEcho(t, "v1")
	g := startGateway(t, Config{},
		[]*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("v1", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("v1", v1)})

	t.Run("h2c", func(t *testing.T) {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &p}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("http://" + g.addr + "/h2")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Fatalf("%s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		ws, err := websocket.Dial("ws://"+g.addr+"/ws", "", "http://"+g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		for _, msg := range []string{"hello", "again"} {
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil {
				t.Fatal(err)
			}
			if got != msg {
				t.Errorf("echoed %q, want %q", got, msg)
			}
		}
	})

}

func TestUpstreamResetMirrorMetricsReload(t *testing.T) {
	reset := startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	shadowHosts := make(chan string, 10)
	mirror := startHandler(t, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case shadowHosts <- r.Host:
		default:
		}
	}))
	v1, v2 := startEcho(t, "v1"), startEcho(t, "v2")
	mirrored := rt("mirrored", prefix("/m"), ref("v1", 1))
	mirrored.Filters = []*gatewayv1.Filter{{Kind: &gatewayv1.Filter_RequestMirror{RequestMirror: &gatewayv1.Mirror{Backend: ref("mirror", 1)}}}}
	perTry := rt("pertry", prefix("/pertry"), ref("v1", 1))
	perTry.Timeouts = &gatewayv1.Timeouts{BackendRequest: durationpb.New(50 * time.Millisecond)}
	routes := map[string][]*gatewayv1.Route{"*": {rt("reset", prefix("/reset"), ref("reset", 1)), mirrored, perTry, rt("all", prefix("/"), ref("v1", 1))}}
	bs := []*gatewayv1.Backend{backend("reset", reset), backend("mirror", mirror), backend("v1", v1), backend("v2", v2)}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(routes, "*")}, bs)
	c := client(t)

	t.Run("reset mid-response", func(t *testing.T) {
		// The head may still sit in the proxy's write buffer when the
		// handler aborts, so the client sees either no response or a
		// truncated body; never a complete one.
		resp, err := c.Get("http://" + g.addr + "/reset")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Error("truncated response read without error")
		}
		testkit.Eventually(t, 5*time.Second, "UR in the access log", func() bool {
			return strings.Contains(g.log.String(), `"path":"/reset","protocol":"HTTP/1.1","status":200,"flags":"UR"`)
		})
	})

	t.Run("mirror", func(t *testing.T) {
		if r := g.do(t, c, "app.example.com", "/m", nil); r.status != 200 || r.echo.Pod != "v1" {
			t.Fatalf("%d from %q", r.status, r.echo.Pod)
		}
		select {
		case h := <-shadowHosts:
			if h != "app.example.com-shadow" {
				t.Errorf("mirror saw host %q, want app.example.com-shadow", h)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("mirror never received the copy")
		}
	})

	t.Run("backend request timeout", func(t *testing.T) {
		if r := g.do(t, c, "a", "/pertry?delay=1s", nil); r.status != 504 {
			t.Errorf("status %d, want 504", r.status)
		}
		if r := g.do(t, c, "a", "/pertry", nil); r.status != 200 {
			t.Errorf("fast request: status %d, want 200", r.status)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if err := Register(reg); err != nil {
			t.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		// The 504 answers "upstream request timeout" (24 bytes) after a
		// head of at least its status line; the request is a bodiless GET
		// whose head is at least "GET /pertry?delay=1s HTTP/1.1".
		var found, reqBytes, respBytes bool
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				if l["response_code"] != "504" || l["response_flags"] != "UT" || l["destination_service_name"] != "v1" || l["destination_workload"] != "v1-a" {
					continue
				}
				switch mf.GetName() {
				case "istio_requests_total":
					found = m.GetCounter().GetValue() >= 1
				case "istio_request_bytes":
					h := m.GetHistogram()
					reqBytes = h.GetSampleCount() >= 1 && h.GetSampleSum() >= float64(len("GET /pertry?delay=1s HTTP/1.1"))*float64(h.GetSampleCount())
				case "istio_response_bytes":
					h := m.GetHistogram()
					respBytes = h.GetSampleCount() >= 1 && h.GetSampleSum() >= float64(len("HTTP/1.1 504 Gateway Timeout")+len("upstream request timeout"))*float64(h.GetSampleCount())
				}
			}
		}
		if !found || !reqBytes || !respBytes {
			t.Errorf("series for the 504 UT to v1: istio_requests_total %v, istio_request_bytes %v, istio_response_bytes %v; want all", found, reqBytes, respBytes)
		}
	})

	t.Run("reload while serving", func(t *testing.T) {
		stop := make(chan struct{})
		errs := make(chan string, 1)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &http.Client{Transport: &http.Transport{}}
			defer cl.Transport.(*http.Transport).CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := cl.Get("http://" + g.addr + "/x")
				if err != nil {
					select {
					case errs <- err.Error():
					default:
					}
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					select {
					case errs <- resp.Status:
					default:
					}
					return
				}
			}
		}()
		for i := range 50 {
			svc := []string{"v1", "v2"}[i%2]
			l := listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref(svc, 1))}}, "*")
			if err := g.e.Apply([]*gatewayv1.Listener{l}, nil, bs); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		wg.Wait()
		select {
		case e := <-errs:
			t.Errorf("request failed during reloads: %s", e)
		default:
		}
		l := listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("v2", 1))}}, "*")
		if err := g.e.Apply([]*gatewayv1.Listener{l}, nil, bs); err != nil {
			t.Fatal(err)
		}
		if r := g.do(t, c, "a", "/", nil); r.echo.Pod != "v2" {
			t.Errorf("after reload served by %q, want v2", r.echo.Pod)
		}
	})
}

func TestWaypointServiceTableAndH2CUpstream(t *testing.T) {
	v1, v2 := startEcho(t, "v1"), startEcho(t, "v2")
	h2 := backend("v2", v2)
	h2.Ports[0].AppProtocol = "kubernetes.io/h2c"
	canary := prefix("/")
	canary.Headers = []*gatewayv1.StringMatch{{Type: gatewayv1.MatchType_MATCH_TYPE_EXACT, Name: "x-canary", Value: "1"}}
	tables := []*gatewayv1.RouteTable{{
		Service: &gatewayv1.ObjectRef{Namespace: "default", Name: "web"},
		Port:    80,
		Routes:  []*gatewayv1.Route{rt("canary", canary, ref("v2", 1)), rt("stable", prefix("/"), ref("v1", 1))},
	}}
	e, err := New(Config{Reporter: "waypoint"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Apply(nil, tables, []*gatewayv1.Backend{backend("v1", v1), h2}); err != nil {
		t.Fatal(err)
	}
	g := &gw{e: e, addr: startHandler(t, e.ServiceHandler("default/web", 80)).String()}
	other := &gw{e: e, addr: startHandler(t, e.ServiceHandler("default/other", 80)).String()}
	c := client(t)
	tests := []struct {
		name   string
		g      *gw
		hdr    map[string]string
		status int
		pod    string
		proto  string
	}{
		{name: "stable over HTTP/1.1", g: g, status: 200, pod: "v1", proto: "HTTP/1.1"},
		{name: "canary over h2c", g: g, hdr: map[string]string{"x-canary": "1"}, status: 200, pod: "v2", proto: "HTTP/2.0"},
		{name: "service without table", g: other, status: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.g.do(t, c, "web.default.svc.cluster.local", "/", tc.hdr)
			if r.status != tc.status || r.echo.Pod != tc.pod || r.echo.Proto != tc.proto {
				t.Errorf("got %d from %q over %q, want %d from %q over %q", r.status, r.echo.Pod, r.echo.Proto, tc.status, tc.pod, tc.proto)
			}
		})
	}
}

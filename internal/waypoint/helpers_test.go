package waypoint_test

// The pieces every test of this package starts from: echo workloads, a
// control plane on a config folder, join tokens, `ambit gateway` /
// `ambit waypoint` and node proxies joined to it, and their JSON logs.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	nodeproxy "github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/testkit"
	"github.com/ambitmesh/ambit/internal/waypoint"
	"github.com/ambitmesh/ambit/internal/xdsclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.DiscardHandler)

// fastBackoff reconnects to the control plane quickly after a test edits
// or restarts something.
var fastBackoff = xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}

// startEcho runs an HTTP echo server named pod on ip and returns its port.
func startEcho(t *testing.T, ip, pod string) int {
	t.Helper()
	return runEcho(t, echo.Options{HTTPAddress: ip + ":0", Context: echo.Context{Pod: pod}}).HTTPAddr().(*net.TCPAddr).Port
}

// startEchoTCP runs an echo server on ip with HTTP and raw TCP and returns
// both ports.
func startEchoTCP(t *testing.T, ip, pod string) (httpPort, tcpPort int) {
	t.Helper()
	s := runEcho(t, echo.Options{HTTPAddress: ip + ":0", TCPAddress: ip + ":0", Context: echo.Context{Pod: pod}})
	return s.HTTPAddr().(*net.TCPAddr).Port, s.TCPAddr().(*net.TCPAddr).Port
}

// runEcho runs an echo server until the test ends and waits until it is
// ready.
func runEcho(t *testing.T, opts echo.Options) *echo.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := echo.New(opts)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("echo %s: %v", opts.Context.Pod, err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("echo %s: %v", opts.Context.Pod, err)
	}
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	return int(testkit.CommonPort(t, "127.0.0.1"))
}

// explicitListen is a free address on ip for a node proxy's explicit
// listener.
func explicitListen(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	return netip.AddrPortFrom(netip.MustParseAddr(ip), testkit.CommonPort(t, ip))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write then rename, so the control plane's watcher never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, chs []<-chan struct{}, done <-chan error) {
	t.Helper()
	for _, ch := range chs {
		select {
		case <-ch:
		case err := <-done:
			t.Fatalf("%s: stopped: %v", what, err)
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: not ready/synced after 15s", what)
		}
	}
}

// eventually polls cond until it holds or 15s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 15*time.Second, what, cond)
}

// gatewayOptions joins `ambit gateway` as gateway (namespace/name) to cp,
// its admin endpoint on a free loopback port and metrics and readiness
// off.
func gatewayOptions(t *testing.T, cp *control.Control, gateway string) waypoint.Options {
	t.Helper()
	tok := controltest.Token(t, cp, "gateway/"+gateway)
	return waypoint.Options{
		ControlPlane: cp.XDSAddr().String(), Gateway: gateway, Token: tok.Token, CAPin: tok.CAPin, TrustDomain: tok.TrustDomain,
		AdminAddress: "127.0.0.1:0", MetricsAddress: "-", ReadinessAddress: "-",
		Logger: discard, XDSBackoff: fastBackoff,
	}
}

// serve runs the gateway or waypoint opts describes until ctx ends or
// stop (idempotent, also run at the test's end), after it is ready and
// synced.
func serve(t *testing.T, ctx context.Context, opts waypoint.Options) (*waypoint.Gateway, func()) {
	t.Helper()
	what := "gateway"
	if opts.Waypoint {
		what = "waypoint"
	}
	g, err := waypoint.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithCancel(ctx)
	gDone := make(chan error, 1)
	go func() { gDone <- g.Run(gctx) }()
	stop := sync.OnceFunc(func() {
		gcancel()
		if err := <-gDone; err != nil {
			t.Errorf("%s: %v", what, err)
		}
	})
	t.Cleanup(stop)
	waitFor(t, what, []<-chan struct{}{g.Ready(), g.Synced()}, gDone)
	return g, stop
}

// edge is the setup of the `ambit gateway` tests: echoes v1 and v2 (the
// endpoints of meshTmpl's web-v1 and web-v2) and the control plane on a
// config folder holding meshTmpl, whose Gateway infra/edge listens on port.
type edge struct {
	cp     *control.Control
	dir    string
	port   int
	v1, v2 int // the echoes' ports
}

// startEdge starts edge with files (name, content, ...) next to meshTmpl.
func startEdge(t *testing.T, files ...string) *edge {
	t.Helper()
	e := &edge{dir: t.TempDir(), port: freePort(t)}
	e.v1, e.v2 = startEcho(t, "127.0.0.51", "v1"), startEcho(t, "127.0.0.52", "v2")
	writeFile(t, filepath.Join(e.dir, "mesh.yaml"), fmt.Sprintf(meshTmpl, e.port, e.v1, e.v2))
	for i := 0; i+1 < len(files); i += 2 {
		writeFile(t, filepath.Join(e.dir, files[i]), files[i+1])
	}
	e.cp = controltest.Start(t, e.dir)
	return e
}

// addr is the Gateway's listener address.
func (e *edge) addr() string { return fmt.Sprintf("127.0.0.1:%d", e.port) }

// runGateway runs `ambit gateway` for infra/edge against cp on 127.0.0.1
// until the test ends, and waits until it is ready and synced.
func runGateway(t *testing.T, ctx context.Context, cp *control.Control, accessLog *slog.Logger) *waypoint.Gateway {
	t.Helper()
	opts := gatewayOptions(t, cp, "infra/edge")
	opts.ListenAddress, opts.MetricsAddress, opts.ReadinessAddress = "127.0.0.1", "127.0.0.1:0", "127.0.0.1:0"
	opts.AccessLog = accessLog
	g, _ := serve(t, ctx, opts)
	return g
}

// startWaypoint runs `ambit waypoint` for gateway on ip:hbonePort until
// stop (idempotent) and returns its access log and trust domain.
func startWaypoint(t *testing.T, ctx context.Context, cp *control.Control, gateway, ip string, hbonePort uint16) (*testkit.LogBuffer, string, func()) {
	t.Helper()
	access := &testkit.LogBuffer{}
	opts := gatewayOptions(t, cp, gateway)
	opts.Waypoint, opts.HBONEAddress, opts.HBONEPort, opts.UpstreamHBONEPort = true, ip, hbonePort, hbonePort
	opts.AccessLog = slog.New(slog.NewJSONHandler(access, nil))
	_, stop := serve(t, ctx, opts)
	return access, opts.TrustDomain, stop
}

// testNode is a node proxy joined to the control plane, as `ambit node`
// runs it in explicit mode.
type testNode struct {
	proxy  *nodeproxy.Proxy
	access *testkit.LogBuffer
	log    *testkit.LogBuffer
}

// startNode runs node proxy name with its HBONE listeners on hbonePort
// and the explicit listeners until ctx ends or the test does.
func startNode(t *testing.T, ctx context.Context, cp *control.Control, name string, hbonePort uint16, explicit []nodeproxy.Explicit) *testNode {
	t.Helper()
	sess := controltest.JoinNode(t, cp, name, nodeproxy.TypeURLs)
	n := &testNode{access: &testkit.LogBuffer{}, log: &testkit.LogBuffer{}}
	var err error
	if n.proxy, err = nodeproxy.New(nodeproxy.Options{
		Node: name, Cluster: "test", Certs: sess.Certs, Bundle: sess.Bundle, HBONEPort: hbonePort, Explicit: explicit,
		Logger:    slog.New(slog.NewJSONHandler(n.log, nil)),
		AccessLog: slog.New(slog.NewJSONHandler(n.access, nil)),
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	sess.RunBackground(ctx, &wg)
	wg.Go(func() { _ = n.proxy.Run(ctx, sess.XDS) })
	return n
}

// request sends method url with hdr over a fresh connection to addr (a
// node proxy's explicit listener) and returns the status and body.
func request(addr netip.AddrPort, method, url string, hdr map[string]string) (int, []byte, error) {
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return requestOn(c, method, url, hdr)
}

// requestOn sends method url with hdr on c and returns the status and body.
func requestOn(c net.Conn, method, url string, hdr map[string]string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if err := req.Write(c); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// roundTrip writes msg over a fresh connection to addr and returns what
// comes back in as many bytes.
func roundTrip(addr netip.AddrPort, msg string) (string, error) {
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	got := make([]byte, len(msg))
	n, err := io.ReadFull(c, got)
	return string(got[:n]), err
}

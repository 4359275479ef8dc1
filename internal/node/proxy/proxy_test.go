package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/proxyboot"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// node is a node proxy joined to the control plane, as `ambit node` runs
// it.
type node struct {
	sess   *proxyboot.Session
	proxy  *proxy.Proxy
	access *testkit.LogBuffer
}

func joinNode(t *testing.T, cp *control.Control, name string, hbonePort uint16, explicit []proxy.Explicit, httpProxies []proxy.HTTPProxy, mods ...func(*proxy.Options)) *node {
	t.Helper()
	sess := controltest.JoinNode(t, cp, name, proxy.TypeURLs)
	n := &node{sess: sess, access: &testkit.LogBuffer{}}
	opts := proxy.Options{
		Node:        name,
		Cluster:     "test",
		Certs:       sess.Certs,
		Bundle:      sess.Bundle,
		HBONEPort:   hbonePort,
		Explicit:    explicit,
		HTTPProxies: httpProxies,
		Logger:      discard,
		AccessLog:   slog.New(slog.NewJSONHandler(n.access, nil)),
	}
	for _, m := range mods {
		m(&opts)
	}
	var err error
	if n.proxy, err = proxy.New(opts); err != nil {
		t.Fatal(err)
	}
	return n
}

// run starts the node's certificate renewals, xDS client and proxy until
// ctx ends; the returned function, also run when the test ends, waits for
// all of them.
func (n *node) run(t *testing.T, ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	n.sess.RunBackground(ctx, &wg)
	wg.Go(func() { _ = n.proxy.Run(ctx, n.sess.XDS) })
	t.Cleanup(wg.Wait)
	return wg.Wait
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, what, cond)
}

func counterSum(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

const (
	clientIP = "127.0.0.11"
	serverIP = "127.0.0.21"
	// outsideIP is no workload's.
	outsideIP = "127.0.0.41"
	vip       = "10.96.0.10"
	webHost   = "web.shop.svc.cluster.local"
)

// meshYAML: workload client-1 (clientIP, on node-a) and workload web
// (webIP, on node-b) behind Service web, VIP 10.96.0.10:80 to echoPort.
func meshYAML(clientIP, web, webIP string, echoPort int) string {
	return fmt.Sprintf(`
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: client-1, namespace: shop, labels: {app: client}}
spec: {addresses: ["%s"], node: node-a, serviceAccount: client}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: %s, namespace: shop, labels: {app: web}}
spec: {addresses: ["%s"], node: node-b, serviceAccount: web}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: %s
  selector: {app: web}
  ports: [{port: 80, targetPort: %d}]
`, clientIP, web, webIP, vip, echoPort)
}

// runEcho runs an echo server until ctx ends, once it is ready; the
// test's end waits until it stopped.
func runEcho(t *testing.T, ctx context.Context, opts echo.Options) *echo.Server {
	t.Helper()
	s := echo.New(opts)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { <-done })
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("echo: %v", err)
	}
	return s
}

const denyShop = `
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-shop, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source: {namespaces: ["shop"]}
`

// get sends one HTTP/1.1 request over c and decodes the echo's answer.
func get(t *testing.T, c net.Conn, br *bufio.Reader) echo.Response {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET /hello HTTP/1.1\r\nHost: web.shop\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read echo response: %v", err)
	}
	defer resp.Body.Close()
	var r echo.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTwoNodesExplicitMode(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := telemetry.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	// A destination outside the mesh, for passthrough.
	outside := runEcho(t, ctx, echo.Options{HTTPAddress: outsideIP + ":0", Logger: discard})
	// The backend: echo on the server workload's address.
	es := runEcho(t, ctx, echo.Options{HTTPAddress: serverIP + ":0", Logger: discard})
	echoPort := es.HTTPAddr().(*net.TCPAddr).Port

	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", meshYAML(clientIP, "web-1", serverIP, echoPort))
	cp := controltest.Start(t, dir)

	hbonePort := testkit.CommonPort(t, clientIP, serverIP)
	outsideAddr := outside.HTTPAddr().(*net.TCPAddr).AddrPort()
	anyPort := netip.MustParseAddrPort("127.0.0.1:0")
	a := joinNode(t, cp, "node-a", hbonePort, []proxy.Explicit{
		{Listen: anyPort, Target: netip.MustParseAddrPort(vip + ":80")},
		{Listen: anyPort, Target: outsideAddr},
		{Listen: anyPort, Target: netip.MustParseAddrPort(vip + ":80"), Source: "shop/not-here"},
	}, []proxy.HTTPProxy{{Listen: anyPort}})
	b := joinNode(t, cp, "node-b", hbonePort, nil, nil)
	// Proxies stop before the control plane (cleanups run last first) so
	// their streams end first.
	a.run(t, ctx)
	b.run(t, ctx)
	<-a.proxy.Ready()
	explicit := a.proxy.ExplicitAddrs()[0]
	serverHBONE := netip.AddrPortFrom(netip.MustParseAddr(serverIP), hbonePort)
	eventually(t, "node-b's HBONE listener on its workload", func() bool {
		return cmp.Equal(b.proxy.InboundAddrs(), []netip.AddrPort{serverHBONE}, cmp.Comparer(func(x, y netip.AddrPort) bool { return x == y }))
	})
	eventually(t, "node-a to know the service", func() bool {
		st := a.proxy.Config().Service(netip.MustParseAddrPort(vip + ":80"))
		return st != nil && len(st.Endpoints) == 1
	})

	// A client on node A, from its workload address, through the explicit
	// listener -> HBONE -> node B -> echo.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
	c, err := d.DialContext(ctx, "tcp", explicit.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	got := get(t, c, br)
	if got.Path != "/hello" || got.Host != "web.shop" {
		t.Errorf("echo saw path %q host %q, want /hello web.shop", got.Path, got.Host)
	}

	td := b.sess.Bundle.TrustDomain()
	clientID := spiffeid.RequireFromPath(td, "/ns/shop/sa/client")
	serverID := spiffeid.RequireFromPath(td, "/ns/shop/sa/web")
	hd, err := hbone.NewDialer(hbone.DialerConfig{Source: a.sess.Certs, Bundle: a.sess.Bundle, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()

	t.Run("passthrough outside the mesh", func(t *testing.T) {
		c, err := d.DialContext(ctx, "tcp", a.proxy.ExplicitAddrs()[1].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got := get(t, c, bufio.NewReader(c))
		// The outside server saw the proxy's own plain connection.
		if got.Path != "/hello" || got.LocalAddr != outsideAddr.String() {
			t.Errorf("outside echo saw path %q at %q, want /hello at %s", got.Path, got.LocalAddr, outsideAddr)
		}
	})

	t.Run("unknown source refused", func(t *testing.T) {
		c, err := d.DialContext(ctx, "tcp", a.proxy.ExplicitAddrs()[2].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if n, err := io.Copy(io.Discard, c); n != 0 || err != nil {
			t.Errorf("read %d bytes, err %v; want an immediate clean close", n, err)
		}
		eventually(t, "node-a to log the refusal", func() bool {
			for _, l := range a.access.Records(t) {
				if e, _ := l["error"].(string); strings.Contains(e, "unknown source") && strings.Contains(e, "shop/not-here") {
					return true
				}
			}
			return false
		})
	})

	t.Run("HTTP CONNECT proxy", func(t *testing.T) {
		for _, tc := range []struct {
			target   string
			wantCode int
		}{
			{vip + ":80", http.StatusOK},
			{outsideAddr.String(), http.StatusOK},
			{"web.shop:80", http.StatusBadRequest},
			{"127.0.0.1:1", http.StatusBadGateway}, // passthrough, nothing listens
		} {
			c, err := net.Dial("tcp", a.proxy.HTTPProxyAddrs()[0].String())
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.target, tc.target)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatalf("CONNECT %s: %v", tc.target, err)
			}
			if resp.StatusCode != tc.wantCode {
				t.Errorf("CONNECT %s = %d, want %d", tc.target, resp.StatusCode, tc.wantCode)
			}
			if resp.StatusCode == http.StatusOK {
				if got := get(t, c, br); got.Path != "/hello" {
					t.Errorf("through CONNECT %s the echo saw path %q", tc.target, got.Path)
				}
			}
			c.Close()
		}
	})

	t.Run("authority not local is 400", func(t *testing.T) {
		_, err := hd.Dial(ctx, &hbone.DialRequest{
			Address: serverHBONE, Authority: clientIP + ":80",
			Source: clientID, Destination: []spiffeid.ID{serverID},
		})
		var se *hbone.StatusError
		if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
			t.Errorf("tunnel to a workload of another node: err %v, want HBONE status 400", err)
		}
	})

	// Another workload of node B leaves (its HBONE listener closes): the
	// live tunnel above is not disturbed.
	t.Run("a workload leaving keeps other tunnels", func(t *testing.T) {
		spare := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.22"), hbonePort)
		writeFile(t, dir, "spare.yaml", `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: spare, namespace: shop}
spec: {addresses: ["127.0.0.22"], node: node-b, serviceAccount: spare}
`)
		eventually(t, "node-b's listener for spare", func() bool { return slices.Contains(b.proxy.InboundAddrs(), spare) })
		if err := os.Remove(filepath.Join(dir, "spare.yaml")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "node-b to close it", func() bool { return !slices.Contains(b.proxy.InboundAddrs(), spare) })
		if got := get(t, c, br); got.Path != "/hello" {
			t.Errorf("the live tunnel answered %q after another workload left; want /hello", got.Path)
		}
	})

	// Deny: the live connection is closed and a new tunnel is refused with 401.
	writeFile(t, dir, "deny.yaml", denyShop)
	eventually(t, "node-b to get the DENY policy", func() bool { return b.proxy.Config().Policies.Len() == 1 })
	if n, err := io.Copy(io.Discard, br); err != nil || n != 0 {
		t.Errorf("after DENY the live connection read %d bytes, err %v; want a clean close with nothing", n, err)
	}
	_, err = hd.Dial(ctx, &hbone.DialRequest{
		Address: serverHBONE, Authority: fmt.Sprintf("%s:%d", serverIP, echoPort),
		Source: clientID, Destination: []spiffeid.ID{serverID},
	})
	var se *hbone.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Errorf("tunnel after DENY: err %v, want HBONE status 401", err)
	}

	// Node B's access log: the allowed connection with the identity the
	// client proved, then the revocation and the refusal naming the policy.
	var inbound []map[string]any
	eventually(t, "node-b's access log lines", func() bool {
		inbound = inbound[:0]
		for _, l := range b.access.Records(t) {
			if l["direction"] == "inbound" {
				inbound = append(inbound, l)
			}
		}
		return len(inbound) >= 4
	})
	type line struct{ SrcID, DstID, Service, Flags, Policy string }
	var lines []line
	for _, l := range inbound {
		src, _ := l["src"].(map[string]any)
		dst, _ := l["dst"].(map[string]any)
		pol, _ := l["policy"].(string)
		svc, _ := dst["service"].(string)
		lines = append(lines, line{fmt.Sprint(src["identity"]), fmt.Sprint(dst["identity"]), svc, fmt.Sprint(l["response_flags"]), pol})
	}
	want := []line{
		// The HTTP CONNECT test's connection, the 400 (no destination
		// workload), the revoked connection, the refused one; they end
		// concurrently, so order does not matter.
		{clientID.String(), serverID.String(), webHost, "-", ""},
		{clientID.String(), "<nil>", "", "CONNECT", ""},
		{clientID.String(), serverID.String(), webHost, "DENY", "shop/deny-shop"},
		{clientID.String(), serverID.String(), "", "DENY", "shop/deny-shop"},
	}
	byFields := cmpopts.SortSlices(func(x, y line) bool { return fmt.Sprint(x) < fmt.Sprint(y) })
	if diff := cmp.Diff(want, lines, byFields); diff != "" {
		t.Errorf("node-b inbound access log (-want +got):\n%s\nraw: %v", diff, inbound)
	}

	// Metrics: both ends counted the tunnelled connection.
	for _, reporter := range []string{"source", "destination"} {
		if got := counterSum(t, reg, "istio_tcp_connections_opened_total", map[string]string{
			"reporter": reporter, "connection_security_policy": "mutual_tls",
			"source_principal": clientID.String(), "destination_principal": serverID.String(),
		}); got < 1 {
			t.Errorf("istio_tcp_connections_opened_total{reporter=%s} = %v, want >= 1", reporter, got)
		}
	}
	if got := counterSum(t, reg, "istio_tcp_received_bytes_total", map[string]string{"reporter": "destination"}); got == 0 {
		t.Error("istio_tcp_received_bytes_total{reporter=destination} = 0, want the request's bytes")
	}
}

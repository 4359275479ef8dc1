package waypoint_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/identity"
	nodeproxy "github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/proxyboot"
	"github.com/ambitmesh/ambit/internal/waypoint"
	"github.com/ambitmesh/ambit/internal/xdsclient"
)

// Addresses of the mesh of TestTrafficTraversesWaypointOnce.
const (
	wmClientIP   = "127.0.0.61"
	wmV1IP       = "127.0.0.71"
	wmV2IP       = "127.0.0.72"
	wmWaypointIP = "127.0.0.81"
	wmVIP        = "240.240.0.30"
)

// waypointMeshTmpl: service web (bound to waypoint shop/web-waypoint) with
// a GAMMA route sending x-region: eu to web-v2 and the rest to web-v1;
// the client on node-a, the backends on node-b, the waypoint's pod on a
// node without a node proxy. %[1]d/%[2]d are the echo ports of v1/v2.
const waypointMeshTmpl = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web-waypoint, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {ambit.dev/use-waypoint: web-waypoint}
spec:
  clusterIP: ` + wmVIP + `
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec:
  clusterIP: 240.240.0.31
  selector: {app: web, version: v1}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  clusterIP: 240.240.0.32
  selector: {app: web, version: v2}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{headers: [{name: x-region, value: eu}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - backendRefs: [{name: web-v1, port: 80}]
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: client-1, namespace: shop, labels: {app: client}}
spec: {addresses: ["` + wmClientIP + `"], node: node-a, serviceAccount: client}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-v1-1, namespace: shop, labels: {app: web, version: v1}}
spec: {addresses: ["` + wmV1IP + `"], node: node-b, serviceAccount: web, ports: {http: %[1]d}}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-v2-1, namespace: shop, labels: {app: web, version: v2}}
spec: {addresses: ["` + wmV2IP + `"], node: node-b, serviceAccount: web, ports: {http: %[2]d}}
`

const waypointPodYAML = `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-waypoint-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: web-waypoint}}
spec: {addresses: ["` + wmWaypointIP + `"], node: node-w, serviceAccount: web-waypoint}
`

// lockedBuffer collects JSON log lines from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// testNode is a node proxy joined to the control plane, as `ambit node`
// runs it in explicit mode.
type testNode struct {
	sess   *proxyboot.Session
	proxy  *nodeproxy.Proxy
	access *lockedBuffer
	log    *lockedBuffer
}

func startNode(t *testing.T, ctx context.Context, wg *sync.WaitGroup, cp *control.Control, name string, hbonePort uint16, explicit []nodeproxy.Explicit) *testNode {
	t.Helper()
	tok := token(t, cp, "node/"+name)
	td := spiffeid.RequireTrustDomainFromString(tok.TrustDomain)
	id, err := identity.NodeID(td, name)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{access: &lockedBuffer{}, log: &lockedBuffer{}}
	if n.sess, err = proxyboot.Join(ctx, proxyboot.Options{ControlPlane: cp.XDSAddr().String(), Token: tok.Token, CAPin: tok.CAPin, ID: id,
		NodeID: "node/" + name, TypeURLs: nodeproxy.TypeURLs, Logger: discard,
		XDSBackoff: xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.sess.Close() })
	if n.proxy, err = nodeproxy.New(nodeproxy.Options{
		Node: name, Cluster: "test", Certs: n.sess.Certs, Bundle: n.sess.Bundle, HBONEPort: hbonePort, Explicit: explicit,
		Logger:    slog.New(slog.NewJSONHandler(n.log, nil)),
		AccessLog: slog.New(slog.NewJSONHandler(n.access, nil)),
	}); err != nil {
		t.Fatal(err)
	}
	n.sess.RunBackground(ctx, wg)
	wg.Go(func() { _ = n.proxy.Run(ctx, n.sess.XDS) })
	return n
}

// startWaypoint runs `ambit waypoint` for gateway on ip:hbonePort until
// stop (idempotent) and returns its access log and join token.
func startWaypoint(t *testing.T, ctx context.Context, cp *control.Control, gateway, ip string, hbonePort uint16) (*lockedBuffer, control.TokenResponse, func()) {
	t.Helper()
	access := &lockedBuffer{}
	tok := token(t, cp, "gateway/"+gateway)
	g, err := waypoint.New(waypoint.Options{
		ControlPlane: cp.XDSAddr().String(), Gateway: gateway, Token: tok.Token, CAPin: tok.CAPin, TrustDomain: tok.TrustDomain,
		Waypoint: true, HBONEAddress: ip, HBONEPort: hbonePort, UpstreamHBONEPort: hbonePort,
		AdminAddress: "127.0.0.1:0", MetricsAddress: "-", ReadinessAddress: "-",
		Logger: discard, AccessLog: slog.New(slog.NewJSONHandler(access, nil)),
		XDSBackoff: xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithCancel(ctx)
	gDone := make(chan error, 1)
	go func() { gDone <- g.Run(gctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		gcancel()
		if err := <-gDone; err != nil {
			t.Errorf("waypoint: %v", err)
		}
	}
	t.Cleanup(stop)
	waitFor(t, "waypoint", []<-chan struct{}{g.Ready(), g.Synced()}, gDone)
	return access, tok, stop
}

// commonPort finds a port free on every address (the HBONE port is the
// same on every node and on the waypoint).
func commonPort(t *testing.T, addrs ...string) uint16 {
	t.Helper()
	for range 20 {
		var ls []net.Listener
		l, err := net.Listen("tcp", addrs[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		for _, a := range addrs[1:] {
			o, err := net.Listen("tcp", fmt.Sprintf("%s:%d", a, port))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, o)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return uint16(port)
		}
	}
	t.Fatal("no common free port")
	return 0
}

// eventually polls cond until it holds or 15s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTrafficTraversesWaypointOnce: a client on node-a connects to the
// VIP of a service bound to a waypoint; node-a tunnels to the waypoint,
// which routes by header and tunnels to the chosen pod's node proxy, which
// sees the waypoint as the peer. Without a waypoint pod, node-a refuses.
func TestTrafficTraversesWaypointOnce(t *testing.T) {
	v1, v2 := startEcho(t, wmV1IP, "v1"), startEcho(t, wmV2IP, "v2")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), fmt.Sprintf(waypointMeshTmpl, v1, v2))
	writeFile(t, filepath.Join(dir, "waypoint-pod.yaml"), waypointPodYAML)
	hbonePort := commonPort(t, wmClientIP, wmV1IP, wmV2IP, wmWaypointIP)
	explicitPort := commonPort(t, wmClientIP)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp := startControl(t, ctx, dir)

	wpAccess, wtok, stopWaypoint := startWaypoint(t, ctx, cp, "shop/web-waypoint", wmWaypointIP, hbonePort)
	defer stopWaypoint()

	nctx, ncancel := context.WithCancel(ctx)
	var nwg sync.WaitGroup
	defer func() { ncancel(); nwg.Wait() }()
	listen := netip.AddrPortFrom(netip.MustParseAddr(wmClientIP), explicitPort)
	vip := netip.AddrPortFrom(netip.MustParseAddr(wmVIP), 80)
	nodeA := startNode(t, nctx, &nwg, cp, "node-a", hbonePort, []nodeproxy.Explicit{{Listen: listen, Target: vip, Source: "shop/client-1"}})
	nodeB := startNode(t, nctx, &nwg, cp, "node-b", hbonePort, nil)

	eventually(t, "node-a to know the service, its waypoint binding and the waypoint pod", func() bool {
		c := nodeA.proxy.Config()
		st := c.Service(vip)
		return st != nil && st.Service.GetWaypoint().GetName() == "web-waypoint" && len(c.GatewayWorkloads("shop/web-waypoint")) == 1 &&
			slices.Contains(nodeA.proxy.ExplicitAddrs(), listen)
	})
	eventually(t, "node-b to serve HBONE on its workloads", func() bool {
		in := nodeB.proxy.InboundAddrs()
		return slices.Contains(in, netip.AddrPortFrom(netip.MustParseAddr(wmV1IP), hbonePort)) &&
			slices.Contains(in, netip.AddrPortFrom(netip.MustParseAddr(wmV2IP), hbonePort))
	})

	td := spiffeid.RequireTrustDomainFromString(wtok.TrustDomain)
	wpID, _ := identity.WorkloadID(td, "shop", "web-waypoint")
	clientID, _ := identity.WorkloadID(td, "shop", "client")

	for _, tc := range []struct {
		name, path string
		hdr        map[string]string
		pod        string
	}{
		{"default rule", "/to-v1", nil, "v1"},
		{"header match", "/to-v2", map[string]string{"x-region": "eu"}, "v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", listen.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			req, _ := http.NewRequest("GET", "http://web.shop.svc.cluster.local"+tc.path, nil)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			if err := req.Write(c); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), req)
			if err != nil {
				t.Fatalf("response through node-a and the waypoint: %v", err)
			}
			defer resp.Body.Close()
			var e echo.Response
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || e.Pod != tc.pod {
				t.Errorf("got %d from %q, want 200 from %q", resp.StatusCode, e.Pod, tc.pod)
			}
		})
	}

	// The waypoint logged each request once.
	for _, path := range []string{"/to-v1", "/to-v2"} {
		n := 0
		for _, r := range wpAccess.records(t) {
			if r["path"] == path {
				n++
			}
		}
		if n != 1 {
			t.Errorf("waypoint access log: %d lines for %s, want 1", n, path)
		}
	}

	// node-a tunnelled to the waypoint's pod, never to the backends.
	eventually(t, "node-a's outbound access log lines", func() bool {
		n := 0
		for _, r := range nodeA.access.records(t) {
			if r["direction"] == "outbound" {
				n++
			}
		}
		return n == 2
	})
	for _, r := range nodeA.access.records(t) {
		dst, _ := r["dst"].(map[string]any)
		wantAddr := netip.AddrPortFrom(netip.MustParseAddr(wmWaypointIP), hbonePort).String()
		if dst["addr"] != wantAddr || dst["hbone_addr"] != vip.String() || r["response_flags"] != "-" {
			t.Errorf("node-a access log: %v, want dst addr %s, hbone_addr %s, no flags", r, wantAddr, vip)
		}
	}

	// The waypoint's upstream tunnels are pooled; they end (and node-b
	// logs them) when the waypoint stops.
	stopWaypoint()
	type inbound struct{ peer, workload string }
	var got []inbound
	eventually(t, "node-b's inbound access log lines", func() bool {
		got = got[:0]
		for _, r := range nodeB.access.records(t) {
			if r["direction"] != "inbound" {
				continue
			}
			src, _ := r["src"].(map[string]any)
			dst, _ := r["dst"].(map[string]any)
			got = append(got, inbound{fmt.Sprint(src["identity"]), fmt.Sprint(dst["workload"])})
		}
		return len(got) >= 2
	})
	slices.SortFunc(got, func(a, b inbound) int { return strings.Compare(a.workload, b.workload) })
	want := []inbound{{wpID.String(), "web-v1-1"}, {wpID.String(), "web-v2-1"}}
	if !slices.Equal(got, want) {
		t.Errorf("node-b inbound connections (peer, workload) = %v, want %v (client identity %s must not appear)", got, want, clientID)
	}

	// Without a waypoint pod, node-a refuses instead of bypassing it.
	writeFile(t, filepath.Join(dir, "waypoint-pod.yaml"), "")
	eventually(t, "node-a to see the waypoint pod gone", func() bool {
		return len(nodeA.proxy.Config().GatewayWorkloads("shop/web-waypoint")) == 0
	})
	c, err := net.Dial("tcp", listen.String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = fmt.Fprintf(c, "GET /refused HTTP/1.1\r\nHost: web\r\n\r\n")
	if b, err := bufio.NewReader(c).ReadByte(); err == nil {
		t.Errorf("connection without a waypoint pod: read %q, want it closed", b)
	}
	c.Close()
	eventually(t, "node-a's refusal log line", func() bool {
		for _, r := range nodeA.log.records(t) {
			if r["msg"] == "connection refused: waypoint unavailable" && r["waypoint"] == "shop/web-waypoint" {
				return true
			}
		}
		return false
	})
	for _, r := range nodeB.access.records(t) {
		if src, _ := r["src"].(map[string]any); src["identity"] == clientID.String() {
			t.Errorf("node-b saw the client directly: %v", r)
		}
	}
}

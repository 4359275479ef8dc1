package waypoint_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/identity"
	nodeproxy "github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/testkit"
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

// TestTrafficTraversesWaypointOnce: a client on node-a connects to the
// VIP of a service bound to a waypoint; node-a tunnels to the waypoint,
// which routes by header and tunnels to the chosen pod's node proxy, which
// sees the waypoint as the peer. Without a waypoint pod, node-a refuses.
func TestTrafficTraversesWaypointOnce(t *testing.T) {
	v1, v2 := startEcho(t, wmV1IP, "v1"), startEcho(t, wmV2IP, "v2")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), fmt.Sprintf(waypointMeshTmpl, v1, v2))
	writeFile(t, filepath.Join(dir, "waypoint-pod.yaml"), waypointPodYAML)
	hbonePort := testkit.CommonPort(t, wmClientIP, wmV1IP, wmV2IP, wmWaypointIP)

	ctx := t.Context()
	cp := controltest.Start(t, dir)

	wpAccess, trustDomain, stopWaypoint := startWaypoint(t, ctx, cp, "shop/web-waypoint", wmWaypointIP, hbonePort)

	listen := explicitListen(t, wmClientIP)
	vip := netip.AddrPortFrom(netip.MustParseAddr(wmVIP), 80)
	nodeA := startNode(t, ctx, cp, "node-a", hbonePort, []nodeproxy.Explicit{{Listen: listen, Target: vip, Source: "shop/client-1"}})
	nodeB := startNode(t, ctx, cp, "node-b", hbonePort, nil)

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

	td := spiffeid.RequireTrustDomainFromString(trustDomain)
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
			status, b, err := request(listen, "GET", "http://web.shop.svc.cluster.local"+tc.path, tc.hdr)
			if err != nil {
				t.Fatalf("response through node-a and the waypoint: %v", err)
			}
			var e echo.Response
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatal(err)
			}
			if status != 200 || e.Pod != tc.pod {
				t.Errorf("got %d from %q, want 200 from %q", status, e.Pod, tc.pod)
			}
		})
	}

	// The waypoint logged each request once.
	for _, path := range []string{"/to-v1", "/to-v2"} {
		n := 0
		for _, r := range wpAccess.Records(t) {
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
		for _, r := range nodeA.access.Records(t) {
			if r["direction"] == "outbound" {
				n++
			}
		}
		return n == 2
	})
	for _, r := range nodeA.access.Records(t) {
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
		for _, r := range nodeB.access.Records(t) {
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
		for _, r := range nodeA.log.Records(t) {
			if r["msg"] == "connection refused: waypoint unavailable" && r["waypoint"] == "shop/web-waypoint" {
				return true
			}
		}
		return false
	})
	for _, r := range nodeB.access.Records(t) {
		if src, _ := r["src"].(map[string]any); src["identity"] == clientID.String() {
			t.Errorf("node-b saw the client directly: %v", r)
		}
	}
}

package waypoint_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	nodeproxy "github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/testkit"
)

// Addresses of TestWaypointPodsRoundRobinAndFailover.
const (
	rrClientIP = "127.0.0.63"
	rrV1IP     = "127.0.0.74"
	rrV2IP     = "127.0.0.75"
	rrWP1IP    = "127.0.0.83"
	rrWP2IP    = "127.0.0.84"
)

// twoWaypointPodsYAML: the waypoint of waypointMeshTmpl runs two pods.
const twoWaypointPodsYAML = `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-waypoint-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: web-waypoint}}
spec: {addresses: ["` + rrWP1IP + `"], node: node-w1, serviceAccount: web-waypoint}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-waypoint-2, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: web-waypoint}}
spec: {addresses: ["` + rrWP2IP + `"], node: node-w2, serviceAccount: web-waypoint}
`

// TestWaypointPodsRoundRobinAndFailover: node-a spreads connections to a
// waypoint-bound service over the waypoint's two pods in turn; when one
// stops, its connections fail over to the other without an error.
func TestWaypointPodsRoundRobinAndFailover(t *testing.T) {
	v1, v2 := startEcho(t, rrV1IP, "v1"), startEcho(t, rrV2IP, "v2")
	dir := t.TempDir()
	mesh := fmt.Sprintf(waypointMeshTmpl, v1, v2)
	// The template's addresses are TestTrafficTraversesWaypointOnce's.
	for old, repl := range map[string]string{wmClientIP: rrClientIP, wmV1IP: rrV1IP, wmV2IP: rrV2IP} {
		mesh = strings.ReplaceAll(mesh, old, repl)
	}
	writeFile(t, filepath.Join(dir, "mesh.yaml"), mesh)
	writeFile(t, filepath.Join(dir, "waypoint-pods.yaml"), twoWaypointPodsYAML)
	hbonePort := testkit.CommonPort(t, rrClientIP, rrV1IP, rrV2IP, rrWP1IP, rrWP2IP)
	listen := explicitListen(t, rrClientIP)
	vip := netip.AddrPortFrom(netip.MustParseAddr(wmVIP), 80)

	ctx := t.Context()
	cp := controltest.Start(t, dir)
	log1, _, stop1 := startWaypoint(t, ctx, cp, "shop/web-waypoint", rrWP1IP, hbonePort)
	log2, _, _ := startWaypoint(t, ctx, cp, "shop/web-waypoint", rrWP2IP, hbonePort)

	nodeA := startNode(t, ctx, cp, "node-a", hbonePort, []nodeproxy.Explicit{{Listen: listen, Target: vip, Source: "shop/client-1"}})
	nodeB := startNode(t, ctx, cp, "node-b", hbonePort, nil)
	eventually(t, "node-a to know both waypoint pods", func() bool {
		return len(nodeA.proxy.Config().GatewayPods("shop/web-waypoint")) == 2 && slices.Contains(nodeA.proxy.ExplicitAddrs(), listen)
	})
	eventually(t, "node-b to serve HBONE", func() bool {
		return len(nodeB.proxy.InboundAddrs()) == 2
	})

	get := func(t *testing.T, path string) {
		t.Helper()
		status, b, err := request(listen, "GET", "http://web.shop.svc.cluster.local"+path, nil)
		if err != nil {
			for _, r := range nodeA.log.Records(t) {
				t.Logf("node-a: %v", r)
			}
			for _, r := range nodeA.access.Records(t) {
				t.Logf("node-a access: %v", r)
			}
			t.Fatalf("GET %s: %v", path, err)
		}
		var e echo.Response
		if err := json.Unmarshal(b, &e); err != nil || status != 200 || e.Pod != "v1" {
			t.Fatalf("GET %s: %d from %q (%v), want 200 from v1", path, status, e.Pod, err)
		}
	}
	lines := func(b *testkit.LogBuffer) int {
		n := 0
		for _, r := range b.Records(t) {
			if r["msg"] == "access" {
				n++
			}
		}
		return n
	}

	for i := range 6 {
		get(t, fmt.Sprintf("/rr/%d", i))
	}
	if n1, n2 := lines(log1), lines(log2); n1 != 3 || n2 != 3 {
		t.Errorf("requests per waypoint pod: %d and %d, want 3 and 3 (round robin)", n1, n2)
	}

	stop1()
	for i := range 4 {
		get(t, fmt.Sprintf("/failover/%d", i))
	}
	if n2 := lines(log2); n2 != 7 {
		t.Errorf("waypoint pod 2 served %d requests, want 7 (3 before, 4 after pod 1 stopped)", n2)
	}
	found := false
	for _, r := range nodeA.log.Records(t) {
		if r["msg"] == "waypoint pod unreachable, trying the next" && r["pod"] == "shop/web-waypoint-1" {
			found = true
		}
	}
	if !found {
		t.Error("node-a did not log the failover from web-waypoint-1")
	}
}

package waypoint_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	nodeproxy "github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/testkit"
)

// Addresses of TestWaypointDenialIsNotAPodFailure.
const (
	wdClientIP = "127.0.0.66"
	wdBackIP   = "127.0.0.77"
	wdWP1IP    = "127.0.0.87"
	wdWP2IP    = "127.0.0.88"
	wdVIP      = "240.240.0.40"
)

// wdMesh: TCP service db bound to a waypoint with two pods, and a policy
// at the waypoint denying the client. %d is the backend's TCP port.
const wdMesh = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: db-waypoint, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop, labels: {ambit.dev/use-waypoint: db-waypoint}}
spec:
  clusterIP: ` + wdVIP + `
  selector: {app: db}
  ports: [{name: tcp, port: 5432, targetPort: %d}]
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: client-1, namespace: shop, labels: {app: client}}
spec: {addresses: ["` + wdClientIP + `"], node: node-a, serviceAccount: client}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec: {addresses: ["` + wdBackIP + `"], node: node-b, serviceAccount: db}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: db-waypoint-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: db-waypoint}}
spec: {addresses: ["` + wdWP1IP + `"], node: node-w1, serviceAccount: db-waypoint}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: db-waypoint-2, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: db-waypoint}}
spec: {addresses: ["` + wdWP2IP + `"], node: node-w2, serviceAccount: db-waypoint}
---
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-client, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: db}]
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]}]
`

// TestWaypointDenialIsNotAPodFailure: a waypoint pod that refuses a
// tunnel by policy (HBONE 401) answered; the node proxy neither retries
// the connection on the other pod nor holds the refusal against the pod.
func TestWaypointDenialIsNotAPodFailure(t *testing.T) {
	_, tcpPort := startEchoTCP(t, wdBackIP, "db-1")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), fmt.Sprintf(wdMesh, tcpPort))
	hbonePort := testkit.CommonPort(t, wdClientIP, wdBackIP, wdWP1IP, wdWP2IP)
	listen := explicitListen(t, wdClientIP)
	vip := netip.AddrPortFrom(netip.MustParseAddr(wdVIP), 5432)

	ctx := t.Context()
	cp := controltest.Start(t, dir)
	log1, _, _ := startWaypoint(t, ctx, cp, "shop/db-waypoint", wdWP1IP, hbonePort)
	log2, _, _ := startWaypoint(t, ctx, cp, "shop/db-waypoint", wdWP2IP, hbonePort)
	nodeA := startNode(t, ctx, cp, "node-a", hbonePort, []nodeproxy.Explicit{{Listen: listen, Target: vip, Source: "shop/client-1"}})
	eventually(t, "node-a to know both waypoint pods", func() bool {
		return len(nodeA.proxy.Config().GatewayPods("shop/db-waypoint")) == 2 && slices.Contains(nodeA.proxy.ExplicitAddrs(), listen)
	})
	denialsAt := func(b *testkit.LogBuffer) int {
		n := 0
		for _, r := range b.Records(t) {
			if e, _ := r["error"].(string); strings.Contains(e, "denied by policy") {
				n++
			}
		}
		return n
	}
	denials := func() int { return denialsAt(log1) + denialsAt(log2) }
	// Connections alternate between the pods (round robin).
	eventually(t, "both waypoint pods to enforce the policy", func() bool {
		_, _ = roundTrip(listen, "ping")
		return denialsAt(log1) > 0 && denialsAt(log2) > 0
	})
	before := denials()
	const conns = 4
	for i := range conns {
		if got, err := roundTrip(listen, "ping"); err == nil {
			t.Fatalf("connection %d: %q came back, want it refused", i, got)
		}
	}
	if got := denials() - before; got != conns {
		t.Errorf("the waypoint pods refused %d tunnels for %d connections, want one each (a denial is not retried on the other pod)", got, conns)
	}
	for _, r := range nodeA.log.Records(t) {
		if r["msg"] == "waypoint pod unreachable, trying the next" {
			t.Errorf("node-a took a policy denial for an unreachable pod: %v", r)
		}
	}
}

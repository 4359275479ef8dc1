package waypoint_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nodeproxy "github.com/ambitmesh/ambit/internal/node/proxy"
)

// Addresses of TestWorkloadBoundToWaypoint.
const (
	wbClientIP   = "127.0.0.64"
	wbDBIP       = "127.0.0.76"
	wbWaypointIP = "127.0.0.85"
)

// workloadBoundTmpl: workload db-1 (no service) bound to waypoint
// shop/db-waypoint, which serves workload traffic. %[1]d is db-1's port,
// %[2]s the policies.
const workloadBoundTmpl = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: db-waypoint, namespace: shop, labels: {ambit.dev/waypoint-for: workload}}
spec:
  gatewayClassName: ambit-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: client-1, namespace: shop, labels: {app: client}}
spec: {addresses: ["` + wbClientIP + `"], node: node-a, serviceAccount: client}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: db-1, namespace: shop, labels: {app: db, ambit.dev/use-waypoint: db-waypoint}}
spec: {addresses: ["` + wbDBIP + `"], node: node-b, serviceAccount: db, ports: {raw: %[1]d}}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: db-waypoint-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: db-waypoint}}
spec: {addresses: ["` + wbWaypointIP + `"], node: node-w, serviceAccount: db-waypoint}
%[2]s`

const denyClientAtWaypoint = `---
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-client, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: db-waypoint}]
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
`

// TestWorkloadBoundToWaypoint: a connection addressed directly to a
// workload bound to a waypoint goes through the waypoint (node-b sees the
// waypoint as the peer), which applies its policies to it.
func TestWorkloadBoundToWaypoint(t *testing.T) {
	_, tcpPort := startEchoTCP(t, wbDBIP, "db")
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	writeFile(t, mesh, fmt.Sprintf(workloadBoundTmpl, tcpPort, ""))
	hbonePort := commonPort(t, wbClientIP, wbDBIP, wbWaypointIP)
	listen := netip.AddrPortFrom(netip.MustParseAddr(wbClientIP), commonPort(t, wbClientIP))
	db := netip.AddrPortFrom(netip.MustParseAddr(wbDBIP), uint16(tcpPort))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp := startControl(t, ctx, dir)
	wpAccess, wtok, stopWaypoint := startWaypoint(t, ctx, cp, "shop/db-waypoint", wbWaypointIP, hbonePort)
	defer stopWaypoint()

	nctx, ncancel := context.WithCancel(ctx)
	var nwg sync.WaitGroup
	defer func() { ncancel(); nwg.Wait() }()
	nodeA := startNode(t, nctx, &nwg, cp, "node-a", hbonePort, []nodeproxy.Explicit{{Listen: listen, Target: db, Source: "shop/client-1"}})
	nodeB := startNode(t, nctx, &nwg, cp, "node-b", hbonePort, nil)
	eventually(t, "node-a to know db-1's waypoint", func() bool {
		ws := nodeA.proxy.Config().Workloads(db.Addr())
		return len(ws) == 1 && ws[0].Proto.GetWaypoint().GetName() == "db-waypoint" &&
			len(nodeA.proxy.Config().GatewayPods("shop/db-waypoint")) == 1 && slices.Contains(nodeA.proxy.ExplicitAddrs(), listen)
	})
	eventually(t, "node-b to serve HBONE", func() bool {
		return slices.Contains(nodeB.proxy.InboundAddrs(), netip.AddrPortFrom(db.Addr(), hbonePort))
	})

	roundTrip := func(msg string) (string, error) {
		c, err := net.Dial("tcp", listen.String())
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
	if got, err := roundTrip("ping"); err != nil || got != "ping" {
		t.Fatalf("echo through the waypoint: %q, %v", got, err)
	}
	wpID := "spiffe://" + wtok.TrustDomain + "/ns/shop/sa/db-waypoint"
	eventually(t, "the waypoint's and node-b's log lines", func() bool {
		wp, nb := false, false
		for _, r := range wpAccess.records(t) {
			dst, _ := r["dst"].(map[string]any)
			wp = wp || (r["msg"] == "connection complete" && dst["workload"] == "db-1" && r["bytes_sent"] == float64(4))
		}
		for _, r := range nodeB.access.records(t) {
			src, _ := r["src"].(map[string]any)
			nb = nb || (r["direction"] == "inbound" && src["identity"] == wpID)
		}
		return wp && nb
	})

	// A connection open when the policy arrives is closed by it.
	live, err := net.Dial("tcp", listen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	_ = live.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(live, "live"); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 4); func() error { _, err := io.ReadFull(live, b); return err }() != nil || string(b) != "live" {
		t.Fatalf("live connection: echoed %q", b)
	}

	writeFile(t, mesh, fmt.Sprintf(workloadBoundTmpl, tcpPort, denyClientAtWaypoint))
	eventually(t, "the waypoint to deny the client", func() bool {
		_, err := roundTrip("x")
		return err != nil
	})
	if n, err := live.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the live connection was not closed by the policy: read %d, %v", n, err)
	}
	closed := false
	for _, r := range wpAccess.records(t) {
		closed = closed || (r["response_flags"] == "DENY" && strings.Contains(fmt.Sprint(r["error"]), "closed after a policy change"))
	}
	if !closed {
		t.Error("waypoint access log: no line for the live connection closed by the policy")
	}
	found := false
	for _, r := range wpAccess.records(t) {
		found = found || (r["response_flags"] == "DENY" && r["policy"] == "shop/no-client")
	}
	if !found {
		t.Error("waypoint access log: no DENY line naming shop/no-client")
	}
}

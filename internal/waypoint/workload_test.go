package waypoint_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	nodeproxy "github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/testkit"
	"github.com/ambitmesh/ambit/internal/waypoint"
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
	hbonePort := testkit.CommonPort(t, wbClientIP, wbDBIP, wbWaypointIP)
	listen := explicitListen(t, wbClientIP)
	db := netip.AddrPortFrom(netip.MustParseAddr(wbDBIP), uint16(tcpPort))

	ctx := t.Context()
	cp := controltest.Start(t, dir)
	wpAccess, trustDomain, _ := startWaypoint(t, ctx, cp, "shop/db-waypoint", wbWaypointIP, hbonePort)

	nodeA := startNode(t, ctx, cp, "node-a", hbonePort, []nodeproxy.Explicit{{Listen: listen, Target: db, Source: "shop/client-1"}})
	nodeB := startNode(t, ctx, cp, "node-b", hbonePort, nil)
	eventually(t, "node-a to know db-1's waypoint", func() bool {
		ws := nodeA.proxy.Config().Workloads(db.Addr())
		return len(ws) == 1 && ws[0].Proto.GetWaypoint().GetName() == "db-waypoint" &&
			len(nodeA.proxy.Config().GatewayPods("shop/db-waypoint")) == 1 && slices.Contains(nodeA.proxy.ExplicitAddrs(), listen)
	})
	eventually(t, "node-b to serve HBONE", func() bool {
		return slices.Contains(nodeB.proxy.InboundAddrs(), netip.AddrPortFrom(db.Addr(), hbonePort))
	})

	if got, err := roundTrip(listen, "ping"); err != nil || got != "ping" {
		t.Fatalf("echo through the waypoint: %q, %v", got, err)
	}
	wpID := "spiffe://" + trustDomain + "/ns/shop/sa/db-waypoint"
	eventually(t, "the waypoint's and node-b's log lines", func() bool {
		wp, nb := false, false
		for _, r := range wpAccess.Records(t) {
			dst, _ := r["dst"].(map[string]any)
			wp = wp || (r["msg"] == "connection complete" && dst["workload"] == "db-1" && r["bytes_sent"] == float64(4))
		}
		for _, r := range nodeB.access.Records(t) {
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
		_, err := roundTrip(listen, "x")
		return err != nil
	})
	if n, err := live.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the live connection was not closed by the policy: read %d, %v", n, err)
	}
	closed := false
	for _, r := range wpAccess.Records(t) {
		closed = closed || (r["response_flags"] == "DENY" && strings.Contains(fmt.Sprint(r["error"]), "closed after a policy change"))
	}
	if !closed {
		t.Error("waypoint access log: no line for the live connection closed by the policy")
	}
	found := false
	for _, r := range wpAccess.Records(t) {
		found = found || (r["response_flags"] == "DENY" && r["policy"] == "shop/no-client")
	}
	if !found {
		t.Error("waypoint access log: no DENY line naming shop/no-client")
	}
}

const allowGetAtWaypoint = `---
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: db-waypoint}]
  action: ALLOW
  rules:
  - to: [{operation: {methods: [GET]}}]
`

// TestWorkloadTrafficSniffed: traffic addressed to a bound workload
// declares no protocol, so the waypoint looks at its first bytes: HTTP is
// served by the engine (pass-through to the workload, the waypoint's L7
// policies, an access line per request), and a server-first protocol
// (nothing from the client) is relayed as TCP after SniffTimeout.
func TestWorkloadTrafficSniffed(t *testing.T) {
	httpPort, _ := startEchoTCP(t, wbDBIP, "db")
	// A server-first service: it greets before reading.
	banner, err := net.Listen("tcp", wbDBIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer banner.Close()
	go func() {
		for {
			c, err := banner.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "220 ready\r\n")
			_ = c.Close()
		}
	}()
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	writeFile(t, mesh, fmt.Sprintf(workloadBoundTmpl, httpPort, allowGetAtWaypoint))
	hbonePort := testkit.CommonPort(t, wbClientIP, wbDBIP, wbWaypointIP)
	httpListen := explicitListen(t, wbClientIP)
	bannerListen := explicitListen(t, wbClientIP)
	dbHTTP := netip.AddrPortFrom(netip.MustParseAddr(wbDBIP), uint16(httpPort))
	dbBanner := netip.MustParseAddrPort(banner.Addr().String())

	ctx := t.Context()
	cp := controltest.Start(t, dir)
	wpAccess, _, _ := startWaypoint(t, ctx, cp, "shop/db-waypoint", wbWaypointIP, hbonePort)
	nodeA := startNode(t, ctx, cp, "node-a", hbonePort, []nodeproxy.Explicit{
		{Listen: httpListen, Target: dbHTTP, Source: "shop/client-1"},
		{Listen: bannerListen, Target: dbBanner, Source: "shop/client-1"},
	})
	nodeB := startNode(t, ctx, cp, "node-b", hbonePort, nil)
	eventually(t, "node-a and node-b to be ready", func() bool {
		return len(nodeA.proxy.Config().GatewayPods("shop/db-waypoint")) == 1 && len(nodeA.proxy.ExplicitAddrs()) == 2 &&
			slices.Contains(nodeB.proxy.InboundAddrs(), netip.AddrPortFrom(dbHTTP.Addr(), hbonePort))
	})

	do := func(method, path string) (int, string) {
		t.Helper()
		status, b, err := request(httpListen, method, "http://db"+path, nil)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return status, string(b)
	}
	if status, body := do("GET", "/sniffed"); status != 200 || !strings.Contains(strings.ReplaceAll(body, " ", ""), `"pod":"db"`) {
		t.Errorf("GET through the waypoint: %d %q, want 200 from the db echo", status, body)
	}
	if status, body := do("POST", "/sniffed"); status != 403 || body != "RBAC: access denied" {
		t.Errorf("POST through the waypoint: %d %q, want 403 (the ALLOW names GET only)", status, body)
	}
	found := false
	for _, r := range wpAccess.Records(t) {
		found = found || (r["path"] == "/sniffed" && r["method"] == "GET" && r["route"] == "Workload/shop/db-1#0" &&
			r["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/client" && r["authz"] == "allowed by policy shop/get-only")
	}
	if !found {
		t.Errorf("waypoint access log: no line for GET /sniffed through the workload route: %v", wpAccess.Records(t))
	}

	// Server-first: the client sends nothing; after SniffTimeout the
	// stream is TCP and the greeting arrives. The ALLOW cannot match TCP
	// (it names a method), so it is refused; without policies it passes.
	writeFile(t, mesh, fmt.Sprintf(workloadBoundTmpl, httpPort, ""))
	eventually(t, "the policy to be gone", func() bool {
		status, _ := do("POST", "/again")
		return status == 200
	})
	c, err := net.Dial("tcp", bannerListen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "220 ready\r\n" {
		t.Fatalf("server-first greeting through the waypoint: %q, %v", line, err)
	}
	if d := time.Since(start); d < waypoint.SniffTimeout {
		t.Errorf("greeting after %v, want at least the sniff timeout %v (the waypoint waited for client bytes)", d, waypoint.SniffTimeout)
	}
}

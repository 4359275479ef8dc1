package waypoint_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	nodeproxy "github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/testkit"
)

// Addresses of the mesh of TestWaypointPassThroughAndPolicy.
const (
	ptClientIP   = "127.0.0.62"
	ptAPIIP      = "127.0.0.73"
	ptWaypointIP = "127.0.0.82"
	ptVIP        = "240.240.0.40"
)

// passthroughMeshTmpl: service api bound to waypoint shop/api-waypoint
// with no route: an HTTP port and a TCP port (appProtocol tcp). %[1]d and
// %[2]d are the echo's HTTP and TCP ports; %[3]s is the policies.
const passthroughMeshTmpl = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: api-waypoint, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
  labels: {ambit.dev/use-waypoint: api-waypoint}
spec:
  clusterIP: ` + ptVIP + `
  selector: {app: api}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: raw, port: 9000, targetPort: raw, appProtocol: tcp}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: client-1, namespace: shop, labels: {app: client}}
spec: {addresses: ["` + ptClientIP + `"], node: node-a, serviceAccount: client}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: api-1, namespace: shop, labels: {app: api}}
spec: {addresses: ["` + ptAPIIP + `"], node: node-b, serviceAccount: api, ports: {http: %[1]d, raw: %[2]d}}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: api-waypoint-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: api-waypoint}}
spec: {addresses: ["` + ptWaypointIP + `"], node: node-w, serviceAccount: api-waypoint}
%[3]s`

// denyAdmin denies /admin* to the client's identity and allows the
// rest to it only.
const denyAdmin = `---
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
    to: [{operation: {methods: ["GET", "POST"], paths: ["/admin*"]}}]
---
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: client-only, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: api-waypoint}]
  action: ALLOW
  rules:
  - from: [{source: {namespaces: ["shop"]}}]
---
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: audit-public, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/public"]}}]
`

// othersOnly allows only another service account: the client is denied.
const othersOnly = `---
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: others-only, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/other"]}}]
`

// TestWaypointPassThroughAndPolicy: a service bound to a waypoint without
// routes is passed through (HTTP with the default balancing, a TCP port
// as bytes); the client's address travels in X-Forwarded-For and in the
// waypoint's CONNECT to the destination node; a trace context is started;
// AuthorizationPolicies targeting the service or the waypoint are enforced
// with the client's identity and follow changes live.
func TestWaypointPassThroughAndPolicy(t *testing.T) {
	httpPort, tcpPort := startEchoTCP(t, ptAPIIP, "api")
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	writeFile(t, mesh, fmt.Sprintf(passthroughMeshTmpl, httpPort, tcpPort, ""))
	hbonePort := testkit.CommonPort(t, ptClientIP, ptAPIIP, ptWaypointIP)
	httpListen := explicitListen(t, ptClientIP)
	tcpListen := explicitListen(t, ptClientIP)
	httpVIP := netip.AddrPortFrom(netip.MustParseAddr(ptVIP), 80)
	tcpVIP := netip.AddrPortFrom(netip.MustParseAddr(ptVIP), 9000)

	ctx := t.Context()
	cp := controltest.Start(t, dir)
	wpAccess, _, _ := startWaypoint(t, ctx, cp, "shop/api-waypoint", ptWaypointIP, hbonePort)

	nodeA := startNode(t, ctx, cp, "node-a", hbonePort, []nodeproxy.Explicit{
		{Listen: httpListen, Target: httpVIP, Source: "shop/client-1"},
		{Listen: tcpListen, Target: tcpVIP, Source: "shop/client-1"},
	})
	nodeB := startNode(t, ctx, cp, "node-b", hbonePort, nil)
	eventually(t, "node-a to route the VIP through the waypoint", func() bool {
		c := nodeA.proxy.Config()
		st := c.Service(httpVIP)
		return st != nil && st.Service.GetWaypoint().GetName() == "api-waypoint" && len(c.GatewayWorkloads("shop/api-waypoint")) == 1 &&
			len(nodeA.proxy.ExplicitAddrs()) == 2
	})
	eventually(t, "node-b to serve HBONE", func() bool {
		return slices.Contains(nodeB.proxy.InboundAddrs(), netip.AddrPortFrom(netip.MustParseAddr(ptAPIIP), hbonePort))
	})

	get := func(t *testing.T, method, path string) (int, string, echo.Response) {
		t.Helper()
		status, body, err := request(httpListen, method, "http://api.shop.svc.cluster.local"+path, nil)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		var e echo.Response
		if status == 200 {
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%s %s: %v in %q", method, path, err, body)
			}
		}
		return status, string(body), e
	}

	t.Run("HTTP pass-through", func(t *testing.T) {
		status, body, e := get(t, "GET", "/hello")
		if status != 200 || e.Pod != "api" || e.Path != "/hello" {
			t.Fatalf("got %d %q, want 200 from the api pod", status, body)
		}
		// The client's address as node-a saw it, appended by the waypoint.
		if xff := strings.Join(e.Headers["X-Forwarded-For"], ","); xff != ptClientIP {
			t.Errorf("X-Forwarded-For %q, want %s", xff, ptClientIP)
		}
		if tp := strings.Join(e.Headers["Traceparent"], ","); len(tp) != 55 || !strings.HasPrefix(tp, "00-") {
			t.Errorf("traceparent %q, want a W3C trace context started by the waypoint", tp)
		}
		found := false
		for _, r := range wpAccess.Records(t) {
			if r["path"] == "/hello" {
				found = r["route"] == "Service/shop/api#0" && r["status"] == float64(200) &&
					r["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/client"
			}
		}
		if !found {
			t.Errorf("waypoint access log: no pass-through line for /hello: %v", wpAccess.Records(t))
		}
		// Istio's request metrics, the source taken from the HBONE peer
		// and the CONNECT's baggage.
		reg := prometheus.NewRegistry()
		if err := telemetry.Register(reg); err != nil {
			t.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"reporter": "waypoint", "source_workload": "client-1", "source_workload_namespace": "shop",
			"source_principal": "spiffe://cluster.local/ns/shop/sa/client", "destination_service_name": "api",
			"destination_workload": "api-1", "response_code": "200", "request_protocol": "http"}
		seen := map[string]bool{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				match := true
				for k, v := range want {
					match = match && l[k] == v
				}
				if match {
					seen[mf.GetName()] = true
				}
			}
		}
		for _, name := range []string{"istio_requests_total", "istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"} {
			if !seen[name] {
				t.Errorf("no %s series with %v", name, want)
			}
		}
	})

	t.Run("TCP pass-through", func(t *testing.T) {
		// Not HTTP: an HTTP server would answer 400 to it.
		msg := "\x00\x01 not http\r\n\r\n"
		if got, err := roundTrip(tcpListen, msg); err != nil || got != msg {
			t.Fatalf("echoed %q, %v; want %q", got, err, msg)
		}
	})

	// The destination node saw the waypoint as the mTLS peer and the
	// client's address as the source (from the waypoint's CONNECT).
	eventually(t, "node-b's inbound connections with the client's address", func() bool {
		for _, r := range nodeB.access.Records(t) {
			src, _ := r["src"].(map[string]any)
			if r["direction"] == "inbound" && strings.HasPrefix(fmt.Sprint(src["addr"]), ptClientIP+":") &&
				src["identity"] == "spiffe://cluster.local/ns/shop/sa/api-waypoint" {
				return true
			}
		}
		return false
	})

	writeFile(t, mesh, fmt.Sprintf(passthroughMeshTmpl, httpPort, tcpPort, denyAdmin))
	t.Run("DENY by path for the client's principal", func(t *testing.T) {
		eventually(t, "the DENY to apply", func() bool {
			status, _, _ := get(t, "GET", "/admin/users")
			return status == 403
		})
		status, body, _ := get(t, "GET", "/admin/users")
		if status != 403 || body != "RBAC: access denied" {
			t.Errorf("got %d %q, want 403 RBAC: access denied", status, body)
		}
		// A dot segment does not get around it.
		if status, _, _ := get(t, "GET", "/public/../admin"); status != 403 {
			t.Errorf("/public/../admin: %d, want 403", status)
		}
		// Nor does an escaped letter, which upstreams decode.
		if status, _, _ := get(t, "GET", "/%61dmin/users"); status != 403 {
			t.Errorf("/%%61dmin/users: %d, want 403", status)
		}
		if status, _, e := get(t, "GET", "/public"); status != 200 || e.Path != "/public" {
			t.Errorf("/public: %d, want 200", status)
		}
		// Not a listed method.
		if status, _, _ := get(t, "DELETE", "/admin/x"); status != 200 {
			t.Errorf("DELETE /admin/x: %d, want 200 (the DENY lists GET and POST)", status)
		}
		found, audited := false, false
		for _, r := range wpAccess.Records(t) {
			if r["path"] == "/admin/users" && r["flags"] == "RBAC" && r["authz"] == "denied by policy shop/no-admin" && r["status"] == float64(403) {
				found = true
			}
			if r["path"] == "/public" && r["status"] == float64(200) {
				audited = r["audit"] == "shop/audit-public" && r["authz"] == "allowed by policy shop/client-only"
			}
		}
		if !found {
			t.Errorf("waypoint access log: no RBAC line naming shop/no-admin")
		}
		if !audited {
			t.Errorf("waypoint access log: the /public line does not name the ALLOW and the AUDIT policy")
		}
	})

	writeFile(t, mesh, fmt.Sprintf(passthroughMeshTmpl, httpPort, tcpPort, othersOnly))
	t.Run("ALLOW for another principal only, applied live", func(t *testing.T) {
		eventually(t, "the ALLOW to apply", func() bool {
			status, _, _ := get(t, "GET", "/public")
			return status == 403
		})
		if status, _, _ := get(t, "GET", "/admin/users"); status != 403 {
			t.Errorf("/admin/users: %d, want 403", status)
		}
		// The TCP port is refused too: the policy's source is checked on
		// streams the waypoint passes through.
		c, err := net.Dial("tcp", tcpListen.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "hello")
		// Closed or reset (the client's unread bytes), never echoed.
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Errorf("TCP through the waypoint: read %q; want the connection closed", b)
		}
	})
	writeFile(t, mesh, fmt.Sprintf(passthroughMeshTmpl, httpPort, tcpPort, ""))
	eventually(t, "no policies: allowed again", func() bool {
		status, _, _ := get(t, "GET", "/admin/users")
		return status == 200
	})
}

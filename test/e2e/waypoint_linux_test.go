//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/node/netns"
)

const (
	waypointIP = "10.2.5.2" // the waypoint's pod, behind node 2, not captured
	waypointID = "spiffe://cluster.local/ns/shop/sa/web-waypoint"
)

// waypointYAML binds Service web to waypoint shop/web-waypoint and routes
// it by header (x-version: v2 -> web-v2) and by weight (web-v1 3 : web-v2
// 1) between the two versions; web-b1 is v1, web-b2 v2.
const waypointYAML = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web-waypoint, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-waypoint-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: web-waypoint}}
spec: {addresses: ["` + waypointIP + `"], node: waypoint-host, serviceAccount: web-waypoint}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  selector: {app: web, version: v1}
  ports: [{name: http, port: 80, targetPort: ` + echoPort + `}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.12
  selector: {app: web, version: v2}
  ports: [{name: http, port: 80, targetPort: ` + echoPort + `}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - backendRefs:
    - {name: web-v1, port: 80, weight: 3}
    - {name: web-v2, port: 80, weight: 1}
`

// denyAdminYAML: an L7 DENY the node proxies could not enforce.
const denyAdminYAML = `
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  action: DENY
  rules:
  - to: [{operation: {methods: [GET], paths: ["/admin/*"]}}]
`

// TestLabWaypoint: the real `ambit waypoint` in its own pod behind node 2
// serves Service web: client-a's requests to the VIP are tunnelled by
// node 1 to the waypoint, which routes them by header and by weight
// between v1 (web-b1) and v2 (web-b2) and tunnels them to node 2. Both
// hops are HBONE with mutual TLS: the waypoint names client-a's
// certificate identity for each request, node 2 names the waypoint's for
// each connection, and on the waypoint's link only TLS to :15008 is seen,
// never the request in the clear nor the app port. An L7 DENY answers 403
// at the waypoint.
func TestLabWaypoint(t *testing.T) {
	l := newLab(t)
	pod := l.extraPod(t, "waypoint", waypointIP, l.node2)
	// The waypoint's link carries both hops: node 1 -> waypoint and
	// waypoint -> web-b1/web-b2's node proxy. Capture from before the
	// first tunnel so the handshakes are seen.
	capture := sniff(t, l.node2, "veth-waypoint")

	mesh := strings.NewReplacer(
		"{app: web}}\nspec: {addresses: [\""+webB1IP, "{app: web, version: v1}}\nspec: {addresses: [\""+webB1IP,
		"{app: web}}\nspec: {addresses: [\""+webB2IP, "{app: web, version: v2}}\nspec: {addresses: [\""+webB2IP,
		"metadata: {name: web, namespace: shop}", "metadata: {name: web, namespace: shop, labels: {ambit.dev/use-waypoint: web-waypoint}}",
	).Replace(meshYAML)
	if strings.Count(mesh, "version: v") != 2 || !strings.Contains(mesh, "use-waypoint") {
		t.Fatalf("mesh.yaml rewrite did not apply:\n%s", mesh)
	}
	l.writeConfig(t, "waypoint.yaml", waypointYAML)
	l.writeConfig(t, "mesh.yaml", mesh)

	tok := l.tokenFor(t, "--gateway", "shop/web-waypoint")
	wp := l.start(t, "waypoint", pod, "waypoint", "--control-plane", xdsAddr, "--gateway", "shop/web-waypoint",
		"--token", tok.Token, "--ca-pin", tok.CAPin, "--trust-domain", tok.TrustDomain, "--hbone-address", waypointIP)
	eventually(t, 20*time.Second, "the waypoint to be ready", func() error {
		_, err := l.httpGet(pod.Path, false, "http://127.0.0.1:15021/healthz/ready")
		return err
	})

	// get is client-a's app calling the VIP with optional headers.
	get := func(path string, hdr http.Header) (int, []byte, error) {
		d := &netns.Dialer{NetNS: l.pods["client-a"].Path, Unmarked: true, Timeout: 3 * time.Second}
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
		req, err := http.NewRequestWithContext(l.ctx, http.MethodGet, "http://"+webVIP+path, nil)
		if err != nil {
			return 0, nil, err
		}
		req.Header = hdr
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, err = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.Bytes(), err
	}
	pod2 := func(path string, hdr http.Header) (string, error) {
		status, b, err := get(path, hdr)
		if err != nil {
			return "", err
		}
		var r struct{ Pod, Path string }
		if status != 200 || json.Unmarshal(b, &r) != nil || r.Path != path {
			return "", fmt.Errorf("GET %s: %d %q", path, status, b)
		}
		return r.Pod, nil
	}

	marker := fmt.Sprintf("/waypoint-marker-%d", time.Now().UnixNano())
	eventually(t, 20*time.Second, "node 1 to send the VIP through the waypoint", func() error {
		_, err := pod2(marker, nil)
		return err
	})

	t.Run("RoutesByHeader", func(t *testing.T) {
		for i := range 10 {
			got, err := pod2(fmt.Sprintf("/v2/%d", i), http.Header{"X-Version": {"v2"}})
			if err != nil || got != "web-b2" {
				t.Fatalf("x-version: v2 request %d: answered by %q (%v), want web-b2", i, got, err)
			}
		}
	})

	t.Run("RoutesByWeight", func(t *testing.T) {
		const n = 200
		count := map[string]int{}
		for i := range n {
			got, err := pod2(fmt.Sprintf("/split/%d", i), nil)
			if err != nil {
				t.Fatal(err)
			}
			count[got]++
		}
		// 3:1 -> v1 expects 150 of 200; 5 standard deviations either side.
		mean, sd := n*0.75, math.Sqrt(n*0.75*0.25)
		if v1 := float64(count["web-b1"]); math.Abs(v1-mean) > 5*sd || count["web-b1"]+count["web-b2"] != n {
			t.Errorf("split over %d requests: %v; want web-b1 within %.0f±%.0f and only web-b1/web-b2", n, count, mean, 5*sd)
		}
	})

	t.Run("MutualTLSOnBothHops", func(t *testing.T) {
		// Hop 1, from the waypoint's side: the request arrived in a tunnel
		// whose client certificate is client-a's.
		var line map[string]any
		for _, ln := range waypointAccess(t, wp.log(t)) {
			if ln["path"] == marker {
				line = ln
			}
		}
		if line == nil || line["peer_identity"] != clientID {
			t.Errorf("waypoint access log line for %s: %v; want peer_identity %s", marker, line, clientID)
		}
		// Hop 2, from node 2's side: connections to both versions came
		// from the waypoint's certificate, none from client-a's.
		for _, w := range []string{"web-b1", "web-b2"} {
			// Tunnels end (and are logged) when their downstream does.
			eventually(t, 5*time.Second, "node 2's line for the waypoint's connection to "+w, func() error {
				if len(l.accessLines(t, "node-2", "direction=inbound", "src.identity="+waypointID, "dst.workload="+w, "dst.identity="+webID)) == 0 {
					return errors.New("none yet")
				}
				return nil
			})
		}
		if lines := l.accessLines(t, "node-2", "direction=inbound", "src.identity="+clientID); len(lines) > 0 {
			t.Errorf("node 2 saw client-a directly, bypassing the waypoint: %s", lines[0])
		}
		// On the wire: TLS 1.3 to :15008 in both directions of the
		// waypoint's link, each hop's ClientHello offering h2; never the
		// marker in the clear, never the app port.
		segs := capture.Stop()
		hellos := map[string]int{} // by source address
		for _, s := range segs {
			if bytes.Contains(s.payload, []byte(marker)) {
				t.Errorf("the request crossed the waypoint's link in the clear: %s -> %s", s.src, s.dst)
			}
			if s.src.Port() == 8080 || s.dst.Port() == 8080 {
				t.Errorf("a segment to the app port crossed the waypoint's link: %s -> %s", s.src, s.dst)
			}
			if len(s.payload) > 6 && s.dst.Port() == 15008 && s.payload[0] == 0x16 && s.payload[5] == 0x01 && bytes.Contains(s.payload, []byte("\x02h2")) {
				hellos[s.src.Addr().String()]++
			}
		}
		if hellos[clientIP] == 0 || hellos[waypointIP] == 0 {
			t.Errorf("ClientHellos to :15008 on the waypoint's link by source: %v; want some from client-a (%s, hop 1) and the waypoint (%s, hop 2)", hellos, clientIP, waypointIP)
		}
	})

	t.Run("L7DenyAtWaypoint", func(t *testing.T) {
		l.writeConfig(t, "deny-admin.yaml", denyAdminYAML)
		t.Cleanup(func() { l.removeConfig(t, "deny-admin.yaml") })
		eventually(t, 10*time.Second, "the DENY to apply", func() error {
			status, b, err := get("/admin/users", nil)
			if err != nil || status != 403 || string(b) != "RBAC: access denied" {
				return fmt.Errorf("%d %q %v", status, b, err)
			}
			return nil
		})
		if _, err := pod2("/public", nil); err != nil {
			t.Errorf("a path the DENY does not name: %v", err)
		}
		found := false
		for _, ln := range waypointAccess(t, wp.log(t)) {
			found = found || (ln["path"] == "/admin/users" && ln["flags"] == "RBAC" && ln["authz"] == "denied by policy shop/no-admin")
		}
		if !found {
			t.Error("no waypoint access log line with flags RBAC naming shop/no-admin")
		}
	})
}

// waypointAccess parses the waypoint's JSON access log lines.
func waypointAccess(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "access" {
			lines = append(lines, m)
		}
	}
	return lines
}

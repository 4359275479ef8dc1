//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/node"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

const (
	dbVIP  = "10.96.0.20"
	dbPort = "9090"
	dbID   = "spiffe://cluster.local/ns/shop/sa/db"
)

// toolIP is an extra address of node 2 (on lo) for tool-vm, a workload of
// node 2 served in explicit mode, next to host mode.
const toolIP = "192.168.77.22"

// db-vm is a process of node 2 itself (its host address), behind Service db;
// tool-vm is another process there, not captured (explicit mode).
const hostYAML = `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: tool-vm, namespace: shop, labels: {app: tool}}
spec: {addresses: ["` + toolIP + `"], node: node-2, serviceAccount: tool}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: db-vm, namespace: shop, labels: {app: db}}
spec: {addresses: ["` + node2IP + `"], node: node-2, serviceAccount: db}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: ` + dbVIP + `
  selector: {app: db}
  ports: [{name: tcp, port: 90, targetPort: ` + dbPort + `}]
`

// TestLabHostMode: node 2's namespace plays a machine whose process db-vm
// is a Workload (not a pod). Enrolled in host mode at runtime through the
// admin endpoint, it is reached over HBONE by pod IP and VIP, its own
// outbound connections travel as HBONE with its identity, plaintext to its
// port is captured, the rest of the machine is left alone, and every rule is
// removed on unenrol and when the node proxy stops.
func TestLabHostMode(t *testing.T) {
	l := newLab(t)
	l.writeConfig(t, "host.yaml", hostYAML)
	// The host routes the service range like any destination (here through
	// node 1); captured connections never follow it.
	netnstest.Route(t, l.node2, netip.MustParsePrefix("10.96.0.0/16"), netip.MustParseAddr(node1IP))
	l.start(t, "echo-db-vm", l.node2, "echo", "--listen", node2IP, "--http-port", dbPort, "--grpc-port", "0", "--tcp-port", "0",
		"--namespace", "shop", "--pod", "db-vm", "--service", "db")
	netnstest.Addr(t, l.node2, "lo", netip.MustParsePrefix(toolIP+"/32"))
	l.start(t, "echo-tool-vm", l.node2, "echo", "--listen", toolIP, "--http-port", echoPort, "--grpc-port", "0", "--tcp-port", "0",
		"--namespace", "shop", "--pod", "tool-vm")
	// Node 2 first serves tool-vm (and db-vm, whose address is local too)
	// in explicit mode: HBONE listeners on their addresses. Host mode must
	// take over the HBONE port from them.
	eventually(t, 10*time.Second, "node-2's explicit HBONE listener for tool-vm", func() error {
		if d := l.configDump(t, l.node2); !slices.Contains(d.Inbound, toolIP+":15008") {
			return fmt.Errorf("inbound listeners %v", d.Inbound)
		}
		return nil
	})
	l.adminPost(t, l.node2, "/enroll", url.Values{"workload": {"shop/db-vm"}, "mode": {"host"}})
	eventually(t, 10*time.Second, "db-vm's host rules in node 2's namespace", func() error {
		if !netnstest.HasCaptureTable(t, l.node2) {
			return errors.New("no table inet ambit")
		}
		return nil
	})

	t.Run("ConfigDumpShowsHostMode", func(t *testing.T) {
		dump := l.configDump(t, l.node2)
		if dump.Enrolled["shop/db-vm"] != "host" || dump.Enrolled["shop/web-b1"] == "" {
			t.Errorf("config_dump enrolled = %v; want shop/db-vm in host mode next to the pods", dump.Enrolled)
		}
	})

	t.Run("ExplicitWorkloadServedNextToHostMode", func(t *testing.T) {
		r, err := l.appGet("client-a", toolIP+":"+echoPort, "/to-tool")
		if err != nil {
			t.Fatal(err)
		}
		if r.Pod != "tool-vm" {
			t.Errorf("%s reached %q; want tool-vm", toolIP, r.Pod)
		}
		eventually(t, 5*time.Second, "node-2's inbound line for tool-vm", func() error {
			if len(l.accessLines(t, "node-2", "src.identity="+clientID, "dst.hbone_addr="+toolIP+":"+echoPort, "response_flags=-")) == 0 {
				return errors.New("none")
			}
			return nil
		})
	})

	t.Run("PodReachesHostWorkloadOverHBONE", func(t *testing.T) {
		var r echo.Response
		eventually(t, 10*time.Second, "client-a to reach db-vm by its VIP", func() error {
			var err error
			r, err = l.appGet("client-a", dbVIP+":90", "/to-vm")
			return err
		})
		if r.Pod != "db-vm" || hostOf(r.RemoteAddr) != clientIP {
			t.Errorf("the VIP reached %q, which saw %s; want db-vm seeing client-a's %s", r.Pod, r.RemoteAddr, clientIP)
		}
		eventually(t, 5*time.Second, "node-2's inbound line with client-a's identity", func() error {
			if len(l.accessLines(t, "node-2", "direction=inbound", "src.identity="+clientID, "dst.hbone_addr="+node2IP+":"+dbPort, "response_flags=-")) == 0 {
				return errors.New("none")
			}
			return nil
		})
	})

	t.Run("HostWorkloadOutboundIsTunnelled", func(t *testing.T) {
		b, err := l.httpGet(l.node2.Path, true, "http://"+webVIP+":80/from-vm")
		if err != nil {
			t.Fatalf("db-vm -> %s:80: %v", webVIP, err)
		}
		if !strings.Contains(string(b), `"`+node2IP+`:`) {
			t.Errorf("the web echo's answer %s does not show db-vm's address %s", b, node2IP)
		}
		eventually(t, 5*time.Second, "an inbound line with db-vm's identity", func() error {
			if len(l.accessLines(t, "node-2", "direction=inbound", "src.identity="+dbID, "response_flags=-")) == 0 {
				return errors.New("no inbound line with src.identity=" + dbID)
			}
			return nil
		})
	})

	t.Run("PlaintextToHostWorkloadCaptured", func(t *testing.T) {
		b, err := l.httpGet(l.node1.Path, true, "http://"+node2IP+":"+dbPort+"/plain")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"`+node1IP+`:`) {
			t.Errorf("db-vm's answer %s does not show the client's own address %s", b, node1IP)
		}
		eventually(t, 5*time.Second, "node-2's plaintext inbound line", func() error {
			if len(l.accessLines(t, "node-2", "src.addr="+node1IP+":", "dst.addr="+node2IP+":"+dbPort, "response_flags=-")) == 0 {
				return errors.New("none")
			}
			return nil
		})
	})

	t.Run("RestOfTheHostLeftAlone", func(t *testing.T) {
		if _, err := l.httpGet(l.node1.Path, true, "http://"+node2IP+":15021/healthz/ready"); err != nil {
			t.Fatalf("node 2's readiness port from node 1: %v", err)
		}
		if n := len(l.accessLines(t, "node-2", "dst.addr="+node2IP+":15021")); n != 0 {
			t.Errorf("node-2 proxied %d connections to its own readiness port; want none", n)
		}
	})

	// Node 2's own address is db-vm's, so its proxy's connections to the
	// control plane leave from a captured address: they must carry the
	// proxy's mark. A restarted control plane makes node 2 reconnect.
	t.Run("ControlPlaneConnectionNotCaptured", func(t *testing.T) {
		_ = l.control.Signal(syscall.SIGTERM)
		select {
		case <-l.control.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the control plane did not stop within 10 s of SIGTERM")
		}
		l.control = l.start(t, "control-again", l.node1, "control",
			"--config-dir", l.configDir, "--state-dir", l.stateDir,
			"--xds-address", xdsAddr, "--admin-address", "127.0.0.1:15014",
			"--server-name", node1IP, "--debounce", "20ms")
		eventually(t, 15*time.Second, "node-2 to reconnect to the control plane", func() error {
			if n := strings.Count(l.nodeProcs["node-2"].log(t), `msg=connected component=xdsclient`); n < 2 {
				return fmt.Errorf("node-2 connected %d times; want a reconnect", n)
			}
			return nil
		})
		if lines := l.accessLines(t, "node-2", "dst.addr="+xdsAddr); len(lines) != 0 {
			t.Errorf("node-2's own control plane connection went through its proxy: %q", lines)
		}
		if _, err := l.appGet("client-a", dbVIP+":90", "/after-reconnect"); err != nil {
			t.Errorf("client-a -> db-vm after the control plane restart: %v", err)
		}
	})

	t.Run("UnenrollRemovesRules", func(t *testing.T) {
		l.adminPost(t, l.node2, "/unenroll", url.Values{"workload": {"shop/db-vm"}})
		if netnstest.HasCaptureTable(t, l.node2) {
			t.Fatal("table inet ambit still in node 2's namespace after unenroll")
		}
		before := len(l.accessLines(t, "node-2", "src.addr="+node1IP+":"))
		if _, err := l.httpGet(l.node1.Path, true, "http://"+node2IP+":"+dbPort+"/uncaptured"); err != nil {
			t.Fatal(err)
		}
		if after := len(l.accessLines(t, "node-2", "src.addr="+node1IP+":")); after != before {
			t.Errorf("after unenroll node-2 still proxied plaintext to db-vm (%d new lines)", after-before)
		}
	})

	t.Run("StopRemovesRules", func(t *testing.T) {
		l.adminPost(t, l.node2, "/enroll", url.Values{"workload": {"shop/db-vm"}, "mode": {"host"}})
		if !netnstest.HasCaptureTable(t, l.node2) {
			t.Fatal("no table inet ambit after enrolling again")
		}
		p := l.nodeProcs["node-2"]
		_ = p.Signal(syscall.SIGTERM)
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("node-2 did not stop within 10 s of SIGTERM")
		}
		if netnstest.HasCaptureTable(t, l.node2) {
			t.Error("table inet ambit still in node 2's namespace after the node proxy stopped")
		}
	})
}

// configDump reads the node proxy's admin /config_dump in ns.
func (l *lab) configDump(t *testing.T, ns netnstest.NS) node.ConfigDump {
	t.Helper()
	b, err := l.httpGet(ns.Path, false, "http://127.0.0.1:15000/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	var d node.ConfigDump
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("config_dump: %v", err)
	}
	return d
}

// adminPost sends a form to the node proxy's admin endpoint in ns.
func (l *lab) adminPost(t *testing.T, ns netnstest.NS, path string, form url.Values) {
	t.Helper()
	d := &netns.Dialer{NetNS: ns.Path, Timeout: 3 * time.Second}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:15000"+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s %v: %s: %s", path, form, resp.Status, b)
	}
}

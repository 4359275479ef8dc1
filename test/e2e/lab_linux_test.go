//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/echo"
	ambitlab "github.com/ambitmesh/ambit/internal/lab"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

// The lab's addresses. Each pod has its own /24 to its node (the node end
// is .1, the pod .2); the nodes route each other's 10.N.0.0/16.
const (
	node1IP = "192.168.77.1"
	node2IP = "192.168.77.2"

	clientIP = "10.1.1.2" // shop/client-a on node-1, service account client
	otherIP  = "10.1.2.2" // shop/other-a on node-1, service account other
	webB1IP  = "10.2.1.2" // shop/web-b1 on node-2, echo
	webB2IP  = "10.2.2.2" // shop/web-b2 on node-2, echo

	webVIP   = "10.96.0.10"
	echoPort = "8080"

	xdsAddr = node1IP + ":15010"
)

const meshYAML = `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: client-a, namespace: shop, labels: {app: client}}
spec: {addresses: ["` + clientIP + `"], node: node-1, serviceAccount: client}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: other-a, namespace: shop, labels: {app: other}}
spec: {addresses: ["` + otherIP + `"], node: node-1, serviceAccount: other}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-b1, namespace: shop, labels: {app: web}}
spec: {addresses: ["` + webB1IP + `"], node: node-2, serviceAccount: web}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-b2, namespace: shop, labels: {app: web}}
spec: {addresses: ["` + webB2IP + `"], node: node-2, serviceAccount: web}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: ` + webVIP + `
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: ` + echoPort + `}]
`

// lab is one running topology: namespaces, processes and their logs.
type lab struct {
	ctx       context.Context
	node1     netnstest.NS
	node2     netnstest.NS
	pods      map[string]netnstest.NS // by workload name
	configDir string
	stateDir  string // the control plane's; the CA root lives in ca/
	control   *proc
	nodeProcs map[string]*proc // by node name
	echoProcs []*proc
}

// proc is a child process whose combined output goes to a file.
type proc struct{ *ambitlab.Process }

// log returns what the process wrote so far.
func (p *proc) log(t testing.TB) string {
	t.Helper()
	out, err := p.Output()
	if err != nil {
		t.Fatalf("read %s output: %v", p.Name, err)
	}
	return out
}

func requireLab(t *testing.T) {
	t.Helper()
	netnstest.RequireRoot(t)
	if ambitBin == "" {
		t.Skip("the ambit binary was not built (TestMain builds it only as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip (ip netns exec) to run the binary inside namespaces")
	}
}

// newLab builds the topology and starts every process; everything is
// stopped and removed when t ends, and every process's output is printed if
// t failed.
func newLab(t *testing.T) *lab {
	t.Helper()
	requireLab(t)
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	l := &lab{pods: map[string]netnstest.NS{}, nodeProcs: map[string]*proc{}}
	topo := netnstest.Topology(t, ambitlab.Spec{Prefix: "e2e", Nodes: [2]ambitlab.Node{
		{Name: "node1", Link: p(node1IP + "/24"), Pods: []ambitlab.Pod{{Name: "client-a", IP: a(clientIP)}, {Name: "other-a", IP: a(otherIP)}}},
		{Name: "node2", Link: p(node2IP + "/24"), Pods: []ambitlab.Pod{{Name: "web-b1", IP: a(webB1IP)}, {Name: "web-b2", IP: a(webB2IP)}}},
	}})
	l.node1, l.node2, l.pods = topo.Nodes["node1"], topo.Nodes["node2"], topo.Pods

	ctx, cancel := context.WithCancel(context.Background())
	l.ctx = ctx
	t.Cleanup(cancel) // runs after the processes' cleanups below (LIFO) as a backstop

	l.configDir = t.TempDir()
	l.writeConfig(t, "mesh.yaml", meshYAML)
	state := t.TempDir()
	l.stateDir = state
	l.stateDir = state
	l.control = l.start(t, "control", l.node1, "control",
		"--config-dir", l.configDir, "--state-dir", state,
		"--xds-address", xdsAddr, "--admin-address", "127.0.0.1:15014",
		"--server-name", node1IP, "--debounce", "20ms")
	eventually(t, 15*time.Second, "the control plane to be ready", func() error {
		_, err := l.httpGet(l.node1.Path, false, "http://127.0.0.1:15014/readyz")
		return err
	})

	for _, w := range []string{"web-b1", "web-b2"} {
		l.echoProcs = append(l.echoProcs, l.start(t, "echo-"+w, l.pods[w], "echo",
			"--http-port", echoPort, "--grpc-port", "0", "--tcp-port", "0",
			"--namespace", "shop", "--pod", w, "--service", "web"))
	}

	for _, n := range []struct {
		name string
		ns   netnstest.NS
		pods []string
	}{
		{"node-1", l.node1, []string{"client-a", "other-a"}},
		{"node-2", l.node2, []string{"web-b1", "web-b2"}},
	} {
		tok := l.token(t, n.name)
		args := []string{"node", "--control-plane", xdsAddr, "--node", n.name,
			"--token", tok.Token, "--ca-pin", tok.CAPin, "--trust-domain", tok.TrustDomain}
		for _, pod := range n.pods {
			args = append(args, "--enroll", "shop/"+pod+"="+l.pods[pod].Path)
		}
		l.nodeProcs[n.name] = l.start(t, n.name, n.ns, args...)
	}
	for name, ns := range map[string]netnstest.NS{"node-1": l.node1, "node-2": l.node2} {
		eventually(t, 20*time.Second, name+" to be ready (synced)", func() error {
			_, err := l.httpGet(ns.Path, false, "http://127.0.0.1:15021/healthz/ready")
			return err
		})
	}
	for _, w := range []string{"web-b1", "web-b2"} {
		eventually(t, 10*time.Second, "echo in "+w+" to answer in its pod", func() error {
			_, err := l.httpGet(l.pods[w].Path, false, "http://127.0.0.1:"+echoPort+"/health")
			return err
		})
	}
	return l
}

// start runs `ambit args...` inside ns, output to a file. It is stopped
// (SIGTERM, then SIGKILL after 5 s) when the test ends.
func (l *lab) start(t *testing.T, name string, ns netnstest.NS, args ...string) *proc {
	t.Helper()
	p, err := ambitlab.Start(name, ns.Path, filepath.Join(t.TempDir(), name+".log"), ambitBin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(5 * time.Second); err != nil {
			t.Errorf("%v", err)
		}
		if t.Failed() {
			out, _ := p.Output()
			t.Logf("---- %s (%s) output ----\n%s", name, strings.Join(args, " "), tail(out, 150))
		}
	})
	return &proc{p}
}

// token runs `ambit token create --node node` on the control plane's host
// (node 1's namespace: the token endpoint answers on loopback only).
func (l *lab) token(t *testing.T, node string) control.TokenResponse {
	t.Helper()
	return l.tokenFor(t, "--node", node)
}

// tokenFor is token for a subject flag: --node NAME or --gateway NS/NAME.
func (l *lab) tokenFor(t *testing.T, flag, subject string) control.TokenResponse {
	t.Helper()
	cmd := exec.CommandContext(l.ctx, "ip", "netns", "exec", l.node1.Name, ambitBin,
		"token", "create", flag, subject, "--control-plane", "127.0.0.1:15014", "-o", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ambit token create %s %s: %v\n%s", flag, subject, err, stderr.String())
	}
	var tok control.TokenResponse
	if err := json.Unmarshal(out, &tok); err != nil || tok.Token == "" || tok.CAPin == "" {
		t.Fatalf("ambit token create %s %s printed %q: %v (want JSON with token and caPin)", flag, subject, out, err)
	}
	return tok
}

func (l *lab) writeConfig(t *testing.T, name, yaml string) {
	t.Helper()
	// Write then rename, so the watcher never reads half a file.
	tmp := filepath.Join(l.configDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(l.configDir, name)); err != nil {
		t.Fatal(err)
	}
}

func (l *lab) removeConfig(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(l.configDir, name)); err != nil {
		t.Fatal(err)
	}
}

// httpGet sends one GET on a fresh connection made from inside nsPath. app
// leaves the socket unmarked, like an application's, so the pod's capture
// rules see it; otherwise it carries the proxy's mark (tooling traffic).
func (l *lab) httpGet(nsPath string, app bool, url string) ([]byte, error) {
	d := &netns.Dialer{NetNS: nsPath, Unmarked: app, Timeout: 3 * time.Second}
	c := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
	}
	ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, nil
}

// appGet is an unchanged app in pod `from` calling the echo at target.
func (l *lab) appGet(from, target, path string) (echo.Response, error) {
	b, err := l.httpGet(l.pods[from].Path, true, "http://"+target+path)
	if err != nil {
		return echo.Response{}, err
	}
	var r echo.Response
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("echo answer %q: %w", b, err)
	}
	return r, nil
}

// eventually polls fn until it returns nil or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s: %v", within, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// accessLines returns node's "connection complete" lines that contain every
// one of the fragments.
func (l *lab) accessLines(t testing.TB, node string, fragments ...string) []string {
	t.Helper()
	var out []string
lines:
	for _, line := range strings.Split(l.nodeProcs[node].log(t), "\n") {
		if !strings.Contains(line, `msg="connection complete"`) {
			continue
		}
		for _, f := range fragments {
			if !strings.Contains(line, f) {
				continue lines
			}
		}
		out = append(out, line)
	}
	return out
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

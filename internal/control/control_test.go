package control_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/control/xds"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	// Write to a temp file and rename so the watcher never sees half a file.
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

const workloads = `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {addresses: ["10.0.0.1"], node: node-1, serviceAccount: web}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec: {addresses: ["10.0.0.2"], node: node-2}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80}]
`

// startControl runs a control plane on loopback and waits until it serves.
func startControl(t *testing.T, dir, stateDir, xdsAddr string) (*control.Control, context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := control.New(control.Options{
		ConfigDir:    dir,
		StateDir:     stateDir,
		XDSAddress:   xdsAddr,
		AdminAddress: "127.0.0.1:0",
		Debounce:     20 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("control plane stopped before ready: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("control plane not ready after 10s")
	}
	return c, cancel, done
}

// proxy is what a node proxy holds after joining: its certificates, the
// trust bundle, and the mTLS config for the control-plane channel.
type proxy struct {
	id     spiffeid.ID
	certs  *identity.Manager
	bundle *identity.Bundle
	tls    *tls.Config
	conn   *grpc.ClientConn
}

// joinNode bootstraps a node proxy: join token -> node certificate ->
// mTLS channel to the control plane for xDS and CA calls.
func joinNode(t *testing.T, cp *control.Control, node string) *proxy {
	t.Helper()
	tok := controltest.Token(t, cp, "node/"+node)
	td := spiffeid.RequireTrustDomainFromString(tok.TrustDomain)
	id, err := identity.NodeID(td, node)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := identity.Join(ctx, cp.XDSAddr().String(), tok.Token, tok.CAPin, id)
	if err != nil {
		t.Fatalf("join as %s: %v", node, err)
	}
	p := &proxy{id: id, bundle: identity.NewBundle(td, nil)}
	if _, err := p.bundle.SetRootsAt(res.Generation, res.Roots); err != nil {
		t.Fatal(err)
	}
	cached := identity.SourceFunc(func(_ context.Context, id spiffeid.ID) (*tls.Certificate, error) { return p.certs.Current(id) })
	if p.tls, err = identity.ClientConfig(cached, p.bundle, id, []spiffeid.ID{identity.ControlID(td)}); err != nil {
		t.Fatal(err)
	}
	if p.conn, err = grpc.NewClient(cp.XDSAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(p.tls))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.conn.Close() })
	if p.certs, err = identity.NewManager(identity.Config{TrustDomain: td, Fetcher: identity.NewCAClient(p.conn), Bundle: p.bundle,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
		t.Fatal(err)
	}
	if err := p.certs.Install(id, res.Certificate); err != nil {
		t.Fatal(err)
	}
	return p
}

// xdsClient subscribes as nodeID over the proxy's mTLS channel.
func (p *proxy) xdsClient(t *testing.T, addr, nodeID string, validate func(*xdsclient.Snapshot) error) *xdsclient.Client {
	t.Helper()
	c, err := xdsclient.New(xdsclient.Config{
		Address:              addr,
		NodeID:               nodeID,
		TransportCredentials: credentials.NewTLS(p.tls),
		TypeURLs:             xds.NodeTypes,
		Validate:             validate,
		Logger:               slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff:              xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls the client's snapshots until cond holds.
func waitFor(t *testing.T, c *xdsclient.Client, what string, cond func(*xdsclient.Snapshot) bool) *xdsclient.Snapshot {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		changed := c.Changed()
		if s := c.Current(); cond(s) {
			return s
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; have generation %d with workloads %v", what, c.Current().Generation(), c.Current().Names(xds.TypeWorkload))
		}
	}
}

func workloadAddr(s *xdsclient.Snapshot, name string) string {
	w, ok := xdsclient.Get[*workloadv1.Workload](s, name)
	if !ok || len(w.GetAddresses()) == 0 {
		return ""
	}
	return net.IP(w.GetAddresses()[0]).String()
}

// TestConfigFlowEndToEnd drives real xDS clients through connect -> initial
// config -> file edit -> delta -> NACK -> control-plane restart -> reconnect.
func TestConfigFlowEndToEnd(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", workloads)

	// Reserve a port we can restart the control plane on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xdsAddr := l.Addr().String()
	l.Close()

	stateDir := t.TempDir()
	cp, stopCP, cpDone := startControl(t, dir, stateDir, xdsAddr)
	defer func() { stopCP(); <-cpDone }()

	// node-1 validates like a proxy would: it refuses a Service it cannot
	// serve (here: one named "poison").
	validate := func(s *xdsclient.Snapshot) error {
		if _, bad := s.Get(xds.TypeService, "shop/poison"); bad {
			return errors.New("service shop/poison: cannot be served by this proxy")
		}
		return nil
	}
	n1 := joinNode(t, cp, "node-1").xdsClient(t, xdsAddr, "node/node-1", validate)
	n2 := joinNode(t, cp, "node-2").xdsClient(t, xdsAddr, "node/node-2", nil)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{}, 2)
	for _, c := range []*xdsclient.Client{n1, n2} {
		go func() { _ = c.Run(ctx); runDone <- struct{}{} }()
	}
	defer func() { cancel(); <-runDone; <-runDone }()

	// Initial config.
	syncCtx, syncCancel := context.WithTimeout(ctx, 10*time.Second)
	s, err := n1.WaitSynced(syncCtx)
	if err == nil {
		// Both proxies hold their initial config before anything is counted.
		_, err = n2.WaitSynced(syncCtx)
	}
	syncCancel()
	if err != nil {
		t.Fatal(err)
	}
	if got := workloadAddr(s, "shop/web-1"); got != "10.0.0.1" {
		t.Fatalf("initial config: web-1 address = %q, want 10.0.0.1", got)
	}
	if _, ok := s.Get(xds.TypeService, "shop/web"); !ok {
		t.Fatal("initial config: service shop/web missing")
	}
	gen := s.Generation()

	// File edit -> delta carrying only the changed workload.
	sentBefore := metricValue(t, cp, `ambit_xds_resources_sent_total{type="`+xds.TypeWorkload+`"}`)
	writeFile(t, dir, "mesh.yaml", strings.Replace(workloads, `"10.0.0.1"`, `"10.0.0.11"`, 1))
	s = waitFor(t, n1, "web-1 moved to 10.0.0.11", func(s *xdsclient.Snapshot) bool { return workloadAddr(s, "shop/web-1") == "10.0.0.11" })
	if s.Generation() <= gen {
		t.Errorf("generation did not advance: %d -> %d", gen, s.Generation())
	}
	if got := workloadAddr(s, "shop/db-1"); got != "10.0.0.2" {
		t.Errorf("unchanged workload db-1 = %q after delta, want 10.0.0.2", got)
	}
	waitFor(t, n2, "node-2 sees the move", func(s *xdsclient.Snapshot) bool { return workloadAddr(s, "shop/web-1") == "10.0.0.11" })
	// Both proxies got exactly the one changed workload.
	if d := metricValue(t, cp, `ambit_xds_resources_sent_total{type="`+xds.TypeWorkload+`"}`) - sentBefore; d != 2 {
		t.Errorf("a one-workload change sent %v workload resources to 2 proxies, want 2", d)
	}

	// NACK: node-1 rejects the poison service and keeps its last good
	// config; node-2 is unaffected and takes it.
	good := n1.Current()
	writeFile(t, dir, "poison.yaml", `
apiVersion: v1
kind: Service
metadata: {name: poison, namespace: shop}
spec: {ports: [{port: 81}]}
`)
	waitFor(t, n2, "node-2 gets the poison service", func(s *xdsclient.Snapshot) bool {
		_, ok := s.Get(xds.TypeService, "shop/poison")
		return ok
	})
	waitStatus(t, cp, "node-1 NACK reported", func(st control.Status) bool {
		for _, p := range st.Proxies {
			if p.NodeID == "node/node-1" && strings.Contains(p.Types[xds.TypeService].LastNACK, "cannot be served") {
				return true
			}
		}
		return false
	})
	if n1.Current() != good {
		t.Fatal("node-1 replaced its last good config after a NACK")
	}
	if st := n1.Status(); st.LastNACK == nil || !strings.Contains(st.LastNACK.Error, "shop/poison") {
		t.Errorf("node-1 status does not record the NACK: %+v", st.LastNACK)
	}
	// Removing the poison makes node-1 accept again.
	if err := os.Remove(filepath.Join(dir, "poison.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, n2, "node-2 drops the poison service", func(s *xdsclient.Snapshot) bool {
		_, ok := s.Get(xds.TypeService, "shop/poison")
		return !ok
	})

	// A broken file edit keeps the last good objects in force.
	writeFile(t, dir, "mesh.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {portz: []}\n")
	waitStatus(t, cp, "source error reported", func(st control.Status) bool {
		for _, e := range st.SourceErrors {
			if strings.Contains(e.Error(), `unknown field "spec.portz"`) {
				return true
			}
		}
		return false
	})
	if got := workloadAddr(n2.Current(), "shop/web-1"); got != "10.0.0.11" {
		t.Fatalf("a broken file removed its objects: web-1 = %q", got)
	}

	// Control plane restart: proxies keep their config while it is down,
	// reconnect, and converge on what changed meanwhile.
	stopCP()
	if err := <-cpDone; err != nil {
		t.Fatalf("control plane Run: %v", err)
	}
	waitClient(t, n1, "node-1 notices the disconnect", func(st xdsclient.Status) bool { return !st.Connected })
	if got := workloadAddr(n1.Current(), "shop/web-1"); got != "10.0.0.11" {
		t.Fatalf("node-1 lost its config while the control plane was down: web-1 = %q", got)
	}
	writeFile(t, dir, "mesh.yaml", strings.Replace(workloads, `"10.0.0.1"`, `"10.0.0.21"`, 1))
	// Same state dir: same root, so the nodes' certificates stay valid.
	cp, stopCP, cpDone = startControl(t, dir, stateDir, xdsAddr)
	for _, c := range []*xdsclient.Client{n1, n2} {
		waitFor(t, c, "reconnect and converge on 10.0.0.21", func(s *xdsclient.Snapshot) bool { return workloadAddr(s, "shop/web-1") == "10.0.0.21" })
	}
	if st := n1.Status(); st.Connects < 2 {
		t.Errorf("node-1 connects = %d, want a reconnect", st.Connects)
	}
	_ = cp
}

// TestProxyCannotSubscribeAsAnother: node-1's certificate does not let a
// proxy subscribe as node-2.
func TestProxyCannotSubscribeAsAnother(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", workloads)
	cp, stop, done := startControl(t, dir, t.TempDir(), "127.0.0.1:0")
	defer func() { stop(); <-done }()
	c := joinNode(t, cp, "node-1").xdsClient(t, cp.XDSAddr().String(), "node/node-2", nil)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { _ = c.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()
	waitClient(t, c, "stream refused with PermissionDenied", func(st xdsclient.Status) bool {
		return strings.Contains(st.LastError, "PermissionDenied")
	})
	if c.Current().Synced() {
		t.Fatal("a proxy impersonating node-2 received config")
	}
}

func waitStatus(t *testing.T, cp *control.Control, what string, cond func(control.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(cp.Status()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status: %+v", what, cp.Status())
		}
		time.Sleep(10 * time.Millisecond) // polling a snapshot, not synchronising on time
	}
}

func waitClient(t *testing.T, c *xdsclient.Client, what string, cond func(xdsclient.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(c.Status()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status: %+v", what, c.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue scrapes one sample from the control plane's /metrics.
func metricValue(t *testing.T, cp *control.Control, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + cp.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ambitBin is the real binary the demo runs, built once.
var ambitBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ambit-demo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ambitBin = filepath.Join(dir, "ambit")
	build := exec.Command("go", "build", "-o", ambitBin, "github.com/ambitmesh/ambit/cmd/ambit")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo: go build ./cmd/ambit:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var stepTitles = []string{"a call through the mesh", "canary: 90/10", "header routing", "AuthorizationPolicy", "live policy edit", "load:"}

// checkReport asserts that every scenario ran, in order, and passed with its evidence printed.
func checkReport(t *testing.T, rep Report, out string) {
	t.Helper()
	if len(rep.Steps) != len(stepTitles) {
		t.Fatalf("%d steps, want %d:\n%s", len(rep.Steps), len(stepTitles), out)
	}
	for i, s := range rep.Steps {
		if !s.OK || !strings.HasPrefix(s.Title, stepTitles[i]) {
			t.Errorf("step %d %q ok=%v, want %q passed", i+1, s.Title, s.OK, stepTitles[i])
		}
	}
	for _, want := range []string{
		"the peer proved spiffe://cluster.local/ns/shop/sa/ratings",     // node-1's view
		"the peer proved spiffe://cluster.local/ns/shop/sa/productpage", // node-2's view
		"binomial, 5 sigmas",
		"got:  reviews-v2-1 20",
		"policy=shop/deny-productpage",
		"hbone: status 401 Unauthorized", // what node-1 got for the denied caller
		"policy=shop/deny-reviews",
		"requests/s, latency p50",
		"all 6 steps passed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(rep.RunDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run folder %s still there after a passing run (%v)", rep.RunDir, err)
	}
}

// The demo in explicit mode on loopback, the path of every non-root user; as root, nftables is
// made to look missing, which must fall back to loopback and say so. --keep is exercised: the kept
// mesh answers until the context ends, then everything is gone.
func TestDemoLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	var kept []string
	var metrics string
	rep, err := Run(ctx, Options{
		Binary: ambitBin, Requests: 400, Load: 500 * time.Millisecond, Out: &out, TempDir: t.TempDir(), Keep: true,
		ProbeCapture: func(context.Context) error { return errors.New("no nftables (test)") },
		Ready: func(r Report) {
			kept = r.Kept
			resp, err := http.Get("http://127.42.1.1:15020/metrics")
			if err == nil {
				var b bytes.Buffer
				_, _ = b.ReadFrom(resp.Body)
				resp.Body.Close()
				metrics = b.String()
			}
			cancel()
		},
	})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if rep.Mode != ModeLoopback {
		t.Errorf("mode %s, want loopback", rep.Mode)
	}
	if os.Geteuid() == 0 && !strings.Contains(rep.Why, "nftables capture is not available here (no nftables (test)); falling back") {
		t.Errorf("as root with nftables missing the reason is %q", rep.Why)
	}
	checkReport(t, rep, out.String())
	if !strings.Contains(metrics, `istio_tcp_connections_opened_total{`) {
		t.Errorf("the kept node-1 did not serve its metrics: %q", metrics)
	}
	if len(kept) == 0 || !strings.Contains(strings.Join(kept, "\n"), "curl -s http://127.42.1.10:9081/") {
		t.Errorf("--keep printed %q, want how to send traffic by hand", kept)
	}
	// Every process is gone: all the addresses the demo bound are free again.
	if err := checkPorts(loopbackLayout().ports); err != nil {
		t.Errorf("after the demo: %v", err)
	}
}

// A second demo while one runs refuses, naming the running one.
func TestDemoRefusesToRunTwice(t *testing.T) {
	tmp := t.TempDir()
	unlock, err := lock(filepath.Join(tmp, "ambit-demo.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, err = Run(context.Background(), Options{Binary: ambitBin, Mode: ModeLoopback, TempDir: tmp})
	want := fmt.Sprintf("another ambit demo is running (pid %d", os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second demo: %v, want an error containing %q", err, want)
	}
	unlock()
	// Released: the next one may take it.
	again, err := lock(filepath.Join(tmp, "ambit-demo.lock"))
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again()
}

// A port the loopback layout needs is taken: the demo names it and what needed it, and starts
// nothing.
func TestDemoPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.42.1.1:15020")
	if err != nil {
		t.Skipf("cannot bind 127.42.1.1 here: %v", err)
	}
	defer ln.Close()
	tmp := t.TempDir()
	_, err = Run(context.Background(), Options{Binary: ambitBin, Mode: ModeLoopback, TempDir: tmp})
	if err == nil || !strings.Contains(err.Error(), "127.42.1.1:15020 (node-1 metrics) is not free") {
		t.Fatalf("demo with 127.42.1.1:15020 taken: %v, want an error naming it", err)
	}
	entries, _ := os.ReadDir(tmp)
	for _, e := range entries {
		if e.Name() != "ambit-demo.lock" {
			t.Errorf("left %s in the temp folder", e.Name())
		}
	}
}

// A step whose result does not match fails the run: the step, what was expected and what came
// back are printed, the logs (one per process) stay, everything else is gone.
func TestDemoFailedStep(t *testing.T) {
	// reviews v2's echo answers as reviews-v1-1, so the canary sees no v2 at all.
	wrapper := filepath.Join(t.TempDir(), "ambit")
	script := "#!/bin/sh\nexec " + ambitBin + ` $(echo "$@" | sed 's/--pod reviews-v2-1/--pod reviews-v1-1/')` + "\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep, err := Run(context.Background(), Options{Binary: wrapper, Mode: ModeLoopback, Requests: 400, Out: &out, TempDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "step 2 (canary") || !strings.Contains(err.Error(), rep.LogDir) {
		t.Fatalf("demo with a broken canary: %v, want step 2 failed and the log folder named\n%s", err, out.String())
	}
	for _, want := range []string{"[2/6] canary", "FAILED", "expected: between 10 and 70 answers from reviews-v2-1", "got:      0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if n := len(rep.Steps); n != 2 || !rep.Steps[0].OK || rep.Steps[1].OK {
		t.Errorf("steps %+v, want step 1 passed and step 2 failed, nothing after", rep.Steps)
	}
	logs, _ := filepath.Glob(filepath.Join(rep.LogDir, "*.log"))
	if len(logs) != 8 { // control, 4 echos, 2 nodes, waypoint
		t.Errorf("kept logs %v, want one per process (8)", logs)
	}
	for _, gone := range []string{rep.ConfigDir, filepath.Join(rep.RunDir, "state")} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s kept after the failure (%v)", gone, err)
		}
	}
	if err := checkPorts(loopbackLayout().ports); err != nil {
		t.Errorf("after the failed demo: %v", err)
	}
}

// Ctrl-C (the context ends) in the middle: the run stops, says so, and removes everything.
func TestDemoInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &cancelAt{marker: "[3/6]", cancel: cancel}
	rep, err := Run(ctx, Options{Binary: ambitBin, Mode: ModeLoopback, Requests: 400, Out: out, TempDir: t.TempDir()})
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted demo returned %v, want context.Canceled\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "interrupted") {
		t.Errorf("output does not say it was interrupted:\n%s", out.String())
	}
	if _, err := os.Stat(rep.RunDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run folder %s kept after Ctrl-C (%v)", rep.RunDir, err)
	}
	if err := checkPorts(loopbackLayout().ports); err != nil {
		t.Errorf("after the interrupted demo: %v", err)
	}
}

// cancelAt collects output and calls cancel once marker is written.
type cancelAt struct {
	bytes.Buffer
	marker string
	cancel func()
}

func (c *cancelAt) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.marker) {
		c.cancel()
	}
	return c.Buffer.Write(p)
}

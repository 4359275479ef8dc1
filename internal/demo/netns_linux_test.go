//go:build linux

package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/lab"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables); CI runs it as root")
	}
	if err := probeCapture(context.Background()); err != nil {
		t.Skipf("nftables capture unavailable: %v", err)
	}
}

// The demo with network namespaces and transparent capture; afterwards none of its namespaces
// (and so none of its nftables rules) is left.
func TestDemoNetns(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	rep, err := Run(ctx, Options{Binary: ambitBin, Mode: ModeNetns, Requests: 400, Load: 500 * time.Millisecond, Out: &out, TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if rep.Mode != ModeNetns {
		t.Errorf("mode %s, want netns", rep.Mode)
	}
	checkReport(t, rep, out.String())
	if !strings.Contains(out.String(), "the app saw the client as 10.1.1.2:") {
		t.Errorf("the echo in ratings did not see productpage's own address (client IP preserved):\n%s", out.String())
	}
	mine, err := filepath.Glob(fmt.Sprintf("%s/ambit-%s-*-%d-*", lab.NetnsDir, nsPrefix, os.Getpid()))
	if err != nil || len(mine) > 0 {
		t.Errorf("namespaces left after the demo: %v %v", mine, err)
	}
}

// A namespace left by a killed demo (its pid is gone) is removed, and the demo says so.
func TestCleanLeftovers(t *testing.T) {
	requireRoot(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("ambit-%s-node-1-%d-1", nsPrefix, dead.Process.Pid)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = lab.DeleteNS(name) })
	live, err := lab.NewNS(nsPrefix + "-live") // this process's: must stay
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.DeleteNS(live.Name) })

	var said []string
	if err := cleanLeftoverNamespaces(lab.NetnsDir, func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(lab.NetnsDir, name)); !os.IsNotExist(err) {
		t.Errorf("leftover %s still there (%v)", name, err)
	}
	if _, err := os.Stat(live.Path); err != nil {
		t.Errorf("a live demo's namespace was removed: %v", err)
	}
	want := fmt.Sprintf("removed network namespace %s, left by a demo that was killed (pid %d is gone)", name, dead.Process.Pid)
	if !strings.Contains(strings.Join(said, "\n"), want) {
		t.Errorf("said %q, want %q", said, want)
	}
}

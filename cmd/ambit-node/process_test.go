package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/testkit"
)

// The built binary, as nodes run it: the version stamped at link time is
// the one it prints (the -X path is internal/cmdutil.version; a stale path
// prints "dev"), it joins a real control plane with a token, syncs its
// configuration over delta xDS (readiness answers 200 only then), and a
// SIGTERM stops it with exit code 0.
func TestBinaryJoinsControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ambit-node")
	}
	bin := filepath.Join(t.TempDir(), "ambit-node")
	// The e2e lab's and the demo's build flags, so the compiled packages
	// come from the build cache; only the link is new.
	build := exec.Command("go", "build", "-ldflags", "-X github.com/ambitmesh/ambit/internal/cmdutil.version=v0.0.0-linktest",
		"-o", bin, "github.com/ambitmesh/ambit/cmd/ambit-node")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "ambit-node v0.0.0-linktest ") {
		t.Fatalf("ambit-node version = %q (%v), want the version stamped with -X", out, err)
	}

	dir := t.TempDir()
	const mesh = `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop}
spec: {addresses: ["127.0.0.41"], node: node-p, serviceAccount: web}
`
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(mesh), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := controltest.Start(t, dir)
	tok := controltest.Token(t, cp, "node/node-p")
	hbone := testkit.CommonPort(t, "127.0.0.41")
	readiness := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(testkit.CommonPort(t, "127.0.0.1"))))

	var logs testkit.LogBuffer
	node := exec.Command(bin, "--control-plane", cp.XDSAddr().String(), "--node", "node-p",
		"--token", tok.Token, "--ca-pin", tok.CAPin, "--trust-domain", tok.TrustDomain,
		"--hbone-port", strconv.Itoa(int(hbone)), "--admin-address", "-", "--metrics-address", "-",
		"--readiness-address", readiness)
	node.Stderr = &logs
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- node.Wait() }()
	t.Cleanup(func() {
		_ = node.Process.Kill()
		<-exited
	})

	testkit.Eventually(t, 20*time.Second, "ambit-node ready", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("ambit-node exited before it was ready: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get("http://" + readiness + "/healthz/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// Its HBONE listener is on the workload's address, from the config.
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.41", strconv.Itoa(int(hbone))))
	if err != nil {
		t.Fatalf("HBONE listener of the synced workload: %v", err)
	}
	c.Close()

	if err := node.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("ambit-node after SIGTERM: %v, want exit code 0\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("ambit-node still running 20 s after SIGTERM\n%s", logs.String())
	}
}

//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ambitBin is the binary under test, built once by TestMain; empty when the
// lab cannot run here (not root), so the tests skip with the reason.
var ambitBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "ambit-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "ambit")
	build := exec.Command("go", "build", "-o", bin, "github.com/ambitmesh/ambit/cmd/ambit")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build ./cmd/ambit:", err)
		return 1
	}
	ambitBin = bin
	return m.Run()
}

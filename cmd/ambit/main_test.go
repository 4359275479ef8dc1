package main

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// initBudget bounds what one ambit package may allocate in its package
// initialisation. This test binary links what the ambit binary links, and
// every linked package's init runs in every command, the node proxy's and the
// gateway's included, before main. Tables, regexps and decoders a package
// needs only for some commands belong in a sync.OnceValue where they are
// used. Generated protobuf packages register their descriptors at init and
// are not counted.
const initBudget = 32 << 10

// inittrace lines: "init PKG @T ms, T ms clock, N bytes, N allocs".
var initLine = regexp.MustCompile(`^init (\S+) @\S+ ms, \S+ ms clock, (\d+) bytes, (\d+) allocs$`)

func TestInitWork(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	godebug := "inittrace=1"
	if v := os.Getenv("GODEBUG"); v != "" {
		godebug = v + "," + godebug
	}
	cmd.Env = append(os.Environ(), "GODEBUG="+godebug)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s with GODEBUG=%s: %v\n%s", os.Args[0], godebug, err, out)
	}
	const module = "github.com/ambitmesh/ambit/"
	seen := 0
	for line := range strings.Lines(string(out)) {
		m := initLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || !strings.HasPrefix(m[1], module) {
			continue
		}
		seen++
		if strings.HasPrefix(m[1], module+"proto/") {
			continue
		}
		if n, _ := strconv.Atoi(m[2]); n > initBudget {
			t.Errorf("package %s allocates %d bytes (%s allocations) at init, over the %d-byte budget: "+
				"build what only some commands need on first use (sync.OnceValue)", m[1], n, m[3], initBudget)
		}
	}
	// The node proxy, the gateway and the control plane all have init work;
	// far fewer lines means the trace's format changed under this test.
	if seen < 10 {
		t.Fatalf("found %d ambit packages in the init trace, want at least 10; output:\n%s", seen, out)
	}
}

package lab

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Leftovers picks the namespaces of the given prefix whose owner pid is dead, and nothing else.
func TestLeftovers(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{
		"ambit-demo-node-1-100-1",      // dead owner: leftover
		"ambit-demo-productpage-100-7", // dead owner: leftover
		"ambit-demo-node-2-200-2",      // live owner: in use
		"ambit-e2e-node1-100-3",        // other prefix
		"ambit-demo-broken",            // no pid
		"ambit-demo-x-notapid-4",       // pid not a number
		"something-else",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	alive := func(pid int) bool { return pid == 200 }
	got, err := Leftovers(dir, "demo", alive)
	if err != nil {
		t.Fatal(err)
	}
	want := []Leftover{{"ambit-demo-node-1-100-1", 100}, {"ambit-demo-productpage-100-7", 100}}
	if !slices.Equal(got, want) {
		t.Errorf("Leftovers = %v, want %v", got, want)
	}
	if got, err := Leftovers(filepath.Join(dir, "missing"), "demo", alive); err != nil || got != nil {
		t.Errorf("Leftovers of a missing folder = %v, %v; want none, no error", got, err)
	}
	// The default liveness check sees this very process alive.
	if !ProcessAlive(os.Getpid()) {
		t.Error("ProcessAlive(own pid) = false")
	}
}

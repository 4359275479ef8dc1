package demo

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Run folders of killed demos (pid gone, state/ still there) are removed; a failed run's logs,
// a live run's folder and anything else stay.
func TestCleanLeftoverRuns(t *testing.T) {
	tmp := t.TempDir()
	dead := 1 << 30 // above any pid_max
	mk := func(name, sub string) string {
		d := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Join(d, sub), 0o700); err != nil {
			t.Fatal(err)
		}
		return d
	}
	killed := mk(fmt.Sprintf("ambit-demo-run-%d-11", dead), "state")
	failed := mk(fmt.Sprintf("ambit-demo-run-%d-12", dead), "logs")
	live := mk(fmt.Sprintf("ambit-demo-run-%d-13", os.Getpid()), "state")
	other := mk("ambit-demo-test-14", "state")
	var said []string
	if err := cleanLeftoverRuns(tmp, func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(killed); !os.IsNotExist(err) {
		t.Errorf("killed run's folder still there (%v)", err)
	}
	for _, d := range []string{failed, live, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
	if want := fmt.Sprintf("removed run folder %s, left by a demo that was killed (pid %d is gone)", killed, dead); strings.Join(said, "\n") != want {
		t.Errorf("said %q, want %q", said, want)
	}
}

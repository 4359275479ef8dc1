//go:build unix

package demo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A lock path that is a symlink (planted in a shared /tmp) is refused, and
// what it points to is left as it was.
func TestLockRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ambit-demo.lock")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	unlock, err := lock(path)
	if err == nil {
		unlock()
		t.Fatal("lock through a symlink succeeded")
	}
	if !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), "rm "+path) {
		t.Errorf("error %q: want it to name the symlink and how to remove it", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me\n" {
		t.Errorf("the symlink's target was changed to %q", b)
	}
}

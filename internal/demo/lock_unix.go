//go:build unix

package demo

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lock takes the demo's lock file: one demo at a time per machine (they would share addresses
// and namespace names). The lock is released by the kernel if the process dies, so a killed run
// never blocks the next one.
func lock(path string) (unlock func(), err error) {
	// Not through a symlink: the file is in a shared /tmp and the demo runs as root, which would
	// truncate whatever a planted link points to.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o644)
	if errors.Is(err, os.ErrPermission) {
		// another user's lock file: locking needs only a descriptor
		f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	}
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("demo: lock file %s is a symbolic link, not the demo's; remove it (rm %s) and run again", path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("demo: lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("demo: another ambit demo is running (pid %s, lock %s): wait for it to finish or stop it with Ctrl-C",
				pidOr(strings.TrimSpace(string(b))), path)
		}
		return nil, fmt.Errorf("demo: lock %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func pidOr(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

package lab

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Leftover is a namespace (or folder) whose owning process is gone.
type Leftover struct {
	Name string
	PID  int
}

// Leftovers lists the entries of dir (namespaces under /run/netns, or run folders) named
// "ambit-<prefix>-<anything>-<pid>-<n>" whose pid is not a running process (alive reports whether
// it is; nil means ProcessAlive): what a killed run left behind. Entries of live processes, and
// names of any other shape, are not listed.
func Leftovers(dir, prefix string, alive func(pid int) bool) ([]Leftover, error) {
	if alive == nil {
		alive = ProcessAlive
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: list %s: %w", dir, err)
	}
	var out []Leftover
	for _, e := range entries {
		pid, ok := ownerPID(e.Name(), prefix)
		if ok && !alive(pid) {
			out = append(out, Leftover{Name: e.Name(), PID: pid})
		}
	}
	return out, nil
}

// ownerPID parses "ambit-<prefix>-<anything>-<pid>-<n>".
func ownerPID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "ambit-"+prefix+"-")
	if !ok {
		return 0, false
	}
	f := strings.Split(rest, "-")
	if len(f) < 2 {
		return 0, false
	}
	if _, err := strconv.Atoi(f[len(f)-1]); err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(f[len(f)-2])
	return pid, err == nil && pid > 0
}

//go:build !unix

package demo

import (
	"fmt"
	"os"
)

// lock creates the lock file exclusively where flock is unavailable; a killed run leaves it
// behind, and the message says to delete it.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("demo: %s exists: another ambit demo is running, or one was killed (then delete the file): %w", path, err)
	}
	fmt.Fprintln(f, os.Getpid())
	f.Close()
	return func() { _ = os.Remove(path) }, nil
}

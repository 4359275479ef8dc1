//go:build race

package sockio

import (
	"runtime"
	"unsafe"
)

// ioSync orders, for the race detector, what one goroutine did before
// writing to a socket with what another does after reading from it, as
// package syscall does for its own reads and writes.
var ioSync int64

func raceWrite(p []byte) {
	runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	runtime.RaceReleaseMerge(unsafe.Pointer(&ioSync))
}

func raceRead(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
	runtime.RaceAcquire(unsafe.Pointer(&ioSync))
}

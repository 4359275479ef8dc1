// Package trywrite writes to a socket without waiting: what the kernel's
// send buffer takes now is written, the rest is left to the caller. A
// goroutine that must never block on one peer (an HTTP/2 connection's
// frame reader, serving every stream of the connection) can hand bytes to
// a stream's socket this way, instead of waking another goroutine to do
// the write: the hand-off costs a thread wake-up per chunk, which at a few
// KiB per request is most of a proxy's CPU.
package trywrite

import (
	"errors"
	"syscall"
)

// Socket is a connection whose descriptor is written directly.
type Socket struct{ rc syscall.RawConn }

// For returns c's socket, or nil when c has no descriptor (a pipe, a TLS
// connection, a wrapper).
func For(c any) *Socket {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &Socket{rc: rc}
}

// TryWrite writes what the socket takes without waiting and returns how much
// that was: 0 and no error when its send buffer is full. The caller must be
// the socket's only writer at the time (a concurrent write holding the
// descriptor's write lock would make this one wait for it).
func (s *Socket) TryWrite(p []byte) (int, error) {
	var n int
	var werr error
	err := s.rc.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), p)
			if !errors.Is(werr, syscall.EINTR) {
				return true // never wait for writability
			}
		}
	})
	if n < 0 {
		n = 0
	}
	if errors.Is(werr, syscall.EAGAIN) {
		werr = nil
	}
	if err != nil {
		return n, err
	}
	return n, werr
}

// Package sockio does a proxy's socket reads and writes itself, on the
// descriptor of a net package connection:
//
//   - TryWrite writes without waiting: what the kernel's send buffer takes
//     now is written, the rest is left to the caller. A goroutine that must
//     never block on one peer (an HTTP/2 connection's frame reader, serving
//     every stream of the connection) can hand bytes to a stream's socket
//     this way instead of waking another goroutine to do the write: the
//     hand-off costs a thread wake-up per chunk, which at a few KiB per
//     request is most of a proxy's CPU.
//   - Read and Write are a net.Conn's, waiting in the netpoller as it does,
//     but their syscalls skip the runtime's syscall bookkeeping (see raw.go):
//     that bookkeeping wakes Go's sysmon thread at the start of every busy
//     period of an idle proxy, once per request at 1000 requests/s.
//   - ReadInto is Read into a buffer the caller lends only while the
//     socket has bytes: it is released before the read waits, so an idle
//     relay holds no (possibly large, pooled) buffer.
package sockio

import (
	"net"
	"os"
	"sync"
	"syscall"
)

// Socket is a connection whose descriptor is read and written directly.
// Its calls do not allocate: the functions RawConn runs are made once, and
// their arguments and results live in the Socket (one read and one write
// at a time, as the descriptor's own locks would order them anyway).
type Socket struct {
	rc syscall.RawConn
	c  net.Conn // for the addresses in errors

	rmu        sync.Mutex
	rp         []byte
	rbuf       Buffer // ReadInto's
	rn         int
	rerrno     syscall.Errno
	readFn     func(fd uintptr) bool
	readIntoFn func(fd uintptr) bool

	wmu     sync.Mutex
	wp      []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool // Write: all of wp, waiting while full
	tryFn   func(fd uintptr) bool // TryWrite: what fits now
}

// For returns c's socket, or nil when c is not a stream socket of the net
// package (a pipe, a TLS connection, a wrapper, a file, a datagram socket).
// Only those are certain to be non-blocking, which the raw syscalls rely on
// (a raw write to a blocking pipe would hold its thread and P in the
// kernel), and to mean EOF by an empty read.
func For(c any) *Socket {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		if c.LocalAddr().Network() != "unix" { // unixgram, unixpacket
			return nil
		}
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &Socket{rc: rc, c: c.(net.Conn)}
	s.readFn, s.readIntoFn, s.writeFn, s.tryFn = s.read, s.readInto, s.write, s.try
	return s
}

// TryWrite writes what the socket takes without waiting and returns how much
// that was: 0 and no error when its send buffer is full. The caller must be
// the socket's only writer at the time (a concurrent write holding the
// descriptor's write lock would make this one wait for it).
func (s *Socket) TryWrite(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wp, s.wn, s.werrno = p, 0, 0
	err := s.rc.Write(s.tryFn)
	n, errno := s.wn, s.werrno
	s.wp = nil
	if err != nil {
		return n, s.opError("write", err)
	}
	if errno != 0 && errno != syscall.EAGAIN {
		return n, s.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

func (s *Socket) try(fd uintptr) bool {
	n, errno := rawWrite(fd, s.wp)
	if errno == 0 {
		s.wn = n
	}
	s.werrno = errno
	return true // never wait for writability
}

// opError wraps err as the net package does (*net.OpError), so callers
// and logs see the same errors as from the net.Conn itself.
func (s *Socket) opError(op string, err error) error {
	if re, ok := err.(*net.OpError); ok { // RawConn's "raw-read"/"raw-write" one
		err = re.Err
	}
	return &net.OpError{Op: op, Net: s.c.LocalAddr().Network(), Source: s.c.LocalAddr(), Addr: s.c.RemoteAddr(), Err: err}
}

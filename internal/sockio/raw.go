package sockio

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// The net package's sockets are non-blocking, so a read or write syscall
// on them never sleeps in the kernel: it does what it can or returns
// EAGAIN, and the wait for readiness is the netpoller's (RawConn.Read and
// Write). Such calls are made here with RawSyscall, without the runtime's
// syscall bookkeeping (entersyscall/exitsyscall) that syscall.Read and
// Write do. That bookkeeping is for calls that may block: it wakes Go's
// sysmon thread whenever sysmon sleeps because every P is idle — i.e. at
// the first syscall of every busy period, once per request for a proxy at
// 1000 requests/s, more than a third of its context switches (node lab: 1.2
// -> 0.6-0.8 per request per proxy) — and lets sysmon hand the P to
// another thread while the call runs. A non-blocking socket call lasts
// microseconds (a large write over a veth some tens, as the kernel also
// runs the receiving side), not a span the scheduler needs to reclaim.

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e == 0 {
			raceRead(p[:n])
		}
		return int(n), e
	}
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	raceWrite(p)
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			return int(n), e
		}
	}
}

// Read is net.Conn's Read: it waits (in the netpoller, honouring the read
// deadline) until the socket has bytes, and returns io.EOF after the
// peer's FIN.
func (s *Socket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.rp, s.rn, s.rerrno = p, 0, 0
	return s.readResult(s.rc.Read(s.readFn))
}

// Buffer is the space of a ReadInto, held by the reader only while the
// socket has bytes to read.
type Buffer interface {
	// Bytes returns the space to read into (not empty).
	Bytes() []byte
	// Release is called when the socket has nothing to read, before the
	// read waits: the space may go back to a pool (Bytes is asked again
	// once the socket is readable).
	Release()
}

// ReadInto is Read into b.Bytes(), for a relay that reads in large buffers
// and spends most of its life waiting: when the socket has nothing to read
// the buffer is released before the wait, so an idle connection holds
// none, and a busy one reads without an extra syscall (the read that
// found nothing is the one Read makes before it waits anyway).
func (s *Socket) ReadInto(b Buffer) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.rbuf, s.rp, s.rn, s.rerrno = b, nil, 0, 0
	n, err := s.readResult(s.rc.Read(s.readIntoFn))
	s.rbuf = nil
	return n, err
}

func (s *Socket) readInto(fd uintptr) bool {
	if s.rp == nil {
		s.rp = s.rbuf.Bytes()
	}
	if s.read(fd) {
		return true
	}
	s.rbuf.Release()
	s.rp = nil
	return false
}

// readResult turns a raw read's outcome into Read's results.
func (s *Socket) readResult(err error) (int, error) {
	n, errno := s.rn, s.rerrno
	s.rp = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case errno != 0:
		return 0, s.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *Socket) read(fd uintptr) bool {
	n, errno := rawRead(fd, s.rp)
	if errno == 0 {
		s.rn = n
	}
	s.rerrno = errno
	return errno != syscall.EAGAIN
}

// Write is net.Conn's Write: all of p, waiting (in the netpoller,
// honouring the write deadline) while the send buffer is full.
func (s *Socket) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wp, s.wn, s.werrno = p, 0, 0
	err := s.rc.Write(s.writeFn)
	n, errno := s.wn, s.werrno
	s.wp = nil
	if err != nil {
		return n, s.opError("write", err)
	}
	if errno != 0 {
		return n, s.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

func (s *Socket) write(fd uintptr) bool {
	for s.wn < len(s.wp) {
		k, e := rawWrite(fd, s.wp[s.wn:])
		switch e {
		case 0:
			s.wn += k
		case syscall.EAGAIN:
			return false
		default:
			s.werrno = e
			return true
		}
	}
	return true
}

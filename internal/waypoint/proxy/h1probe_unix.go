//go:build unix

package proxy

import (
	"errors"
	"net"
	"syscall"
)

// connAlive says whether an idle upstream connection can carry a request:
// a peek that does not wait finds neither the server's close nor bytes
// nobody asked for. Connections that are not sockets (an HBONE stream)
// are trusted; TLS is looked through to its socket, where a close_notify
// is such bytes.
func connAlive(c net.Conn) bool {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = errors.Is(err, syscall.EAGAIN)
		return true // never wait
	})
	return err == nil && alive
}

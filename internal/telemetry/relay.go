package telemetry

import (
	"io"
	"net"
)

// Relay copies both ways between a and b, half-closing each side when the
// other ends, and returns once both directions are done. Wrap one side
// with CountConn to account the bytes; between two plain TCP sockets the
// copies still splice.
func Relay(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(b, a)
		CloseWrite(b)
		close(done)
	}()
	_, _ = io.Copy(a, b)
	CloseWrite(a)
	<-done
}

// CloseWrite half-closes c when it can (TCP, TLS, counted connections),
// else closes it.
func CloseWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

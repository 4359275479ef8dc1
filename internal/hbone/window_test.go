package hbone_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/hbone"
)

// TestClosedStreamsGiveBackConnWindow: bytes a stream had buffered but
// nobody read when it was closed return to the connection's receive
// window. Otherwise every such stream shrinks the window of a pooled
// connection for good, and once it is spent every stream on it stalls.
// The connection window is the minimum (64 KiB); each closed stream leaves
// up to 32 KiB unread, so without the return the last stream would stall.
func TestClosedStreamsGiveBackConnWindow(t *testing.T) {
	e := newEnv(t, envOpts{dialer: func(c *hbone.DialerConfig) {
		c.ConnWindow, c.StreamWindow = 65535, 65535
	}})
	const size = 32 << 10
	up := tcpServer(t, func(c net.Conn) {
		if _, err := c.Write(make([]byte, size)); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	})
	// read reads n bytes of a stream, or fails the test when they do not
	// come (a stalled connection window).
	read := func(c net.Conn, n int) {
		t.Helper()
		got := make(chan error, 1)
		go func() {
			_, err := io.ReadFull(c, make([]byte, n))
			got <- err
		}()
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			_ = c.Close()
			t.Fatalf("a stream stalled: closed streams' unread bytes were not returned to the connection window (conns %v)", e.dialer.Conns())
		}
	}
	for range 6 {
		c := e.dial(up)
		read(c, 1)
		_ = c.Close()
	}
	c := e.dial(up)
	defer c.Close()
	read(c, size)
}

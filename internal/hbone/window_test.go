package hbone_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
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

// A connection window below HTTP/2's initial 65535 cannot be had (SETTINGS
// does not lower it): the configuration is refused rather than a peer
// sending within the initial window being treated as a violator.
func TestConnWindowBelowInitialRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	if _, err := hbone.NewDialer(hbone.DialerConfig{Source: e.src, Bundle: e.bundle, ConnWindow: 1000}); err == nil || !strings.Contains(err.Error(), "ConnWindow") {
		t.Errorf("NewDialer with ConnWindow 1000: %v; want an error naming ConnWindow", err)
	}
	if _, err := hbone.NewServer(hbone.ServerConfig{Source: e.src, Bundle: e.bundle, Identity: identity.FixedIdentity(serverID), ConnWindow: 1000,
		Handler: hbone.HandlerFunc(func(context.Context, *hbone.Request) (io.ReadWriteCloser, error) { return nil, nil })}); err == nil || !strings.Contains(err.Error(), "ConnWindow") {
		t.Errorf("NewServer with ConnWindow 1000: %v; want an error naming ConnWindow", err)
	}
}

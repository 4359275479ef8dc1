package hbone_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

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

// TestPaddingReturnsToStreamWindow: padding counts against flow control
// (RFC 9113 §6.1) and nobody reads it: a server that pads its DATA gets
// the stream window back for the padding too, not only for the data, or
// the stream stalls once the padding adds up to a window.
func TestPaddingReturnsToStreamWindow(t *testing.T) {
	e := newEnv(t, envOpts{dialer: func(c *hbone.DialerConfig) { c.StreamWindow, c.ConnWindow = 65535, 1<<20 }})
	const frames = 1000 // 1 byte of data, 256 of flow-controlled padding each: 4 stream windows
	addr := tlsServer(t, e, func(tc *tls.Conn) {
		s := newRawServer(t, tc)
		if s == nil {
			return
		}
		h, err := nextFrame[*http2.MetaHeadersFrame](s)
		if err != nil || s.status(h.StreamID, "200", false) != nil {
			return
		}
		// Send only within the stream window the client gives back.
		var mu sync.Mutex
		cond := sync.NewCond(&mu)
		window, dead := int64(65535), false
		go func() {
			for {
				f, err := s.fr.ReadFrame()
				mu.Lock()
				if err != nil {
					dead = true
				} else if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == h.StreamID {
					window += int64(wu.Increment)
				}
				cond.Broadcast()
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		pad := make([]byte, 255)
		for range frames {
			mu.Lock()
			for window < 257 && !dead {
				cond.Wait()
			}
			stop := dead
			window -= 257
			mu.Unlock()
			if stop || s.fr.WriteDataPadded(h.StreamID, false, []byte{'x'}, pad) != nil {
				return
			}
		}
		_ = s.fr.WriteData(h.StreamID, true, nil)
		mu.Lock()
		for !dead {
			cond.Wait()
		}
		mu.Unlock()
	})
	req := e.req("10.0.2.5:8080")
	req.Address = addr
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dialer.Dial(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan error, 1)
	go func() {
		b, err := io.ReadAll(c)
		if err == nil && len(b) != frames {
			err = fmt.Errorf("read %d bytes, want %d", len(b), frames)
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		_ = c.Close()
		t.Fatal("the padded stream stalled: its padding was not returned to the stream window")
	}
}

// TestEndStreamWithNegativeSendWindow: a peer that lowers
// SETTINGS_INITIAL_WINDOW_SIZE after a stream sent data leaves the stream's
// send window negative (RFC 9113 §6.9.2). The upstream's EOF must still end
// the stream with an empty END_STREAM DATA frame (which flow control does
// not count), not take a negative frame size (a slice panic: one peer
// crashing the proxy).
func TestEndStreamWithNegativeSendWindow(t *testing.T) {
	e := newEnv(t, envOpts{})
	closeUp := make(chan struct{})
	upstream := tcpServer(t, func(c net.Conn) {
		_, _ = c.Write([]byte(strings.Repeat("x", 100)))
		<-closeUp
	})
	r := rawDial(t, e)
	r.connect(1, upstream)
	r.wantStatus(1, "200")
	if got, ended := r.readData(1, 100); len(got) != 100 || ended {
		t.Fatalf("read %d bytes (ended %v), want 100 and the stream open", len(got), ended)
	}
	// The stream has 65435 left of 65535: a window of 0 makes it -100.
	if err := r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	// The server applies SETTINGS before it answers the PING after it.
	if err := r.fr.WritePing(false, [8]byte{1}); err != nil {
		t.Fatal(err)
	}
	for acked := false; !acked; {
		_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for the PING ack: %v", err)
		}
		p, ok := f.(*http2.PingFrame)
		acked = ok && p.IsAck()
	}
	close(closeUp)
	f := r.mustNext()
	d, ok := f.(*http2.DataFrame)
	if !ok || d.StreamID != 1 || !d.StreamEnded() || len(d.Data()) != 0 {
		t.Fatalf("got %v, want an empty DATA with END_STREAM on stream 1", describe(f))
	}
}

// halfWriter is an upstream that takes part of a write and then fails (a
// workload resetting mid-transfer): its bytes taken came from the
// connection window like any others.
type halfWriter struct {
	budget int
	closed chan struct{}
	once   sync.Once
}

func (w *halfWriter) Write(p []byte) (int, error) {
	n := min(len(p), w.budget)
	w.budget -= n
	if n < len(p) {
		return n, io.ErrClosedPipe
	}
	return n, nil
}

func (w *halfWriter) Read([]byte) (int, error) { <-w.closed; return 0, io.EOF }

func (w *halfWriter) Close() error { w.once.Do(func() { close(w.closed) }); return nil }

// TestFailedUpstreamWriteGivesBackConnWindow: when the write to a stream's
// upstream fails part way, the bytes it did take return to the
// connection's receive window too, not only those it did not: else each
// such stream shrinks a pooled connection's window for good, and once it
// is spent every stream on the connection stalls.
func TestFailedUpstreamWriteGivesBackConnWindow(t *testing.T) {
	const taken = 8 << 10 // each failing upstream takes this much, then fails
	got := make(chan int, 1)
	e := newEnv(t, envOpts{
		server: func(c *hbone.ServerConfig) { c.ConnWindow, c.StreamWindow = 65535, 65535 },
		handler: func(_ context.Context, r *hbone.Request) (io.ReadWriteCloser, error) {
			if r.Authority.Port() == 1 {
				return &halfWriter{budget: taken, closed: make(chan struct{})}, nil
			}
			a, b := net.Pipe()
			go func() {
				n, _ := io.Copy(io.Discard, b)
				got <- int(n)
				_ = b.Close()
			}()
			return a, nil
		},
	})
	// write fails the test when p cannot be sent: the window is spent.
	write := func(c net.Conn, p []byte) {
		t.Helper()
		done := make(chan error, 1)
		go func() { _, err := c.Write(p); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			_ = c.Close()
			t.Fatalf("a stream stalled: bytes taken by failed upstream writes were not returned to the connection window (conns %v)", e.dialer.Conns())
		}
	}
	for range 65535/taken + 1 {
		c := e.dial("10.0.0.1:1")
		write(c, make([]byte, 32<<10))
		// The stream ends once its upstream failed.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("failing upstream's stream: %v", err)
		}
		_ = c.Close()
	}
	c := e.dial("10.0.0.1:2")
	defer c.Close()
	const size = 65535
	write(c, make([]byte, size))
	if err := c.(*hbone.Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != size {
			t.Fatalf("upstream got %d bytes, want %d", n, size)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the stream stalled: bytes taken by failed upstream writes were not returned to the connection window (conns %v)", e.dialer.Conns())
	}
}

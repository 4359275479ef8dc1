package hbone_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/hbone"
)

// TestDialBodyIsSentByTheStream: with DialRequest.Body the stream reads a
// socket itself; its EOF half-closes upstream, Sent then fires, and Write is
// refused because nothing else may feed the stream.
func TestDialBodyIsSentByTheStream(t *testing.T) {
	e := newEnv(t, envOpts{})
	upstream := tcpServer(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "got %d", n)
	})
	src, feed := net.Pipe()
	req := e.req(upstream)
	req.Body = src
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := e.dialer.Dial(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*hbone.Conn)
	defer c.Close()
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("Write on a Body stream succeeded")
	}
	go func() {
		_, _ = feed.Write(make([]byte, 70000))
		_ = feed.Close()
	}()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 70000" {
		t.Fatalf("upstream answered %q, %v; want \"got 70000\"", got, err)
	}
	select {
	case <-c.Sent():
	case <-time.After(10 * time.Second):
		t.Fatal("Sent not closed after the Body's EOF")
	}
}

// TestDialBodyCloseStopsBlockedRead: closing the Conn must not leave the
// stream's goroutine blocked on a source that never sends (goleak checks
// the rest), and it must not close the caller's source.
func TestDialBodyCloseStopsBlockedRead(t *testing.T) {
	e := newEnv(t, envOpts{})
	echo := echoServer(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	req := e.req(echo)
	req.Body = a
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := e.dialer.Dial(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*hbone.Conn)
	if _, err := b.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hi" {
		t.Fatalf("echo = %q, %v; want \"hi\"", got, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Sent():
	case <-time.After(10 * time.Second):
		t.Fatal("Sent not closed after Close")
	}
	// The source was only given a past read deadline, not closed.
	_ = a.SetReadDeadline(time.Time{})
	go func() { _, _ = b.Write([]byte("z")) }()
	one := make([]byte, 1)
	if _, err := a.Read(one); err != nil || errors.Is(err, net.ErrClosed) {
		t.Fatalf("source read after Close: %v; want it still open", err)
	}
}

package trywrite_test

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/ambitmesh/ambit/internal/trywrite"
)

func TestWriteNeverWaits(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	s := trywrite.For(c)
	if s == nil {
		t.Fatal("For(*net.TCPConn) = nil")
	}
	if n, err := s.TryWrite([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("TryWrite = %d, %v; want 5, nil", n, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "hello" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	// Nobody reads: the buffers fill and Write returns short, then 0,
	// without blocking (the test would hang otherwise).
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	total, zero := 0, false
	for range 1000 {
		n, err := s.TryWrite(chunk)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if n == 0 {
			zero = true
			break
		}
	}
	if !zero {
		t.Fatalf("wrote %d bytes to a peer that never reads without a full buffer", total)
	}
	if trywrite.For(struct{ io.Writer }{c}) != nil {
		t.Fatal("For(a wrapper) != nil")
	}
}

package sockio_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/sockio"
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

	s := sockio.For(c)
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
	if sockio.For(struct{ io.Writer }{c}) != nil {
		t.Fatal("For(a wrapper) != nil")
	}
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	peer, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	return c, peer
}

// TestReadWriteAsNetConn: Read and Write behave as the net.Conn's own:
// a large Write waits for a slow reader and delivers every byte in order,
// Read returns io.EOF after the peer's FIN, deadlines and Close end a
// waiting Read with the net package's errors.
func TestReadWriteAsNetConn(t *testing.T) {
	c, peer := tcpPair(t)
	s := sockio.For(c)
	payload := make([]byte, 8<<20)
	for i := range payload {
		payload[i] = byte(i % 251)
	}
	got := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 1000) // slow: many small reads
		for {
			n, err := peer.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		got <- b.Bytes()
	}()
	if n, err := s.Write(payload); n != len(payload) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(payload))
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if b := <-got; !bytes.Equal(b, payload) {
		t.Fatalf("peer got %d bytes, not the %d written in order", len(b), len(payload))
	}

	go func() {
		_, _ = peer.Write([]byte("answer"))
		_ = peer.Close()
	}()
	all, err := io.ReadAll(s)
	if err != nil || string(all) != "answer" {
		t.Fatalf("ReadAll = %q, %v; want \"answer\" and EOF", all, err)
	}

	c2, _ := tcpPair(t)
	s2 := sockio.For(c2)
	_ = c2.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = s2.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %v; want a timeout net.Error", err)
	}
	_ = c2.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := s2.Read(make([]byte, 10))
		done <- err
	}()
	_ = c2.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed conn = %v; want net.ErrClosed", err)
	}
	var oe *net.OpError
	if _, err := s2.Write([]byte("x")); !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("Write on a closed conn = %v; want a *net.OpError", err)
	}
}

// TestNoAllocations: the proxies read and write through a Socket for
// every chunk they relay; a per-call allocation would be garbage per
// request (and a larger heap between collections).
func TestNoAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	c, peer := tcpPair(t)
	s := sockio.For(c)
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := s.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := s.TryWrite(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf[:32]); err != nil { // 128 written, 32 read: the peer's buffer fills slowly
			t.Fatal(err)
		}
		if _, err := peer.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatal(err)
		}
	})
	// The peer's calls are the net package's (no allocations); ours must
	// add none.
	if allocs != 0 {
		t.Fatalf("%v allocations per Write + TryWrite + Read; want 0", allocs)
	}
}

// TestOnlyNonBlockingStreamSockets: the raw syscalls never wait in the
// kernel only on the net package's stream sockets, which are non-blocking.
// A file (a pipe, a terminal — an hbone.Conn copied to os.Stdout) may be
// blocking: a raw write to a full blocking pipe would hold the thread and
// its P until the reader drains it (and TryWrite, run by an HTTP/2
// connection's reader, would stall every stream of the connection), so For
// must not take it. A datagram socket's empty read is not EOF.
func TestOnlyNonBlockingStreamSockets(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil { // blocking, as a shell's pipe
		t.Fatal(err)
	}
	r, w := os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
	defer r.Close()
	defer w.Close()
	if s := sockio.For(w); s != nil {
		// Show the harm: fill the pipe; TryWrite must return at once.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				if n, err := s.TryWrite(make([]byte, 4096)); n == 0 || err != nil {
					return
				}
			}
		}()
		select {
		case <-done:
			t.Fatal("For(*os.File) != nil")
		case <-time.After(2 * time.Second):
			_ = r.Close() // ends the blocked write (EPIPE)
			<-done
			t.Fatal("For(a blocking pipe) returned a Socket whose TryWrite blocked in the kernel")
		}
	}
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if sockio.For(u) != nil {
		t.Fatal("For(*net.UDPConn) != nil")
	}
	c, _ := tcpPair(t)
	if sockio.For(c) == nil {
		t.Fatal("For(*net.TCPConn) = nil")
	}
	ul, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	uc, err := net.Dial("unix", ul.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if sockio.For(uc) == nil {
		t.Fatal("For(a unix stream socket) = nil")
	}
}

// TestErrorsAsNetConn: errors read as the net.Conn's own (one
// *net.OpError, not net's "raw-read" one inside ours), in logs too.
func TestErrorsAsNetConn(t *testing.T) {
	c, _ := tcpPair(t)
	s := sockio.For(c)
	_ = c.SetReadDeadline(time.Now().Add(-time.Second))
	_, want := c.Read(make([]byte, 1))
	_, got := s.Read(make([]byte, 1))
	if got == nil || want == nil || got.Error() != want.Error() {
		t.Fatalf("Read past the deadline = %v; want %v", got, want)
	}
	_ = c.Close()
	_, want = c.Read(make([]byte, 1))
	_, got = s.Read(make([]byte, 1))
	if got == nil || want == nil || got.Error() != want.Error() {
		t.Fatalf("Read after Close = %v; want %v", got, want)
	}
	_, want = c.Write([]byte("x"))
	_, got = s.Write([]byte("x"))
	if got == nil || want == nil || got.Error() != want.Error() {
		t.Fatalf("Write after Close = %v; want %v", got, want)
	}
}

// lentBuf is a sockio.Buffer that records whether the read holds it.
type lentBuf struct {
	b        []byte
	held     bool
	releases int
	released chan struct{} // told of each release
}

func (l *lentBuf) Bytes() []byte { l.held = true; return l.b }

func (l *lentBuf) Release() {
	l.held = false
	l.releases++
	l.released <- struct{}{}
}

// TestReadIntoReleasesWhileWaiting: ReadInto gives its buffer back when the
// socket has nothing to read (an idle relay holds none) and takes it again
// for the bytes that arrive; with bytes ready it reads without releasing
// (a bulk relay keeps its buffer); EOF as Read.
func TestReadIntoReleasesWhileWaiting(t *testing.T) {
	c, peer := tcpPair(t)
	s := sockio.For(c)
	l := &lentBuf{b: make([]byte, 64), released: make(chan struct{}, 16)}
	if _, err := peer.Write([]byte("ready")); err != nil {
		t.Fatal(err)
	}
	// Wait until the bytes are in c's receive buffer (a peek, no sleep).
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), make([]byte, 1), syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	})
	if n, err := s.ReadInto(l); err != nil || string(l.b[:n]) != "ready" || l.releases != 0 {
		t.Fatalf("ReadInto with bytes ready = %q, %v, %d releases; want \"ready\", nil, 0", l.b[:n], err, l.releases)
	}

	done := make(chan struct{})
	var n int
	go func() {
		defer close(done)
		n, err = s.ReadInto(l)
	}()
	// The read finds nothing and releases the buffer before it waits; the
	// peer writes only then, so the buffer must be taken again.
	select {
	case <-l.released:
	case <-time.After(10 * time.Second):
		t.Fatal("ReadInto on a socket with nothing to read did not release its buffer")
	}
	if _, werr := peer.Write([]byte("later")); werr != nil {
		t.Fatal(werr)
	}
	<-done
	if err != nil || string(l.b[:n]) != "later" || !l.held {
		t.Fatalf("ReadInto after a wait = %q, %v, held %v; want \"later\", nil, held", l.b[:n], err, l.held)
	}

	_ = peer.Close()
	if _, err := s.ReadInto(l); err != io.EOF {
		t.Fatalf("ReadInto after the peer's FIN = %v; want io.EOF", err)
	}
}

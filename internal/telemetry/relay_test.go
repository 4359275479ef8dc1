package telemetry

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestRelayIdleClosesBothSides: a relay on which nothing moves (a client
// that vanished, an upstream that never closes) is closed on both sides
// after the idle timeout, and says so.
func TestRelayIdleClosesBothSides(t *testing.T) {
	client, in := tcpPair(t)
	out, server := tcpPair(t)
	m := Open(Labels{Reporter: "idle-test"}, Endpoints{})
	idled := make(chan bool, 1)
	go func() { idled <- RelayIdle(CountConn(in, m, ReadsAreRequest), out, 50*time.Millisecond) }()
	for _, c := range []net.Conn{client, server} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("%s side: read %d, %v; want EOF (the relay closed it)", c.LocalAddr(), n, err)
		}
	}
	select {
	case ok := <-idled:
		if !ok {
			t.Fatal("RelayIdle returned false; want true (closed for idleness)")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RelayIdle did not return")
	}
}

// TestRelayIdleKeepsActiveRelay: bytes flowing one way keep the whole
// relay open past the timeout (idleness is of both directions), and a
// clean end is not reported as idle.
func TestRelayIdleKeepsActiveRelay(t *testing.T) {
	client, in := tcpPair(t)
	out, server := tcpPair(t)
	const idle = 200 * time.Millisecond
	idled := make(chan bool, 1)
	go func() { idled <- RelayIdle(in, out, idle) }()
	// Only the client speaks, for five idle timeouts; the server reads.
	end := time.Now().Add(5 * idle)
	got := make(chan int, 1)
	go func() { n, _ := io.Copy(io.Discard, server); got <- int(n) }()
	sent := 0
	for time.Now().Before(end) {
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatalf("write after %d bytes: %v (the relay closed an active connection)", sent, err)
		}
		sent++
		select {
		case <-idled:
			t.Fatalf("relay ended after %d bytes while bytes were flowing", sent)
		case <-time.After(idle / 10):
		}
	}
	_ = client.CloseWrite()
	if n := <-got; n != sent {
		t.Errorf("server got %d bytes, want %d", n, sent)
	}
	_ = server.Close()
	if <-idled {
		t.Error("RelayIdle returned true for a relay that ended cleanly")
	}
}

// TestWatchIdle: the watch fires once the counters stop moving for the
// timeout, not while they move, and not after stop.
func TestWatchIdle(t *testing.T) {
	m := Open(Labels{Reporter: "watch-test"}, Endpoints{})
	const idle = 100 * time.Millisecond
	fired := make(chan time.Time, 1)
	stop := m.WatchIdle(idle, func() { fired <- time.Now() })
	defer stop()
	var last time.Time
	for end := time.Now().Add(4 * idle); time.Now().Before(end); {
		m.AddRequest(1)
		last = time.Now()
		select {
		case <-fired:
			t.Fatal("fired while bytes were accounted")
		case <-time.After(idle / 10):
		}
	}
	select {
	case at := <-fired:
		if at.Sub(last) < idle {
			t.Errorf("fired %v after the last byte, want at least %v", at.Sub(last), idle)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not fire after the counters stopped")
	}

	stopped := make(chan struct{}, 1)
	stop2 := m.WatchIdle(idle, func() { stopped <- struct{}{} })
	stop2()
	// A third watch that does fire bounds the wait for the stopped one.
	done := make(chan struct{})
	stop3 := m.WatchIdle(2*idle, func() { close(done) })
	defer stop3()
	<-done
	select {
	case <-stopped:
		t.Error("a stopped watch fired")
	default:
	}
}

package hbone_test

import (
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestResetGivesBackReservedSendWindow: connection send window a stream
// took for DATA frames it then never sent — the peer reset it while the
// frames waited for the connection's write lock — returns to the
// connection. Otherwise each stream reset mid-transfer shrinks a pooled
// connection's send window for good (by up to a bulk read, 256 KiB), and
// once it is spent every stream on the connection stalls.
//
// Stream 1 is answered first, its upstream holding back. Then the peer,
// reading nothing, opens stream 3, whose writer blocks in the socket write
// holding the lock (the socket buffers, a few MiB with the peer's receive
// buffer fixed, fill before the 16 MiB window is spent); stream 1's
// upstream starts, its writer takes its windows and waits for the lock;
// the peer resets stream 1, then reads: every byte of the connection
// window it granted must arrive.
func TestResetGivesBackReservedSendWindow(t *testing.T) {
	e := newEnv(t, envOpts{})
	blast := func(c net.Conn) {
		buf := make([]byte, 256<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
	up3 := tcpServer(t, blast)
	up1closed := make(chan struct{})
	start1 := make(chan struct{})
	up1 := tcpServer(t, func(c net.Conn) {
		go func() {
			_, _ = c.Read(make([]byte, 1)) // ends when the proxy drops the reset stream's upstream
			close(up1closed)
		}()
		<-start1
		blast(c)
	})
	const window = 16 << 20
	r := rawDial(t, e, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	// A fixed receive buffer: with the kernel's autotuning (tcp_rmem goes
	// to 32 MiB on these machines) the sockets could take the whole 16 MiB
	// window, and stream 3's writer would wait for window, not hold the lock.
	if err := r.c.NetConn().(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteWindowUpdate(0, window); err != nil {
		t.Fatal(err)
	}
	const granted = window + 65535
	// Stream 1's 200 first: once stream 3's writer holds the lock, it could
	// not leave, and stream 1's relay would never start.
	r.connect(1, up1)
	r.wantStatus(1, "200")
	r.connect(3, up3)
	// Stream 3 alone could spend the connection window.
	if err := r.fr.WriteWindowUpdate(3, 1<<20); err != nil {
		t.Fatal(err)
	}
	// The goroutines' stacks show where the writers are: first stream 3's
	// blocked in the socket write inside its batch (holding the lock), then,
	// once stream 1's upstream sends, stream 1's waiting for the lock with
	// its windows reserved.
	waitFor(t, "stream 3's writer blocked in the socket write, holding the lock", "[IO wait", "(*h2Conn).writeFrames")
	close(start1)
	waitFor(t, "stream 1's writer waiting for the write lock with window reserved", "(*h2Conn).lockWrite", "(*h2Conn).writeFrames")
	if err := r.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up1closed: // the server processed the reset
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not drop stream 1's upstream after its reset")
	}
	got := 0
	_ = r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for got < granted {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("%d of the %d bytes granted on the connection arrived, then %v: the reset stream's reserved window was not given back", got, granted, err)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			got += len(f.Data())
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
		}
	}
}

// waitFor waits until a goroutine's stack contains every one of marks.
func waitFor(t *testing.T, what string, marks ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		all := string(buf[:runtime.Stack(buf, true)])
	goroutines:
		for _, g := range strings.Split(all, "\n\n") {
			for _, m := range marks {
				if !strings.Contains(g, m) {
					continue goroutines
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		runtime.Gosched()
	}
}

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
// The peer reads nothing at first, so stream 1's writer blocks in the
// socket write holding the lock (the socket buffers, some MiB, fill before
// the 16 MiB window is spent); stream 3 takes its windows and waits for
// the lock; the peer resets stream 3, then reads: every byte of the
// connection window it granted must arrive.
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
	up1 := tcpServer(t, blast)
	up3closed := make(chan struct{})
	up3 := tcpServer(t, func(c net.Conn) {
		go func() {
			_, _ = c.Read(make([]byte, 1)) // ends when the proxy drops the reset stream's upstream
			close(up3closed)
		}()
		blast(c)
	})
	const window = 16 << 20
	r := rawDial(t, e, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	if err := r.fr.WriteWindowUpdate(0, window); err != nil {
		t.Fatal(err)
	}
	const granted = window + 65535
	r.connect(1, up1)
	// Stream 1 alone could spend the connection window.
	if err := r.fr.WriteWindowUpdate(1, 1<<20); err != nil {
		t.Fatal(err)
	}
	r.connect(3, up3)
	// Wait until stream 3's writer holds reserved window and waits for the
	// write lock (the goroutine's stack shows where it is).
	deadline := time.Now().Add(10 * time.Second)
	for !waitingWithReservation() {
		if time.Now().After(deadline) {
			t.Fatal("no stream writer came to wait for the write lock with window reserved")
		}
		runtime.Gosched()
	}
	if err := r.fr.WriteRSTStream(3, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up3closed: // the server processed the reset
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not drop stream 3's upstream after its reset")
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

// waitingWithReservation reports whether a goroutine is in writeFrames
// waiting for the connection's write lock (after reserving its windows).
func waitingWithReservation() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "(*h2Conn).lockWrite") && strings.Contains(g, "(*h2Conn).writeFrames") {
			return true
		}
	}
	return false
}

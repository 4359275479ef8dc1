package hbone_test

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestIdleStreamsHoldNoRelayBuffers: streams that each moved a bulk
// transfer in both directions and then idle (a keep-alive connection after
// a download) give their relay buffers back. A relay's read buffer grows
// to 256 KiB after full reads (client side: the app socket; server side:
// the upstream), and was held until the stream ended: 512 KiB per idle
// stream, 100 streams = 50 MiB. Held memory is the live heap after GC
// (sync.Pool contents do not survive two collections) against the heap
// before the streams were opened.
func TestIdleStreamsHoldNoRelayBuffers(t *testing.T) {
	const (
		streams  = 100
		bulkSize = 1 << 20
	)
	upstream := tcpServer(t, func(c net.Conn) {
		if _, err := io.CopyN(io.Discard, c, bulkSize); err != nil {
			return
		}
		if _, err := c.Write(make([]byte, bulkSize)); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c) // idle until the test ends
	})
	e := newEnv(t, envOpts{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	// One stream first, so that the HBONE connection and its pools exist
	// before the baseline.
	open := func() {
		app, body := socketPair(t, l)
		t.Cleanup(func() { _ = app.Close(); _ = body.Close() })
		req := e.req(upstream)
		req.Body = body
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		conn, err := e.dialer.Dial(ctx, req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		if _, err := app.Write(make([]byte, bulkSize)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := io.CopyN(io.Discard, conn, bulkSize); err != nil {
			t.Fatalf("reading the upstream's bulk answer: %v", err)
		}
	}
	open()
	before := liveHeap()
	for range streams - 1 {
		open()
	}
	after := liveHeap()
	perStream := (int64(after) - int64(before)) / (streams - 1)
	t.Logf("live heap %.1f MiB before, %.1f MiB with %d more idle streams after a %d KiB transfer each way: %d KiB per stream",
		float64(before)/(1<<20), float64(after)/(1<<20), streams-1, bulkSize>>10, perStream>>10)
	// An idle stream's own state (stream, pooled-connection slot, sockets,
	// goroutine bookkeeping) is some KiB; one held relay buffer is 64 or
	// 256 KiB.
	if perStream > 48<<10 {
		t.Errorf("each idle stream holds %d KiB of heap after a bulk transfer, want < 48 KiB: relay buffers are held while idle", perStream>>10)
	}
}

// liveHeap is HeapInuse after the pools emptied (two collections).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

package hbone_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/telemetry"
)

// TestDirectWritesPartialCounted: a workload socket with small buffers that
// takes only part of a DATA frame when the connection's reader writes it
// directly: the rest goes through the stream's writer, in order, and the
// counted connection (istio_tcp_*_bytes_total) counts every byte once.
func TestDirectWritesPartialCounted(t *testing.T) {
	const size = 4 << 20 // a multiple of piece
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7 / 3)
	}
	workload := tcpServer(t, func(c net.Conn) {
		buf := make([]byte, 1500)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = c.(*net.TCPConn).CloseWrite()
				return
			}
		}
	})
	metrics := make(chan *telemetry.ConnMetrics, 1)
	e := newEnv(t, envOpts{handler: func(ctx context.Context, r *hbone.Request) (io.ReadWriteCloser, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", workload)
		if err != nil {
			return nil, err
		}
		// A small send buffer: the reader's direct writes of 16 KiB
		// frames are often taken only in part.
		_ = c.(*net.TCPConn).SetWriteBuffer(4096)
		m := telemetry.Open(telemetry.Labels{Reporter: "destination"}, telemetry.Endpoints{})
		metrics <- m
		return telemetry.CountConn(c, m, telemetry.ReadsAreResponse), nil
	}})
	c := e.dial("10.0.0.1:80")
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	// One piece at a time, its echo awaited: the stream's writer is idle
	// when each arrives, so the connection's reader writes it directly.
	const piece = 64 << 10
	got := make([]byte, piece)
	for off := 0; off < size; off += piece {
		if _, err := c.Write(payload[off : off+piece]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("read the echo at %d: %v", off, err)
		}
		if !bytes.Equal(got, payload[off:off+piece]) {
			t.Fatalf("echo of the bytes at %d differs: bytes reordered or lost", off)
		}
	}
	if err := c.(*hbone.Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after the half-close: %d more bytes, %v; want EOF", len(rest), err)
	}
	m := <-metrics
	if req, resp := m.Bytes(); req != size || resp != size {
		t.Errorf("counted %d bytes to the workload and %d back, want %d each", req, resp, size)
	}
}

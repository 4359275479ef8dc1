package hbone_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkBulk moves one bulk stream the way the node proxies do: an app
// socket read by the client (DialRequest.Body), HTTP/2 over mutual TLS on
// loopback, the server writing to an upstream socket that discards. Each
// op is one stream of bulkSize bytes; compare CPU (-cpuprofile, the
// process's rusage) and -benchmem between builds rather than MB/s on a
// busy machine.
func BenchmarkBulk(b *testing.B) {
	const bulkSize = 64 << 20
	got := make(chan int64, 1)
	sink := tcpServer(b, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		got <- n
	})
	e := newEnv(b, envOpts{})
	// The app's socket pair: the sender writes to one end, the client
	// tunnel reads the other.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	chunk := make([]byte, 64<<10)
	b.SetBytes(bulkSize)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		app, body := socketPair(b, l)
		req := e.req(sink)
		req.Body = body
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		conn, err := e.dialer.Dial(ctx, req)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for sent := 0; sent < bulkSize; sent += len(chunk) {
				if _, err := app.Write(chunk); err != nil {
					return
				}
			}
			_ = app.Close()
		}()
		if n := <-got; n != bulkSize {
			b.Fatalf("sink got %d bytes, want %d", n, bulkSize)
		}
		_ = conn.Close()
		_ = body.Close()
	}
}

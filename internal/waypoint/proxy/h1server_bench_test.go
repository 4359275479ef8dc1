package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// BenchmarkHTTP1KeepAlive measures one keep-alive HTTP/1.1 GET through a
// plain HTTP listener with a 1 KiB answer (bench/gateway's request), the
// client and the backend speaking raw bytes from one buffer each, so the
// allocations per op are the gateway's own.
//
//	go test ./internal/waypoint/proxy -run '^$' -bench HTTP1KeepAlive -benchmem
func BenchmarkHTTP1KeepAlive(b *testing.B) {
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024))
	up := startRawBackend(b, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := c.Write(answer); err != nil {
				return
			}
		}
	})
	g := serveEngine(b, Config{}, nil, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("up", 1))}}, "*")},
		[]*gatewayv1.Backend{backend("up", up)}, nil, func(ctx context.Context, e *Engine, ln net.Listener) error {
			return e.Serve(ctx, ln, 80, time.Second)
		})
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /bench?size=1024 HTTP/1.1\r\nHost: bench.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReaderSize(c, 16<<10)
	body := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		status, err := br.ReadSlice('\n')
		if err != nil || !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
			b.Fatalf("status line %q, %v", status, err)
		}
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) <= 2 {
				break
			}
		}
		if _, err := io.ReadFull(br, body); err != nil {
			b.Fatal(err)
		}
	}
}

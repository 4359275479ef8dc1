package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// scriptConn is a connection whose input is a script and whose output is
// dropped: the conn loop fuzzed alone, without sockets.
type scriptConn struct{ in *bytes.Reader }

func (c scriptConn) Read(p []byte) (int, error)     { return c.in.Read(p) }
func (scriptConn) Write(p []byte) (int, error)      { return len(p), nil }
func (scriptConn) Close() error                     { return nil }
func (scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{Port: 80} }
func (scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{Port: 1234} }
func (scriptConn) SetDeadline(time.Time) error      { return nil }
func (scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (scriptConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzServeH1 runs the downstream HTTP/1.1 loop over arbitrary client
// bytes, with a handler that reads each body whole (chunk sizes, chunk
// extensions, trailers, pipelining): nothing may crash or hang.
//
//	go test ./internal/waypoint/proxy -run '^$' -fuzz FuzzServeH1 -fuzztime 30s
func FuzzServeH1(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	e, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(e.Close)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-N", r.Method)
		if n%2 == 1 {
			w.(http.Flusher).Flush() // chunked from here
		}
		_, _ = io.WriteString(w, r.URL.Path)
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.serveH1(context.Background(), scriptConn{bytes.NewReader(in)}, 80, h, nil, nil)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the loop did not end at the end of its input %q", in)
		}
	})
}

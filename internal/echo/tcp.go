package echo

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// tcpEcho sends every byte back as received. When the client half-closes,
// the rest is flushed and the server half-closes too, so a client can send a
// payload, CloseWrite, and read exactly that payload back to EOF.
type tcpEcho struct {
	ln  net.Listener
	log *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newTCPEcho(ln net.Listener, log *slog.Logger) *tcpEcho {
	return &tcpEcho{ln: ln, log: log, conns: make(map[net.Conn]struct{})}
}

func (t *tcpEcho) serve() error {
	defer t.wg.Wait()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			t.mu.Lock()
			closed := t.closed
			t.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("echo: accept tcp on %s: %w", t.ln.Addr(), err)
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			_ = c.Close()
			return nil
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.handle(c)
	}
}

func (t *tcpEcho) handle(c net.Conn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		_ = c.Close()
	}()
	// TCPConn to TCPConn: io.Copy uses splice on Linux, no user-space copy.
	n, err := io.Copy(c, c)
	if err != nil {
		t.log.Debug("echo: tcp connection failed", "remote", c.RemoteAddr(), "bytes", n, "error", err)
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	t.log.Debug("echo: tcp connection done", "remote", c.RemoteAddr(), "bytes", n)
}

// close stops accepting and cuts every open connection; serve returns once
// their goroutines are gone.
func (t *tcpEcho) close() {
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	_ = t.ln.Close()
}

package telemetry

import (
	"errors"
	"io"
	"math"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// DefaultTCPIdleTimeout is Envoy's TCP proxy idle_timeout default: a
// relayed connection on which no byte moved either way for that long is
// closed.
const DefaultTCPIdleTimeout = time.Hour

// idleChecks is how many times per idle timeout activity is checked: a
// connection is closed between timeout and timeout*(1+1/idleChecks)
// after its last byte.
const idleChecks = 4

// Relay copies both ways between a and b, half-closing each side when the
// other ends, and returns once both directions are done. Wrap one side
// with CountConn to account the bytes; between two plain TCP sockets the
// copies still splice.
func Relay(a, b net.Conn) { RelayIdle(a, b, 0) }

// RelayIdle is Relay that also closes both sides once no byte has moved
// either way for idle (0: never), and then reports true. Each direction
// reads under a deadline refreshed every idle/idleChecks, not per read,
// so splicing and the per-read cost are unchanged; a peer that vanished
// without a FIN no longer holds the goroutines and sockets forever.
func RelayIdle(a, b net.Conn, idle time.Duration) (idled bool) {
	var w *idleWatch
	if idle > 0 {
		w = &idleWatch{timeout: idle, start: time.Now(), a: a, b: b}
	}
	done := make(chan struct{})
	go func() {
		w.copy(b, a)
		CloseWrite(b)
		close(done)
	}()
	w.copy(a, b)
	CloseWrite(a)
	<-done
	return w != nil && w.idled.Load()
}

// idleWatch is the activity of the two directions of one relay.
type idleWatch struct {
	timeout time.Duration
	start   time.Time
	// last is when a copy last returned bytes, as time since start: a
	// copy moving bytes returns at least at every deadline.
	last  atomic.Int64
	idled atomic.Bool
	a, b  net.Conn
}

// copy copies src to dst until src ends or fails; nil w: plain io.Copy.
func (w *idleWatch) copy(dst, src net.Conn) {
	if w == nil {
		_, _ = io.Copy(dst, src)
		return
	}
	tick := max(w.timeout/idleChecks, time.Millisecond)
	for {
		_ = src.SetReadDeadline(time.Now().Add(tick))
		n, err := io.Copy(dst, src)
		now := int64(time.Since(w.start))
		if n > 0 {
			w.touch(now)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if time.Duration(now-w.last.Load()) >= w.timeout {
			w.idled.Store(true)
			_ = w.a.Close()
			_ = w.b.Close()
			return
		}
	}
}

// touch records activity at now unless the other direction recorded a
// later one.
func (w *idleWatch) touch(now int64) {
	for {
		old := w.last.Load()
		if old >= now || w.last.CompareAndSwap(old, now) {
			return
		}
	}
}

// WatchIdle calls onIdle (once, from a timer) when no byte has been
// accounted either way for timeout, checking every timeout/idleChecks: the
// byte counters are the activity, so the copies pay nothing more. Use it
// where the relay is not RelayIdle's (streams another server copies); the
// counts must be per read (not spliced in chunks). stop ends the watch.
func (m *ConnMetrics) WatchIdle(timeout time.Duration, onIdle func()) (stop func()) {
	tick := max(timeout/idleChecks, time.Millisecond)
	var stopped atomic.Bool
	req, resp := m.Bytes()
	seen, since := req+resp, time.Now()
	// Armed only once t is set: the callback re-arms t.
	var t *time.Timer
	t = time.AfterFunc(math.MaxInt64, func() {
		if stopped.Load() {
			return
		}
		req, resp := m.Bytes()
		switch now := time.Now(); {
		case req+resp != seen:
			seen, since = req+resp, now
		case now.Sub(since) >= timeout:
			onIdle()
			return
		}
		t.Reset(tick)
	})
	t.Reset(tick)
	return func() {
		stopped.Store(true)
		t.Stop()
	}
}

// CloseWrite half-closes c when it can (TCP, TLS, counted connections),
// else closes it.
func CloseWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

package echo

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// maxRetryIDs bounds the attempts remembered for /retry/: past it the
// table starts over, so a client inventing ids cannot grow the server.
const maxRetryIDs = 10000

// retries is the conformance echo server's flaky backend, which the
// HTTPRoute retry conformance test drives: /retry/...?uuid=ID&succeedAfter=N
// fails the first N requests carrying ID, then echoes. A failure is a
// connection reset (TCP RST), or the status ?responseCode=NNN;
// ?delayRetry=D waits before failing.
type retries struct {
	mu       sync.Mutex
	attempts map[string]int
}

// fail reports whether this request of id is one of the first n, counting it.
func (rs *retries) fail(id string, n int) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.attempts == nil || len(rs.attempts) >= maxRetryIDs {
		rs.attempts = map[string]int{}
	}
	if rs.attempts[id] >= n {
		return false
	}
	rs.attempts[id]++
	return true
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id := q.Get("uuid")
	n, err := strconv.Atoi(q.Get("succeedAfter"))
	if id == "" || err != nil || n < 0 {
		s.fail(w, http.StatusBadRequest, errors.New("/retry/ wants ?uuid=ID&succeedAfter=N: N failures for ID, then the echo"))
		return
	}
	code := 0
	if v := q.Get("responseCode"); v != "" {
		if code, err = strconv.Atoi(v); err != nil || code < 200 || code > 599 {
			s.fail(w, http.StatusBadRequest, fmt.Errorf("query responseCode=%q: want a status code from 200 to 599", v))
			return
		}
	}
	var delay time.Duration
	if v := q.Get("delayRetry"); v != "" {
		if delay, err = time.ParseDuration(v); err != nil || delay < 0 || delay > s.opts.MaxDelay {
			s.fail(w, http.StatusBadRequest, fmt.Errorf("query delayRetry=%q: want a Go duration from 0s to %s", v, s.opts.MaxDelay))
			return
		}
	}
	if !s.retries.fail(id, n) {
		s.echo(w, r)
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	if code != 0 {
		w.WriteHeader(code)
		return
	}
	// Reset the connection: the client sees no response at all.
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.fail(w, http.StatusInternalServerError, fmt.Errorf("cannot reset the connection (%w); use ?responseCode=", err))
		return
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

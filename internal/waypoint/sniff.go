package waypoint

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// SniffTimeout is how long a stream to a workload may stay silent before
// it is taken as TCP (a server-first protocol: the client waits for the
// server to speak).
const SniffTimeout = time.Second

// maxMethodLen bounds the HTTP/1 method token sniffing waits for.
const maxMethodLen = 16

// classifyHTTP decides from a stream's first bytes whether it is HTTP: an
// HTTP/1 request line starts with an upper-case method token and a space,
// and HTTP/2's preface with "PRI *". done is false while the bytes could
// still be either.
func classifyHTTP(b []byte) (isHTTP, done bool) {
	for i, c := range b {
		switch {
		case c == ' ':
			return i > 0, true
		case c < 'A' || c > 'Z' || i >= maxMethodLen:
			return false, true
		}
	}
	return false, false
}

// sniffConn is the upstream the HBONE server gets for a stream whose
// protocol is not declared (traffic addressed to a workload): the
// client's first bytes decide whether it is HTTP, then served by the
// engine (L7 policy, access log, metrics), or anything else, then
// relayed to the destination as TCP. Writes are the client's bytes; the
// HBONE server writes from one goroutine and reads from another.
type sniffConn struct {
	// choose connects the chosen side; it runs once.
	choose func(isHTTP bool) (io.ReadWriteCloser, error)

	mu     sync.Mutex
	buf    []byte
	frozen bool // buf was handed to the chosen side; writes go there
	timer  *time.Timer

	once    sync.Once
	decided chan struct{}
	up      io.ReadWriteCloser
	err     error
}

func newSniffConn(choose func(isHTTP bool) (io.ReadWriteCloser, error)) *sniffConn {
	s := &sniffConn{choose: choose, decided: make(chan struct{})}
	s.mu.Lock()
	s.timer = time.AfterFunc(SniffTimeout, func() { s.decide(false) })
	s.mu.Unlock()
	return s
}

func (s *sniffConn) stopTimer() {
	s.mu.Lock()
	s.timer.Stop()
	s.mu.Unlock()
}

// decide connects the chosen side and hands it the bytes so far.
func (s *sniffConn) decide(isHTTP bool) {
	s.once.Do(func() {
		s.mu.Lock()
		s.timer.Stop()
		s.frozen = true
		buf := s.buf
		s.buf = nil
		s.mu.Unlock()
		s.up, s.err = s.choose(isHTTP)
		if s.err == nil && len(buf) > 0 {
			_, s.err = s.up.Write(buf)
		}
		close(s.decided)
	})
}

func (s *sniffConn) Write(p []byte) (int, error) {
	s.mu.Lock()
	if !s.frozen {
		s.buf = append(s.buf, p...)
		isHTTP, done := classifyHTTP(s.buf)
		s.mu.Unlock()
		if done {
			s.decide(isHTTP)
			<-s.decided
			return len(p), s.err
		}
		return len(p), nil
	}
	s.mu.Unlock()
	<-s.decided
	if s.err != nil {
		return 0, s.err
	}
	return s.up.Write(p)
}

func (s *sniffConn) Read(p []byte) (int, error) {
	<-s.decided
	if s.err != nil {
		return 0, s.err
	}
	return s.up.Read(p)
}

// CloseWrite is the client's end of stream: a stream that ends before it
// is classified is TCP.
func (s *sniffConn) CloseWrite() error {
	s.decide(false)
	<-s.decided
	if s.err != nil {
		return s.err
	}
	if cw, ok := s.up.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return s.up.Close()
}

func (s *sniffConn) Close() error {
	s.once.Do(func() {
		s.stopTimer()
		s.err = net.ErrClosed
		close(s.decided)
	})
	<-s.decided
	if s.up != nil {
		return s.up.Close()
	}
	if errors.Is(s.err, net.ErrClosed) {
		return nil
	}
	return s.err
}

// Package connset tracks the connections a server is handling, so that its
// shutdown can wait for their handlers up to a grace period and then close
// what is left (which ends those handlers), the way http.Server.Shutdown
// treats its own connections.
package connset

import (
	"context"
	"net"
	"sync"
)

// Set is the connections of one server. The zero value is ready to use.
type Set struct {
	handlers sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	draining bool
}

// Start registers c and a handler for it; done marks the handler
// finished. ok is false once Drain began: the caller then closes c.
func (s *Set) Start(c net.Conn) (done func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil, false
	}
	s.handlers.Add(1)
	s.add(c)
	return func() {
		s.remove(c)
		s.handlers.Done()
	}, true
}

// Track registers c (an upstream connection of a handler, say) to be
// closed by Drain, until untrack is called.
func (s *Set) Track(c net.Conn) (untrack func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add(c)
	return func() { s.remove(c) }
}

func (s *Set) add(c net.Conn) {
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
}

func (s *Set) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Drain refuses new handlers, waits for the running ones until ctx ends,
// then closes the connections left and waits for their handlers.
func (s *Set) Drain(ctx context.Context) {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	<-done
}

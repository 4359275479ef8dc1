package connset

import (
	"context"
	"net"
	"testing"
	"time"
)

// Drain waits for a handler that finishes within the grace period, leaving
// its connection open; a handler still running when the grace ends gets
// its connection (and a tracked one) closed, and Drain returns after it.
func TestDrain(t *testing.T) {
	var s Set
	quick, quickPeer := net.Pipe()
	defer quickPeer.Close()
	done, ok := s.Start(quick)
	if !ok {
		t.Fatal("Start refused before Drain")
	}
	go done()
	s.Drain(context.Background())
	// A pipe's SetDeadline fails only once it is closed.
	if err := quick.SetDeadline(time.Time{}); err != nil {
		t.Errorf("a connection whose handler finished in time was closed: %v", err)
	}
	quick.Close()

	var s2 Set
	slow, slowPeer := net.Pipe()
	defer slowPeer.Close()
	up, upPeer := net.Pipe()
	defer upPeer.Close()
	done2, _ := s2.Start(slow)
	untrack := s2.Track(up)
	handlerEnded := make(chan struct{})
	go func() {
		defer close(handlerEnded)
		defer done2()
		defer untrack()
		_, _ = slow.Read(make([]byte, 1)) // ends when Drain closes slow
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s2.Drain(ctx)
	select {
	case <-handlerEnded:
	default:
		t.Fatal("Drain returned before the handler it closed ended")
	}
	if up.SetDeadline(time.Time{}) == nil {
		t.Error("a tracked connection survived Drain's grace period")
	}

	extra, extraPeer := net.Pipe()
	defer extra.Close()
	defer extraPeer.Close()
	if _, ok := s2.Start(extra); ok {
		t.Error("Start accepted a connection after Drain")
	}
}

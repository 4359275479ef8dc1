package policy

import (
	"iter"
	"sync"
	"sync/atomic"
)

// Revoked is a live connection that a new Engine no longer allows.
type Revoked[K any] struct {
	Key      K
	Decision Decision
}

// Recheck returns the connections of live that e denies, in the order live
// yields them. Keys are whatever the caller tracks connections by.
func Recheck[K any](e *Engine, live iter.Seq2[K, Conn]) []Revoked[K] {
	var out []Revoked[K]
	for k, c := range live {
		if d := e.Check(c); !d.Allowed {
			out = append(out, Revoked[K]{Key: k, Decision: d})
		}
	}
	return out
}

// Authorizer holds the current Engine and the live connections it
// admitted, so that a policy update closes exactly the connections the new
// policies deny — including one admitted by the old engine while the update
// was being applied.
type Authorizer struct {
	engine atomic.Pointer[Engine]
	// mu guards live and orders Admit's insert against Update's swap; it
	// is taken once per connection open and close, never per read.
	mu   sync.Mutex
	live map[*tracked]struct{}
	// updating serialises Updates so an older engine never revokes a
	// connection after a newer one has been put in force.
	updating sync.Mutex
}

type tracked struct {
	conn   Conn
	revoke func(Decision)
}

// NewAuthorizer starts with e (nil: no policies, everything allowed).
func NewAuthorizer(e *Engine) *Authorizer {
	a := &Authorizer{live: map[*tracked]struct{}{}}
	if e == nil {
		e = New(nil)
	}
	a.engine.Store(e)
	return a
}

// Engine is the engine in force.
func (a *Authorizer) Engine() *Engine { return a.engine.Load() }

// Check decides without tracking the connection.
func (a *Authorizer) Check(c Conn) Decision { return a.engine.Load().Check(c) }

// Admit checks c and, when allowed, tracks it until release is called:
// if a later Update denies it, revoke is called once (from Update's
// goroutine; it should close the connection and return). release is
// idempotent and must be called when the connection ends. When c is denied,
// release is a no-op and revoke is never called.
func (a *Authorizer) Admit(c Conn, revoke func(Decision)) (d Decision, release func()) {
	e := a.engine.Load()
	d = e.Check(c)
	if !d.Allowed {
		return d, func() {}
	}
	t := &tracked{conn: c, revoke: revoke}
	a.mu.Lock()
	// An Update between our Check and here swapped the engine without
	// seeing this connection: decide again with the engine now in force.
	for cur := a.engine.Load(); cur != e; cur = a.engine.Load() {
		e = cur
		if d = e.Check(c); !d.Allowed {
			a.mu.Unlock()
			return d, func() {}
		}
	}
	a.live[t] = struct{}{}
	a.mu.Unlock()
	return d, func() {
		a.mu.Lock()
		delete(a.live, t)
		a.mu.Unlock()
	}
}

// Update puts e in force and revokes the live connections it denies. It
// returns how many were revoked.
func (a *Authorizer) Update(e *Engine) int {
	if e == nil {
		e = New(nil)
	}
	a.updating.Lock()
	defer a.updating.Unlock()
	a.mu.Lock()
	a.engine.Store(e)
	snapshot := make([]*tracked, 0, len(a.live))
	for t := range a.live {
		snapshot = append(snapshot, t)
	}
	a.mu.Unlock()

	var revoked []Revoked[*tracked]
	for _, t := range snapshot {
		if d := e.Check(t.conn); !d.Allowed {
			revoked = append(revoked, Revoked[*tracked]{Key: t, Decision: d})
		}
	}
	a.mu.Lock()
	n := 0
	for i, r := range revoked {
		// A connection released meanwhile is not revoked.
		if _, ok := a.live[r.Key]; ok {
			delete(a.live, r.Key)
			revoked[n] = revoked[i]
			n++
		}
	}
	a.mu.Unlock()
	for _, r := range revoked[:n] {
		r.Key.revoke(r.Decision)
	}
	return n
}

// Live is the number of tracked connections.
func (a *Authorizer) Live() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.live)
}

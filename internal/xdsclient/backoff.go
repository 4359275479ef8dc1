package xdsclient

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Backoff controls how fast Run retries after a stream ends. Zero fields take
// the defaults documented on each field.
type Backoff struct {
	// Initial is the upper bound of the first delay. Default 500ms.
	Initial time.Duration
	// Max caps the upper bound of any delay. Default 30s.
	Max time.Duration
	// Multiplier grows the upper bound per failed attempt. Default 2.
	Multiplier float64
	// StableAfter is how long a stream must have been serving (since its first
	// response) before the attempt counter resets, so a server that accepts and
	// then immediately drops streams still gets backed off. Default 30s.
	StableAfter time.Duration
}

const (
	defaultBackoffInitial     = 500 * time.Millisecond
	defaultBackoffMax         = 30 * time.Second
	defaultBackoffMultiplier  = 2.0
	defaultBackoffStableAfter = 30 * time.Second
)

func (b Backoff) withDefaults() Backoff {
	if b.Initial == 0 {
		b.Initial = defaultBackoffInitial
	}
	if b.Max == 0 {
		b.Max = defaultBackoffMax
	}
	if b.Multiplier == 0 {
		b.Multiplier = defaultBackoffMultiplier
	}
	if b.StableAfter == 0 {
		b.StableAfter = defaultBackoffStableAfter
	}
	return b
}

func (b Backoff) validate() error {
	switch {
	case b.Initial < 0:
		return fmt.Errorf("Backoff.Initial is %v: must be positive (or 0 for the default %v)", b.Initial, defaultBackoffInitial)
	case b.Max < 0:
		return fmt.Errorf("Backoff.Max is %v: must be positive (or 0 for the default %v)", b.Max, defaultBackoffMax)
	case b.Multiplier != 0 && b.Multiplier < 1:
		return fmt.Errorf("Backoff.Multiplier is %v: must be >= 1 (or 0 for the default %v)", b.Multiplier, defaultBackoffMultiplier)
	case b.StableAfter < 0:
		return fmt.Errorf("Backoff.StableAfter is %v: must be positive (or 0 for the default %v)", b.StableAfter, defaultBackoffStableAfter)
	}
	d := b.withDefaults()
	if d.Max < d.Initial {
		return fmt.Errorf("Backoff.Max (%v) is below Backoff.Initial (%v): Max must be >= Initial", d.Max, d.Initial)
	}
	return nil
}

// Ceiling is the upper bound of the delay before retry number attempt
// (0-based): min(Max, Initial*Multiplier^attempt).
func (b Backoff) Ceiling(attempt int) time.Duration {
	b = b.withDefaults()
	ceil := float64(b.Initial)
	for i := 0; i < attempt && ceil < float64(b.Max); i++ {
		ceil *= b.Multiplier
	}
	if ceil >= float64(b.Max) {
		return b.Max
	}
	return time.Duration(ceil)
}

// Delay returns a delay drawn uniformly from [0, Ceiling(attempt)] ("full
// jitter"), which spreads a fleet of proxies reconnecting to a restarted
// control plane over the whole window instead of stampeding in lockstep.
func (b Backoff) Delay(attempt int) time.Duration {
	return b.delay(attempt, rand.Int64N)
}

func (b Backoff) delay(attempt int, int64n func(int64) int64) time.Duration {
	ceil := b.Ceiling(attempt)
	if ceil <= 0 {
		return 0
	}
	return time.Duration(int64n(int64(ceil) + 1))
}

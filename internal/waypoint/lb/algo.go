package lb

import (
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// rng is the balancer's random source. Unseeded it uses the runtime's
// per-thread generator (no shared cache line); seeded it is SplitMix64 over
// an atomic counter, lock-free and reproducible from one goroutine.
type rng struct {
	seeded bool
	state  atomic.Uint64
}

func (r *rng) init(seed uint64) {
	r.seeded = seed != 0
	r.state.Store(seed)
}

func (r *rng) uint64() uint64 {
	if !r.seeded {
		return rand.Uint64()
	}
	return mix64(r.state.Add(0x9e3779b97f4a7c15))
}

// below returns a number in [0, n) (Lemire's multiply-shift; the bias is at
// most n/2^64).
func (r *rng) below(n uint64) uint64 {
	hi, _ := bits.Mul64(r.uint64(), n)
	return hi
}

// mix64 is the SplitMix64 finalizer.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// weights holds cumulative weights when endpoints are not all equally
// weighted; nil cum means uniform.
type weights struct {
	cum   []uint64 // cum[i] is the sum of the weights of eps[0..i]
	total uint64
}

func newWeights(eps []Endpoint) weights {
	uniform := true
	for _, ep := range eps {
		if weightOf(ep.Weight) != weightOf(eps[0].Weight) {
			uniform = false
			break
		}
	}
	if uniform {
		return weights{total: uint64(len(eps))}
	}
	w := weights{cum: make([]uint64, len(eps))}
	for i, ep := range eps {
		w.total += uint64(weightOf(ep.Weight))
		w.cum[i] = w.total
	}
	return w
}

// index maps x in [0, total) to the endpoint owning that share.
func (w *weights) index(x uint64) int {
	if w.cum == nil {
		return int(x)
	}
	lo, hi := 0, len(w.cum)-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if w.cum[mid] > x {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

func weightOf(w uint32) uint32 {
	if w == 0 {
		return 1
	}
	return w
}

// roundRobin walks the weight space with a stride coprime to its size: each
// cycle of total picks gives every endpoint exactly its weight, and a large
// stride interleaves heavy endpoints with light ones instead of sending them
// bursts. Equal weights degenerate to a plain cycle.
type roundRobin struct {
	w      weights
	stride uint64
	next   atomic.Uint64
}

func newRoundRobin(eps []Endpoint, r *rng) *roundRobin {
	rr := &roundRobin{w: newWeights(eps), stride: 1}
	if rr.w.cum != nil {
		rr.stride = coprimeNear(rr.w.total, uint64(float64(rr.w.total)*0.6180339887))
	}
	// Start where a random earlier pick would have left off, so that
	// replicas and rebuilds do not all send their next request to the first
	// endpoint.
	rr.next.Store(r.below(rr.w.total))
	return rr
}

func (rr *roundRobin) pick(t *table, _ *rng, _ Request) int {
	n := rr.next.Add(1) - 1
	if rr.w.cum == nil {
		return int(n % rr.w.total)
	}
	hi, lo := bits.Mul64(n%rr.w.total, rr.stride)
	return rr.w.index(bits.Rem64(hi, lo, rr.w.total))
}

// coprimeNear returns the first number >= s (and >= 1) coprime with n.
func coprimeNear(n, s uint64) uint64 {
	if s == 0 {
		s = 1
	}
	for gcd(n, s) != 1 {
		s++
	}
	return s
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

type random struct{ w weights }

func newRandom(eps []Endpoint) *random { return &random{w: newWeights(eps)} }

func (a *random) pick(_ *table, r *rng, _ Request) int {
	return a.w.index(r.below(a.w.total))
}

// leastRequest is power of N choices: sample ChoiceCount endpoints (by
// weight) and take the one with the fewest requests in flight per unit of
// weight. Sampling rather than scanning keeps Pick O(1) and avoids every
// proxy herding onto the single least-loaded endpoint.
type leastRequest struct {
	w       weights
	choices int
}

func newLeastRequest(cfg Config, eps []Endpoint) *leastRequest {
	return &leastRequest{w: newWeights(eps), choices: cfg.ChoiceCount}
}

func (a *leastRequest) pick(t *table, r *rng, _ Request) int {
	n := len(t.eps)
	if n == 1 {
		return 0
	}
	best := a.sample(r, n, -1)
	for c := 1; c < a.choices; c++ {
		i := a.sample(r, n, best)
		if lessLoaded(&t.eps[i], &t.eps[best]) {
			best = i
		}
	}
	return best
}

// sample draws an endpoint other than not (when not >= 0). Uniform draws
// skip it exactly; weighted draws retry a few times and then take the
// neighbour, which only matters when one endpoint holds nearly all weight.
func (a *leastRequest) sample(r *rng, n, not int) int {
	if a.w.cum == nil {
		if not < 0 {
			return int(r.below(uint64(n)))
		}
		i := int(r.below(uint64(n - 1)))
		if i >= not {
			i++
		}
		return i
	}
	for range 4 {
		if i := a.w.index(r.below(a.w.total)); i != not {
			return i
		}
	}
	return (not + 1) % n
}

// lessLoaded compares in-flight requests per unit of weight without
// dividing: (a+1)/wa < (b+1)/wb. The +1 lets weight matter when both are idle.
func lessLoaded(a, b *Endpoint) bool {
	la := uint64(max(a.st.inflight.Load(), 0)) + 1
	lb := uint64(max(b.st.inflight.Load(), 0)) + 1
	return la*uint64(weightOf(b.Weight)) < lb*uint64(weightOf(a.Weight))
}

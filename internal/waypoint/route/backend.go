package route

import gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"

// Rand is the random source weighted picks draw from; *math/rand/v2.Rand
// satisfies it. Callers pass their own so tests are deterministic and hot
// paths can use a per-goroutine source.
type Rand interface {
	// Uint64N returns a value in [0, n); n > 0.
	Uint64N(n uint64) uint64
}

// PickBackend chooses one of the route's backendRefs with probability
// weight/sum(weights). A backend with weight 0 is never chosen. An invalid
// backend (its Invalid field is set) is chosen for its share like any
// other; the server then answers 500 for that request, which is how the
// spec wants an unresolvable ref to show. nil means the route has no
// backend that can be chosen (none, or all weights 0): answer 500.
func PickBackend(r *Route, rnd Rand) *gatewayv1.BackendRef {
	bs := r.Config.GetBackends()
	if r.totalWeight == 0 {
		return nil
	}
	if len(bs) == 1 {
		return bs[0]
	}
	n := rnd.Uint64N(r.totalWeight)
	for _, b := range bs {
		w := uint64(b.GetWeight())
		if n < w {
			return b
		}
		n -= w
	}
	return nil // unreachable: n < totalWeight
}

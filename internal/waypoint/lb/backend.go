package lb

import (
	"fmt"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// ConfigFor returns the Config of a backend: base (the proxy's tuning:
// locality, choice count, seed) with the policy and hash key the backend's
// LoadBalancer asks for. A backend without one gets base unchanged. The
// control plane validates the policy, so an unknown one here is a version
// skew, reported as an error wrapping ErrInvalid.
func ConfigFor(base Config, b *gatewayv1.Backend) (Config, error) {
	lb := b.GetLoadBalancer()
	if lb == nil {
		return base, nil
	}
	cfg := base
	cfg.Hash = nil
	switch lb.GetPolicy() {
	case "", "LeastRequest":
		cfg.Policy = LeastRequest
	case "RoundRobin":
		cfg.Policy = RoundRobin
	case "Random":
		cfg.Policy = Random
	case "ConsistentHash":
		cfg.Policy = Maglev
		h := lb.GetHash()
		switch {
		case h.GetHeader() != "":
			cfg.Hash = []HashPolicy{{Kind: HashHeader, Name: h.GetHeader()}}
		case h.GetCookie() != "":
			ttl := h.GetCookieTtl().AsDuration()
			cfg.Hash = []HashPolicy{{Kind: HashCookie, Name: h.GetCookie(),
				Cookie: CookieOptions{Generate: h.GetCookieTtl() != nil, TTL: ttl, Path: h.GetCookiePath()}}}
		case h.GetSourceIp():
			cfg.Hash = []HashPolicy{{Kind: HashSourceIP}}
		}
	default:
		return base, fmt.Errorf("lb: backend %s/%s: policy %q: %w: valid are LeastRequest, RoundRobin, Random and ConsistentHash", b.GetNamespace(), b.GetName(), lb.GetPolicy(), ErrInvalid)
	}
	return cfg, nil
}

package lb

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
)

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("invalid")

// state is the per-endpoint state that survives table rebuilds. It is padded
// to a cache line so in-flight counters of different endpoints, updated by
// every request, do not share one.
type state struct {
	inflight atomic.Int64
	healthy  atomic.Bool
	_        [64 - 8 - 4]byte
}

// Balancer balances requests over the endpoints of one backend. It is safe
// for concurrent use; see the package documentation for the model.
type Balancer struct {
	cur atomic.Pointer[table]
	rnd rng

	mu     sync.Mutex // serialises rebuilds; never taken by Pick or Done
	cfg    Config
	eps    []Endpoint // as last given to Update, with st set
	states map[string]*state
}

var _ Picker = (*Balancer)(nil)

// New returns a Balancer with no endpoints for cfg.
func New(cfg Config) (*Balancer, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	b := &Balancer{cfg: cfg, states: map[string]*state{}}
	b.rnd.init(cfg.Seed)
	b.cur.Store(&table{})
	return b, nil
}

// Update replaces the endpoint list. Endpoints that keep their ID keep their
// in-flight count and health; new endpoints start healthy. The list is
// copied. On error the previous list stays in use.
func (b *Balancer) Update(eps []Endpoint) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := validateEndpoints(b.cfg, eps); err != nil {
		return err
	}
	states := make(map[string]*state, len(eps))
	list := make([]Endpoint, len(eps))
	for i, ep := range eps {
		st := b.states[ep.ID]
		if st == nil {
			st = &state{}
			st.healthy.Store(true)
		}
		states[ep.ID] = st
		ep.st = st
		list[i] = ep
	}
	b.eps, b.states = list, states
	b.rebuild()
	return nil
}

// SetConfig switches the algorithm or its tuning, keeping endpoint state.
// cfg.Seed is ignored: the random source is fixed by New. On error the
// previous config stays in use.
func (b *Balancer) SetConfig(cfg Config) error {
	cfg, err := cfg.normalize()
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	cfg.Seed = b.cfg.Seed // read by New only: Pick reads the generator unlocked
	if cfg.equal(b.cfg) {
		return nil // every config push repeats it: keep the table (a Maglev one is costly)
	}
	if err := validateEndpoints(cfg, b.eps); err != nil {
		return err
	}
	b.cfg = cfg
	b.rebuild()
	return nil
}

// SetHealthy marks the endpoint with the given ID healthy or not and reports
// whether the balancer knows it. Unhealthy endpoints are not picked unless
// the balancer is in panic mode.
func (b *Balancer) SetHealthy(id string, healthy bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.states[id]
	if st == nil {
		return false
	}
	if st.healthy.Swap(healthy) != healthy {
		b.rebuild()
	}
	return true
}

// Pick chooses an endpoint for req and counts a request in flight on it;
// false when the balancer has no endpoints. req may be nil unless the policy
// is Maglev.
func (b *Balancer) Pick(req Request) (Endpoint, bool) {
	t := b.cur.Load()
	if len(t.eps) == 0 {
		return Endpoint{}, false
	}
	ep := &t.eps[t.algo.pick(t, &b.rnd, req)]
	ep.st.inflight.Add(1)
	return *ep, true
}

// Done ends the request Pick counted on ep.
func (b *Balancer) Done(ep Endpoint) {
	if ep.st != nil {
		ep.st.inflight.Add(-1)
	}
}

// InFlight returns the number of requests in flight on the endpoint with the
// given ID (0 for an unknown ID).
func (b *Balancer) InFlight(id string) int64 {
	b.mu.Lock()
	st := b.states[id]
	b.mu.Unlock()
	if st == nil {
		return 0
	}
	return st.inflight.Load()
}

// Stats describes the current picking table.
type Stats struct {
	// Endpoints is the number of endpoints given to Update.
	Endpoints int
	// Healthy is how many of them are healthy.
	Healthy int
	// Candidates is how many endpoints Pick currently chooses among, after
	// health, panic mode and locality preference.
	Candidates int
	// Panic is true when the balancer picks among unhealthy endpoints.
	Panic bool
}

// Stats returns the current table's figures, for metrics and logs.
func (b *Balancer) Stats() Stats {
	t := b.cur.Load()
	return Stats{Endpoints: t.total, Healthy: t.healthy, Candidates: len(t.eps), Panic: t.panic}
}

// table is one immutable picking table.
type table struct {
	eps     []Endpoint // candidates
	algo    algo
	total   int
	healthy int
	panic   bool
}

type algo interface {
	// pick returns an index into t.eps, which is not empty.
	pick(t *table, r *rng, req Request) int
}

// rebuild publishes a new table from b.eps, b.cfg and endpoint health.
// b.mu is held.
func (b *Balancer) rebuild() {
	t := &table{total: len(b.eps)}
	healthy := make([]Endpoint, 0, len(b.eps))
	for _, ep := range b.eps {
		if ep.st.healthy.Load() {
			healthy = append(healthy, ep)
		}
	}
	t.healthy = len(healthy)
	cands := healthy
	if len(b.eps) > 0 && (len(healthy) == 0 || len(healthy)*100 < b.cfg.PanicThreshold*len(b.eps)) {
		t.panic = true
		cands = b.eps
	}
	t.eps = preferLocal(b.cfg.Local, cands)
	if len(t.eps) > 0 {
		t.algo = buildAlgo(b.cfg, t.eps, &b.rnd)
	}
	b.cur.Store(t)
}

// preferLocal narrows cands to the same zone, else the same region, when
// local has a region. The result may alias cands; tables never modify it.
func preferLocal(local Locality, cands []Endpoint) []Endpoint {
	if local.Region == "" {
		return cands
	}
	var zone, region []Endpoint
	for _, ep := range cands {
		if ep.Locality.Region != local.Region {
			continue
		}
		region = append(region, ep)
		if local.Zone != "" && ep.Locality.Zone == local.Zone {
			zone = append(zone, ep)
		}
	}
	switch {
	case len(zone) > 0:
		return zone
	case len(region) > 0:
		return region
	}
	return cands
}

func buildAlgo(cfg Config, eps []Endpoint, r *rng) algo {
	switch cfg.Policy {
	case RoundRobin:
		return newRoundRobin(eps, r)
	case Random:
		return newRandom(eps)
	case Maglev:
		return newMaglev(cfg, eps)
	}
	return newLeastRequest(cfg, eps)
}

// equal compares two normalized configs field by field (Config holds a
// slice, so == cannot); a field added to Config must be added here.
func (c Config) equal(o Config) bool {
	return c.Policy == o.Policy && c.ChoiceCount == o.ChoiceCount && slices.Equal(c.Hash, o.Hash) &&
		c.MaglevTableSize == o.MaglevTableSize && c.Local == o.Local && c.PanicThreshold == o.PanicThreshold && c.Seed == o.Seed
}

func (c Config) normalize() (Config, error) {
	var errs []error
	switch c.Policy {
	case LeastRequest, RoundRobin, Random, Maglev:
	default:
		errs = append(errs, fmt.Errorf("lb: config: policy %d: %w: valid are LeastRequest, RoundRobin, Random and Maglev", int(c.Policy), ErrInvalid))
	}
	if c.ChoiceCount == 0 {
		c.ChoiceCount = 2
	}
	if c.ChoiceCount < 2 {
		errs = append(errs, fmt.Errorf("lb: config: choice_count %d: %w: must be at least 2", c.ChoiceCount, ErrInvalid))
	}
	if c.MaglevTableSize == 0 {
		c.MaglevTableSize = DefaultMaglevTableSize
	}
	if !isPrime(c.MaglevTableSize) {
		errs = append(errs, fmt.Errorf("lb: config: maglev_table_size %d: %w: must be a prime, such as 65537 (default), 4099 or 251", c.MaglevTableSize, ErrInvalid))
	}
	if c.PanicThreshold < 0 || c.PanicThreshold > 100 {
		errs = append(errs, fmt.Errorf("lb: config: panic_threshold %d: %w: must be a percentage from 0 to 100", c.PanicThreshold, ErrInvalid))
	}
	if c.Policy == Maglev && len(c.Hash) == 0 {
		errs = append(errs, fmt.Errorf("lb: config: hash: %w: Maglev needs at least one hash policy (header, cookie or source IP)", ErrInvalid))
	}
	hash := make([]HashPolicy, len(c.Hash))
	for i, h := range c.Hash {
		switch h.Kind {
		case HashHeader:
			if h.Name == "" {
				errs = append(errs, fmt.Errorf("lb: config: hash[%d].name: %w: a header hash policy needs a header name", i, ErrInvalid))
			}
			h.Name = http.CanonicalHeaderKey(h.Name)
		case HashCookie:
			if h.Name == "" {
				errs = append(errs, fmt.Errorf("lb: config: hash[%d].name: %w: a cookie hash policy needs a cookie name", i, ErrInvalid))
			}
			if h.Cookie.TTL < 0 {
				errs = append(errs, fmt.Errorf("lb: config: hash[%d].cookie.ttl %v: %w: must not be negative", i, h.Cookie.TTL, ErrInvalid))
			}
		case HashSourceIP:
		default:
			errs = append(errs, fmt.Errorf("lb: config: hash[%d].kind %d: %w: valid are HashHeader, HashCookie and HashSourceIP", i, int(h.Kind), ErrInvalid))
		}
		hash[i] = h
	}
	c.Hash = hash
	return c, errors.Join(errs...)
}

func validateEndpoints(cfg Config, eps []Endpoint) error {
	var errs []error
	seen := make(map[string]int, len(eps))
	for i, ep := range eps {
		if ep.ID == "" {
			errs = append(errs, fmt.Errorf("lb: endpoints[%d] (%v): id: %w: must not be empty", i, ep.Addr, ErrInvalid))
			continue
		}
		if j, ok := seen[ep.ID]; ok {
			errs = append(errs, fmt.Errorf("lb: endpoints[%d]: id %q: %w: duplicates endpoints[%d]; ids must be unique", i, ep.ID, ErrInvalid, j))
			continue
		}
		seen[ep.ID] = i
	}
	if cfg.Policy == Maglev && len(eps) > cfg.MaglevTableSize {
		errs = append(errs, fmt.Errorf("lb: endpoints: %d endpoints: %w: Maglev table size %d must be at least the number of endpoints", len(eps), ErrInvalid, cfg.MaglevTableSize))
	}
	return errors.Join(errs...)
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

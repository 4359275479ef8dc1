// Package lb holds the waypoint's L7 load balancers: round robin, random,
// least request (power of two choices) and consistent hashing (Maglev), one
// Balancer per backend, shared by every request to it.
//
// # Model
//
// A Balancer is built from a Config and fed immutable endpoint lists with
// Update. Every Update, SetConfig or SetHealthy builds a new immutable picking
// table and publishes it through an atomic pointer, so Pick never takes a lock
// and a rebuild never blocks requests. Per-endpoint state (in-flight count,
// health) lives outside the tables, keyed by Endpoint.ID, so it survives
// rebuilds for endpoints that stay: a request picked before an Update is still
// counted, and its Done still lands on the right counter, after it.
//
// # Contract
//
// Every successful Pick must be followed by exactly one Done with the
// Endpoint it returned, whatever the policy: the in-flight counts drive least
// request and are exported for metrics.
//
// # Health and panic mode
//
// SetHealthy(id, false) removes an endpoint from the tables (outlier ejection
// will drive it). When the share of healthy endpoints falls below
// Config.PanicThreshold percent, or no endpoint is healthy at all, the
// balancer is in panic mode and picks among all endpoints, like Envoy: sending
// traffic to endpoints believed unhealthy beats failing every request. Envoy's
// default threshold is 50%; ours is 0, so panic mode starts only when every
// endpoint is unhealthy, because ambit has no active health checking yet and
// a wrong ejection should not shift load on the remaining half.
//
// # Locality preference
//
// When Config.Local has a region, the tables hold only the candidates (healthy
// ones, or all in panic mode) in the same region and zone, else those in the
// same region, else all of them. The preference is strict, like Istio's
// locality failover without a distribution: a single local endpoint takes all
// the traffic while it is healthy.
//
// # Consistent hashing
//
// Policy Maglev hashes a key built from Config.Hash (a header, a cookie or the
// source IP, combined like Envoy's hash_policy list) into a Maglev lookup table
// (Envoy's MAGLEV; 65537 entries by default). Endpoints are placed by ID with
// xxHash64, so every waypoint replica maps a key to the same endpoint, and
// adding or removing one of N endpoints moves about 1/N of the keys. A request
// that yields no key is placed at random, as in Envoy.
package lb

import (
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// Endpoint is one endpoint a Balancer picks from.
type Endpoint struct {
	// ID identifies the endpoint across updates: its in-flight count and
	// health follow the ID, and Maglev places it by ID. IDs must be unique
	// within a list. FromBackend uses "<namespace>/<workload>" (the address
	// when there is no workload), so all replicas of a waypoint agree.
	ID string
	// Addr is where to connect; the balancer does not use it.
	Addr netip.AddrPort
	// Weight scales the endpoint's share; 0 means 1.
	Weight uint32
	// Locality is used by the locality preference.
	Locality Locality
	// Value is caller data returned with the endpoint (for example its
	// upstream connection pool or the xDS Endpoint).
	Value any

	st *state
}

// Locality is where an endpoint runs.
type Locality struct {
	Region, Zone, Subzone string
}

// Request is what hash policies read from a request. Balancers with other
// policies never call it, so nil is a valid Request for them.
type Request interface {
	// Header returns the first value of the header with the given canonical
	// name (http.CanonicalHeaderKey), and whether the header is present.
	Header(name string) (string, bool)
	// Cookie returns the value of the named cookie and whether it is present.
	Cookie(name string) (string, bool)
	// SourceAddr is the downstream client's address; the zero Addr when
	// unknown.
	SourceAddr() netip.Addr
	// SetCookie is called when a cookie hash policy generated the cookie
	// because the request had none: the caller must add it to the response
	// (Set-Cookie) so the client's next requests stick to the same endpoint.
	SetCookie(c *http.Cookie)
}

// Picker is the request-path view of a Balancer.
type Picker interface {
	// Pick chooses an endpoint for req; false when there is none.
	Pick(req Request) (Endpoint, bool)
	// Done reports that the request sent to ep finished.
	Done(ep Endpoint)
}

// Policy is a load balancing algorithm.
type Policy int

// Policies. The zero value is LeastRequest, ambit's default for HTTP.
const (
	// LeastRequest picks Config.ChoiceCount endpoints at random and takes
	// the one with the fewest requests in flight (relative to its weight).
	LeastRequest Policy = iota
	// RoundRobin cycles through the endpoints, interleaving them in
	// proportion to their weights.
	RoundRobin
	// Random picks uniformly at random (weighted).
	Random
	// Maglev is consistent hashing with a Maglev lookup table.
	Maglev
)

func (p Policy) String() string {
	switch p {
	case LeastRequest:
		return "LeastRequest"
	case RoundRobin:
		return "RoundRobin"
	case Random:
		return "Random"
	case Maglev:
		return "Maglev"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// DefaultMaglevTableSize is Envoy's default Maglev table size.
const DefaultMaglevTableSize = 65537

// Config selects and tunes the algorithm of a Balancer.
type Config struct {
	Policy Policy
	// ChoiceCount is how many random endpoints LeastRequest compares; 0
	// means 2 (power of two choices).
	ChoiceCount int
	// Hash is the hash policy list of Maglev; required for it.
	Hash []HashPolicy
	// MaglevTableSize is the Maglev lookup table size; 0 means 65537. It must
	// be prime and at least the number of endpoints; smaller tables build
	// faster and take less memory but spread load less evenly.
	MaglevTableSize int
	// Local is the proxy's own locality; endpoints in the same region and
	// zone are preferred when its Region is set.
	Local Locality
	// PanicThreshold is the percentage of healthy endpoints below which the
	// balancer picks among all endpoints; 0 means only when none is healthy.
	PanicThreshold int
	// Seed, when non-zero, makes random choices deterministic (tests); the
	// default uses the runtime's per-thread generator, which scales better.
	// Only New reads it.
	Seed uint64
}

// HashKind says where a hash policy takes its key from.
type HashKind int

// Hash key sources.
const (
	HashHeader HashKind = iota + 1
	HashCookie
	HashSourceIP
)

// HashPolicy is one entry of Envoy's route hash_policy list. The hashes of all
// entries that yield a key are combined, in order, up to the first Terminal
// entry that yields one.
type HashPolicy struct {
	Kind HashKind
	// Name is the header (HashHeader) or cookie (HashCookie) name.
	Name string
	// Terminal stops evaluating later entries when this one yields a key.
	Terminal bool
	// Cookie tunes HashCookie.
	Cookie CookieOptions
}

// CookieOptions are Envoy's cookie hash options.
type CookieOptions struct {
	// Generate makes the balancer create the cookie when the request has
	// none (Envoy: ttl set) and hand it to Request.SetCookie.
	Generate bool
	// TTL is the generated cookie's Max-Age; 0 makes a session cookie.
	TTL time.Duration
	// Path is the generated cookie's path; empty means no Path attribute.
	Path string
}

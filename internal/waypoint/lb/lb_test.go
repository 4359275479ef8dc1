package lb

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var allPolicies = []Policy{LeastRequest, RoundRobin, Random, Maglev}

func cfgFor(p Policy) Config {
	c := Config{Policy: p, Seed: 42}
	if p == Maglev {
		c.Hash = []HashPolicy{{Kind: HashHeader, Name: "x-user"}}
	}
	return c
}

func endpoints(n int) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{
			ID:   fmt.Sprintf("ns/ep%d", i),
			Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 8080),
		}
	}
	return eps
}

func mustNew(t testing.TB, cfg Config, eps []Endpoint) *Balancer {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	if err := b.Update(eps); err != nil {
		t.Fatalf("Update: %v", err)
	}
	return b
}

// headerReq is a real *http.Request behind the package's own adapter.
func headerReq(name, value string) *HTTPRequest {
	h := http.Header{}
	if name != "" {
		h.Set(name, value)
	}
	return &HTTPRequest{Req: &http.Request{Header: h, Host: "svc.example"}}
}

// pickN picks n times, ending each request at once, and counts picks per ID.
func pickN(t testing.TB, b *Balancer, n int, req func(i int) Request) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		var r Request
		if req != nil {
			r = req(i)
		}
		ep, ok := b.Pick(r)
		if !ok {
			t.Fatalf("Pick %d: no endpoint", i)
		}
		counts[ep.ID]++
		b.Done(ep)
	}
	return counts
}

// chiSquare returns Pearson's statistic for observed counts against
// expected shares.
func chiSquare(counts map[string]int, ids []string, shares []float64, n int) float64 {
	var x float64
	for i, id := range ids {
		e := shares[i] * float64(n)
		d := float64(counts[id]) - e
		x += d * d / e
	}
	return x
}

// chi2Critical001 is the chi-square critical value at p = 0.001 by degrees
// of freedom.
var chi2Critical001 = map[int]float64{1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 7: 24.32, 9: 27.88}

func ids(eps []Endpoint) []string {
	out := make([]string, len(eps))
	for i, ep := range eps {
		out[i] = ep.ID
	}
	return out
}

func uniform(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = 1 / float64(n)
	}
	return s
}

func TestZeroEndpoints(t *testing.T) {
	for _, p := range allPolicies {
		t.Run(p.String(), func(t *testing.T) {
			b, err := New(cfgFor(p))
			if err != nil {
				t.Fatal(err)
			}
			if ep, ok := b.Pick(headerReq("x-user", "a")); ok {
				t.Fatalf("Pick on a new balancer = %v, want none", ep.ID)
			}
			if err := b.Update(endpoints(3)); err != nil {
				t.Fatal(err)
			}
			if _, ok := b.Pick(headerReq("x-user", "a")); !ok {
				t.Fatal("Pick with 3 endpoints found none")
			}
			if err := b.Update(nil); err != nil {
				t.Fatal(err)
			}
			if ep, ok := b.Pick(headerReq("x-user", "a")); ok {
				t.Fatalf("Pick after Update(nil) = %v, want none", ep.ID)
			}
			if got, want := b.Stats(), (Stats{}); got != want {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{name: "defaults", cfg: Config{}},
		{name: "maglev with header", cfg: Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashHeader, Name: "x-a"}}}},
		{name: "maglev small prime table", cfg: Config{Policy: Maglev, MaglevTableSize: 251, Hash: []HashPolicy{{Kind: HashSourceIP}}}},
		{name: "unknown policy", cfg: Config{Policy: 9}, want: []string{"policy 9", "valid are LeastRequest"}},
		{name: "one choice", cfg: Config{ChoiceCount: 1}, want: []string{"choice_count 1", "at least 2"}},
		{name: "table not prime", cfg: Config{MaglevTableSize: 1000}, want: []string{"maglev_table_size 1000", "must be a prime"}},
		{name: "panic threshold", cfg: Config{PanicThreshold: 101}, want: []string{"panic_threshold 101"}},
		{name: "maglev without hash", cfg: Config{Policy: Maglev}, want: []string{"Maglev needs at least one hash policy"}},
		{name: "header without name", cfg: Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashHeader}}}, want: []string{"hash[0].name", "header name"}},
		{name: "cookie without name", cfg: Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashSourceIP}, {Kind: HashCookie}}}, want: []string{"hash[1].name", "cookie name"}},
		{name: "negative ttl", cfg: Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashCookie, Name: "s", Cookie: CookieOptions{TTL: -time.Second}}}}, want: []string{"hash[0].cookie.ttl -1s"}},
		{name: "unknown kind", cfg: Config{Policy: Maglev, Hash: []HashPolicy{{Kind: 7}}}, want: []string{"hash[0].kind 7"}},
		{name: "all reported", cfg: Config{ChoiceCount: 1, MaglevTableSize: 4}, want: []string{"choice_count 1", "maglev_table_size 4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("New error = %v, want one wrapping ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			// SetConfig rejects it too and keeps the old config working.
			b := mustNew(t, Config{Seed: 1}, endpoints(2))
			if err := b.SetConfig(tt.cfg); !errors.Is(err, ErrInvalid) {
				t.Errorf("SetConfig error = %v, want ErrInvalid", err)
			}
			if _, ok := b.Pick(nil); !ok {
				t.Error("Pick after a rejected SetConfig found no endpoint")
			}
		})
	}
}

func TestUpdateValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		eps  []Endpoint
		want []string
	}{
		{name: "empty id", cfg: Config{}, eps: []Endpoint{{ID: "a"}, {}}, want: []string{"endpoints[1]", "id", "must not be empty"}},
		{name: "duplicate id", cfg: Config{}, eps: []Endpoint{{ID: "a"}, {ID: "b"}, {ID: "a"}}, want: []string{`endpoints[2]: id "a"`, "duplicates endpoints[0]"}},
		{name: "table too small", cfg: Config{Policy: Maglev, MaglevTableSize: 5, Hash: []HashPolicy{{Kind: HashSourceIP}}}, eps: endpoints(6), want: []string{"6 endpoints", "table size 5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustNew(t, tt.cfg, endpoints(2))
			err := b.Update(tt.eps)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Update error = %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if got := b.Stats().Endpoints; got != 2 {
				t.Errorf("after a rejected Update the balancer has %d endpoints, want the previous 2", got)
			}
		})
	}
}

func TestRoundRobinExactCycle(t *testing.T) {
	eps := endpoints(5)
	b := mustNew(t, Config{Policy: RoundRobin, Seed: 7}, eps)
	var seq []string
	for range 3 * len(eps) {
		ep, _ := b.Pick(nil)
		seq = append(seq, ep.ID)
		b.Done(ep)
	}
	// The first cycle is the list rotated to a random start; later cycles
	// repeat it exactly.
	start := -1
	for i, ep := range eps {
		if ep.ID == seq[0] {
			start = i
		}
	}
	var want []string
	for i := range 3 * len(eps) {
		want = append(want, eps[(start+i)%len(eps)].ID)
	}
	if diff := cmp.Diff(want, seq); diff != "" {
		t.Errorf("round robin sequence (-want +got):\n%s", diff)
	}
}

func TestRoundRobinWeighted(t *testing.T) {
	eps := endpoints(4)
	for i := range eps {
		eps[i].Weight = uint32(i + 1) // total 10
	}
	b := mustNew(t, Config{Policy: RoundRobin, Seed: 7}, eps)
	const cycles = 5
	var seq []string
	for range cycles * 10 {
		ep, _ := b.Pick(nil)
		seq = append(seq, ep.ID)
		b.Done(ep)
	}
	// Every window of one full cycle holds each endpoint exactly weight
	// times, wherever the random start put the cycle boundary.
	for start := 0; start+10 <= len(seq); start += 10 {
		got := map[string]int{}
		for _, id := range seq[start : start+10] {
			got[id]++
		}
		want := map[string]int{"ns/ep0": 1, "ns/ep1": 2, "ns/ep2": 3, "ns/ep3": 4}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("picks %d..%d per endpoint (-want +got):\n%s", start, start+10, diff)
		}
	}
	// Interleaved, not bursts: the heaviest endpoint (40%) never gets
	// three requests in a row.
	run := 1
	for i := 1; i < len(seq); i++ {
		if seq[i] == seq[i-1] {
			run++
		} else {
			run = 1
		}
		if run > 2 {
			t.Fatalf("%s picked %d times in a row at %d: %v", seq[i], run, i, seq)
		}
	}
}

func TestRandomDistribution(t *testing.T) {
	const n = 80000
	t.Run("uniform", func(t *testing.T) {
		eps := endpoints(8)
		b := mustNew(t, Config{Policy: Random, Seed: 3}, eps)
		counts := pickN(t, b, n, nil)
		if x := chiSquare(counts, ids(eps), uniform(8), n); x > chi2Critical001[7] {
			t.Errorf("chi-square %.2f > %.2f for uniform random: %v", x, chi2Critical001[7], counts)
		}
	})
	t.Run("weighted", func(t *testing.T) {
		eps := endpoints(4)
		for i := range eps {
			eps[i].Weight = uint32(i + 1)
		}
		b := mustNew(t, Config{Policy: Random, Seed: 3}, eps)
		counts := pickN(t, b, n, nil)
		if x := chiSquare(counts, ids(eps), []float64{.1, .2, .3, .4}, n); x > chi2Critical001[3] {
			t.Errorf("chi-square %.2f > %.2f for weights 1:2:3:4: %v", x, chi2Critical001[3], counts)
		}
	})
}

func TestLeastRequestIdleIsUniform(t *testing.T) {
	const n = 80000
	eps := endpoints(8)
	b := mustNew(t, Config{Seed: 5}, eps)
	counts := pickN(t, b, n, nil)
	if x := chiSquare(counts, ids(eps), uniform(8), n); x > chi2Critical001[7] {
		t.Errorf("chi-square %.2f > %.2f with no load: %v", x, chi2Critical001[7], counts)
	}
}

// hold picks with round robin (same balancer, so the same in-flight state)
// until each endpoint i has load[i] requests in flight, then switches the
// balancer to cfg.
func hold(t *testing.T, b *Balancer, eps []Endpoint, load []int, cfg Config) {
	t.Helper()
	if err := b.SetConfig(Config{Policy: RoundRobin, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	need := map[string]int{}
	total := 0
	for i, l := range load {
		need[eps[i].ID] = l
		total += l
	}
	for held := 0; held < total; {
		ep, _ := b.Pick(nil)
		if need[ep.ID] > 0 {
			need[ep.ID]--
			held++
		} else {
			b.Done(ep)
		}
	}
	for i, l := range load {
		if got := b.InFlight(eps[i].ID); got != int64(l) {
			t.Fatalf("InFlight(%s) = %d, want %d", eps[i].ID, got, l)
		}
	}
	if err := b.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
}

func TestLeastRequestPrefersLessLoaded(t *testing.T) {
	const n = 60000
	eps := endpoints(4)
	b := mustNew(t, Config{Seed: 11}, eps)
	hold(t, b, eps, []int{0, 5, 10, 20}, Config{Seed: 11})
	counts := pickN(t, b, n, nil)
	// Two distinct endpoints out of four, the less loaded wins: ep0 wins
	// the 3 of 6 pairs it is in, ep1 the 2 pairs with ep2 or ep3, ep2 the
	// pair with ep3, ep3 never.
	want := []float64{3.0 / 6, 2.0 / 6, 1.0 / 6}
	if counts["ns/ep3"] != 0 {
		t.Errorf("the most loaded endpoint got %d picks, want 0: %v", counts["ns/ep3"], counts)
	}
	if x := chiSquare(counts, ids(eps[:3]), want, n); x > chi2Critical001[2] {
		t.Errorf("chi-square %.2f > %.2f against pair-wins shares %v: %v", x, chi2Critical001[2], want, counts)
	}

	t.Run("stuck endpoint", func(t *testing.T) {
		// ep0 never finishes its requests; the others finish at once. P2C
		// must starve ep0 while random keeps feeding it a quarter.
		share := func(cfg Config) float64 {
			b := mustNew(t, cfg, endpoints(4))
			stuck := 0
			for range n {
				ep, _ := b.Pick(nil)
				if ep.ID == "ns/ep0" {
					stuck++
					continue
				}
				b.Done(ep)
			}
			return float64(stuck) / n
		}
		p2c, rnd := share(Config{Seed: 13}), share(Config{Policy: Random, Seed: 13})
		if p2c > 0.01 {
			t.Errorf("least request sent %.3f of requests to the stuck endpoint, want < 0.01", p2c)
		}
		if math.Abs(rnd-0.25) > 0.01 {
			t.Errorf("random sent %.3f of requests to the stuck endpoint, want about 0.25", rnd)
		}
	})

	t.Run("weights", func(t *testing.T) {
		// Equal load, ep1 has 3x the weight: it wins every pair it is in.
		eps := endpoints(3)
		eps[1].Weight = 3
		b := mustNew(t, Config{Seed: 17}, eps)
		hold(t, b, eps, []int{2, 2, 2}, Config{Seed: 17})
		counts := pickN(t, b, 3000, nil)
		if counts["ns/ep1"] < counts["ns/ep0"] || counts["ns/ep1"] < counts["ns/ep2"] {
			t.Errorf("the heavier endpoint got fewer picks at equal load: %v", counts)
		}
	})
}

func TestHealth(t *testing.T) {
	for _, p := range allPolicies {
		t.Run(p.String(), func(t *testing.T) {
			eps := endpoints(4)
			b := mustNew(t, cfgFor(p), eps)
			req := func(i int) Request { return headerReq("x-user", fmt.Sprint("u", i)) }

			if !b.SetHealthy("ns/ep1", false) || !b.SetHealthy("ns/ep3", false) {
				t.Fatal("SetHealthy of a known endpoint returned false")
			}
			if b.SetHealthy("ns/nope", false) {
				t.Error("SetHealthy of an unknown endpoint returned true")
			}
			counts := pickN(t, b, 2000, req)
			if counts["ns/ep1"] != 0 || counts["ns/ep3"] != 0 {
				t.Errorf("unhealthy endpoints picked: %v", counts)
			}
			if counts["ns/ep0"] == 0 || counts["ns/ep2"] == 0 {
				t.Errorf("a healthy endpoint was never picked: %v", counts)
			}
			if got, want := b.Stats(), (Stats{Endpoints: 4, Healthy: 2, Candidates: 2}); got != want {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}

			// All unhealthy: panic mode picks among all of them.
			b.SetHealthy("ns/ep0", false)
			b.SetHealthy("ns/ep2", false)
			counts = pickN(t, b, 2000, req)
			if len(counts) != 4 {
				t.Errorf("in panic mode picks went to %v, want all 4 endpoints", counts)
			}
			if got, want := b.Stats(), (Stats{Endpoints: 4, Healthy: 0, Candidates: 4, Panic: true}); got != want {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}

			// Health survives an update that keeps the endpoint.
			b.SetHealthy("ns/ep0", true)
			if err := b.Update(endpoints(5)); err != nil {
				t.Fatal(err)
			}
			if got, want := b.Stats(), (Stats{Endpoints: 5, Healthy: 2, Candidates: 2}); got != want {
				t.Errorf("after Update Stats() = %+v, want %+v (ep0 and the new ep4 healthy)", got, want)
			}
		})
	}
}

func TestPanicThreshold(t *testing.T) {
	b := mustNew(t, Config{Policy: Random, PanicThreshold: 50, Seed: 1}, endpoints(4))
	b.SetHealthy("ns/ep0", false)
	b.SetHealthy("ns/ep1", false)
	if s := b.Stats(); s.Panic || s.Candidates != 2 {
		t.Errorf("at 50%% healthy with threshold 50: %+v, want 2 candidates, no panic", s)
	}
	b.SetHealthy("ns/ep2", false)
	if s := b.Stats(); !s.Panic || s.Candidates != 4 {
		t.Errorf("at 25%% healthy with threshold 50: %+v, want panic over 4", s)
	}
}

func TestLocality(t *testing.T) {
	eps := endpoints(6)
	locs := []Locality{
		{Region: "eu", Zone: "a"}, {Region: "eu", Zone: "a"},
		{Region: "eu", Zone: "b"}, {Region: "eu", Zone: "b"},
		{Region: "us", Zone: "a"}, {Region: "us", Zone: "c"},
	}
	for i := range eps {
		eps[i].Locality = locs[i]
	}
	tests := []struct {
		name      string
		local     Locality
		unhealthy []string
		want      []string
	}{
		{name: "disabled", local: Locality{}, want: ids(eps)},
		{name: "same zone", local: Locality{Region: "eu", Zone: "a"}, want: []string{"ns/ep0", "ns/ep1"}},
		{name: "zone name is per region", local: Locality{Region: "us", Zone: "a"}, want: []string{"ns/ep4"}},
		{name: "zone unhealthy falls back to region", local: Locality{Region: "eu", Zone: "a"}, unhealthy: []string{"ns/ep0", "ns/ep1"}, want: []string{"ns/ep2", "ns/ep3"}},
		{name: "no endpoint in zone", local: Locality{Region: "eu", Zone: "z"}, want: []string{"ns/ep0", "ns/ep1", "ns/ep2", "ns/ep3"}},
		{name: "region only", local: Locality{Region: "us"}, want: []string{"ns/ep4", "ns/ep5"}},
		{name: "no endpoint in region", local: Locality{Region: "ap", Zone: "a"}, want: ids(eps)},
		{name: "region unhealthy falls back to all", local: Locality{Region: "us"}, unhealthy: []string{"ns/ep4", "ns/ep5"}, want: []string{"ns/ep0", "ns/ep1", "ns/ep2", "ns/ep3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustNew(t, Config{Policy: RoundRobin, Local: tt.local, Seed: 1}, eps)
			for _, id := range tt.unhealthy {
				b.SetHealthy(id, false)
			}
			counts := pickN(t, b, 60, nil)
			var got []string
			for _, ep := range eps {
				if counts[ep.ID] > 0 {
					got = append(got, ep.ID)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("picked endpoints (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStateSurvivesUpdate(t *testing.T) {
	b := mustNew(t, Config{Policy: RoundRobin, Seed: 1}, endpoints(3))
	var held []Endpoint
	for range 6 {
		ep, _ := b.Pick(nil)
		held = append(held, ep)
	}
	// ep2 goes away, ep3 arrives; ep0 and ep1 keep their counts.
	if err := b.Update(endpoints(4)[:2]); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(append(endpoints(2), endpoints(4)[3])); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, id := range []string{"ns/ep0", "ns/ep1", "ns/ep2", "ns/ep3"} {
		got[id] = b.InFlight(id)
	}
	want := map[string]int64{"ns/ep0": 2, "ns/ep1": 2, "ns/ep2": 0, "ns/ep3": 0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("in flight after updates (-want +got):\n%s", diff)
	}
	// Done on requests picked before the update, including on the removed
	// endpoint, lands on the right counters.
	for _, ep := range held {
		b.Done(ep)
	}
	for _, id := range []string{"ns/ep0", "ns/ep1"} {
		if n := b.InFlight(id); n != 0 {
			t.Errorf("InFlight(%s) = %d after every Done, want 0", id, n)
		}
	}
}

func TestConcurrent(t *testing.T) {
	for _, p := range allPolicies {
		t.Run(p.String(), func(t *testing.T) {
			cfg := cfgFor(p)
			cfg.Seed = 0 // the runtime generator, as in production
			if p == Maglev {
				cfg.MaglevTableSize = 251 // keep rebuilds cheap under -race
			}
			b := mustNew(t, cfg, endpoints(8))
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var picks, churns atomic.Int64
			errs := make(chan error, 9)
			for g := range 8 {
				wg.Go(func() {
					req := headerReq("x-user", fmt.Sprint("g", g))
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						ep, ok := b.Pick(req)
						if !ok {
							errs <- fmt.Errorf("goroutine %d: Pick %d found no endpoint", g, i)
							return
						}
						picks.Add(1)
						b.Done(ep)
					}
				})
			}
			// Churn: the list shrinks and grows (ep0..ep3 always stay) and
			// health flips, while requests flow.
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						// End with all 8 so every counter is checked below.
						if err := b.Update(endpoints(8)); err != nil {
							errs <- err
						}
						return
					default:
					}
					if err := b.Update(endpoints(4 + i%5)); err != nil {
						errs <- err
						return
					}
					b.SetHealthy(fmt.Sprintf("ns/ep%d", i%4), i%3 == 0)
					if i%7 == 0 {
						c := cfg
						c.PanicThreshold = 50 * (i / 7 % 2)
						if err := b.SetConfig(c); err != nil {
							errs <- err
							return
						}
					}
					churns.Add(1)
				}
			})
			deadline := time.Now().Add(20 * time.Second)
			for picks.Load() < 100000 || churns.Load() < 200 {
				if time.Now().After(deadline) {
					t.Errorf("after 20s only %d picks and %d rebuilds", picks.Load(), churns.Load())
					break
				}
				runtime.Gosched()
			}
			close(stop)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%d picks during %d rebuilds", picks.Load(), churns.Load())
			for i := range 8 {
				id := fmt.Sprintf("ns/ep%d", i)
				if n := b.InFlight(id); n != 0 {
					t.Errorf("InFlight(%s) = %d after every request ended, want 0", id, n)
				}
			}
		})
	}
}

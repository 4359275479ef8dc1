package lb

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// mapping returns, for each of keys, the endpoint ID the balancer picks for
// a request carrying that key in the x-user header.
func mapping(t *testing.T, b *Balancer, keys int) []string {
	t.Helper()
	out := make([]string, keys)
	for i := range out {
		ep, ok := b.Pick(headerReq("x-user", fmt.Sprint("user-", i)))
		if !ok {
			t.Fatal("Pick found no endpoint")
		}
		out[i] = ep.ID
		b.Done(ep)
	}
	return out
}

func moved(a, b []string) (n int) {
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

func maglevCfg(size int) Config {
	return Config{Policy: Maglev, MaglevTableSize: size, Seed: 1, Hash: []HashPolicy{{Kind: HashHeader, Name: "x-user"}}}
}

func TestMaglevStickyAndBalanced(t *testing.T) {
	const keys = 100000
	for _, size := range []int{DefaultMaglevTableSize, 4099} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			eps := endpoints(10)
			b := mustNew(t, maglevCfg(size), eps)
			first := mapping(t, b, keys)
			if again := mapping(t, b, keys); moved(first, again) != 0 {
				t.Errorf("%d of %d keys changed endpoint between two passes", moved(first, again), keys)
			}
			counts := map[string]int{}
			for _, id := range first {
				counts[id]++
			}
			for _, ep := range eps {
				if share := float64(counts[ep.ID]) / keys; share < 0.08 || share > 0.12 {
					t.Errorf("%s holds %.3f of the keys, want 0.1 +- 0.02: %v", ep.ID, share, counts)
				}
			}
		})
	}
}

func TestMaglevMinimalDisruption(t *testing.T) {
	const keys = 100000
	const n = 10
	eps := endpoints(n + 1)
	tests := []struct {
		name   string
		before []Endpoint
		after  []Endpoint
		// gone is the endpoint whose keys must all move (remove).
		gone string
	}{
		{name: "remove one", before: eps[:n], after: append(append([]Endpoint{}, eps[:3]...), eps[4:n]...), gone: "ns/ep3"},
		{name: "add one", before: eps[:n], after: eps[:n+1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustNew(t, maglevCfg(DefaultMaglevTableSize), tt.before)
			before := mapping(t, b, keys)
			if err := b.Update(tt.after); err != nil {
				t.Fatal(err)
			}
			after := mapping(t, b, keys)
			// Ideal is 1/N of the keys (the removed endpoint's, or the share
			// the new one takes); Maglev trades a little more for balance.
			frac := float64(moved(before, after)) / keys
			limit := 1.0/n*1.1 + 0.01
			t.Logf("%s: %.4f of keys moved (ideal %.4f)", tt.name, frac, 1.0/n)
			if frac > limit {
				t.Errorf("%.4f of keys moved, want <= %.4f", frac, limit)
			}
			if frac < 0.05 {
				t.Errorf("only %.4f of keys moved; the change did not take effect", frac)
			}
			for i := range before {
				if before[i] == tt.gone && after[i] == tt.gone {
					t.Fatalf("key %d still maps to removed %s", i, tt.gone)
				}
			}
		})
	}

	t.Run("unhealthy", func(t *testing.T) {
		b := mustNew(t, maglevCfg(DefaultMaglevTableSize), eps[:n])
		before := mapping(t, b, keys)
		b.SetHealthy("ns/ep5", false)
		during := mapping(t, b, keys)
		b.SetHealthy("ns/ep5", true)
		after := mapping(t, b, keys)
		if frac := float64(moved(before, during)) / keys; frac > 1.0/n*1.1+0.01 {
			t.Errorf("ejecting one endpoint moved %.4f of keys", frac)
		}
		if m := moved(before, after); m != 0 {
			t.Errorf("%d keys did not return after the endpoint became healthy again", m)
		}
	})

	t.Run("list order does not matter", func(t *testing.T) {
		b := mustNew(t, maglevCfg(DefaultMaglevTableSize), eps[:n])
		want := mapping(t, b, 5000)
		shuffled := append([]Endpoint{}, eps[:n]...)
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		b2 := mustNew(t, maglevCfg(DefaultMaglevTableSize), shuffled)
		if diff := cmp.Diff(want, mapping(t, b2, 5000)); diff != "" {
			t.Errorf("mapping depends on list order (-first +shuffled):\n%s", diff)
		}
	})
}

func TestMaglevWeighted(t *testing.T) {
	const keys = 100000
	eps := endpoints(3)
	eps[0].Weight, eps[1].Weight, eps[2].Weight = 1, 2, 5
	b := mustNew(t, maglevCfg(DefaultMaglevTableSize), eps)
	counts := map[string]int{}
	for _, id := range mapping(t, b, keys) {
		counts[id]++
	}
	for i, want := range []float64{1.0 / 8, 2.0 / 8, 5.0 / 8} {
		if got := float64(counts[eps[i].ID]) / keys; got < want-0.02 || got > want+0.02 {
			t.Errorf("%s (weight %d) holds %.3f of keys, want %.3f: %v", eps[i].ID, eps[i].Weight, got, want, counts)
		}
	}
}

func TestMaglevHashSources(t *testing.T) {
	eps := endpoints(16)
	newReq := func(header, cookie string, src netip.Addr) *HTTPRequest {
		h := http.Header{}
		if header != "" {
			h.Set("X-Tenant", header)
		}
		if cookie != "" {
			h.Set("Cookie", "other=1; session="+cookie)
		}
		return &HTTPRequest{Req: &http.Request{Header: h}, Source: src}
	}
	src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}) }

	tests := []struct {
		name string
		hash []HashPolicy
		// req builds request i; same(i, j) says whether requests i and j
		// carry the same key and so must land on the same endpoint.
		req  func(i int) *HTTPRequest
		same func(i, j int) bool
	}{
		{
			name: "header",
			hash: []HashPolicy{{Kind: HashHeader, Name: "x-tenant"}},
			req:  func(i int) *HTTPRequest { return newReq(fmt.Sprint("t", i%50), "", src(i)) },
			same: func(i, j int) bool { return i%50 == j%50 },
		},
		{
			name: "cookie",
			hash: []HashPolicy{{Kind: HashCookie, Name: "session"}},
			req:  func(i int) *HTTPRequest { return newReq("", fmt.Sprint("s", i%50), src(i)) },
			same: func(i, j int) bool { return i%50 == j%50 },
		},
		{
			name: "source ip",
			hash: []HashPolicy{{Kind: HashSourceIP}},
			req:  func(i int) *HTTPRequest { return newReq(fmt.Sprint("t", i), "", src(i%50)) },
			same: func(i, j int) bool { return i%50 == j%50 },
		},
		{
			name: "header then source ip, both combined",
			hash: []HashPolicy{{Kind: HashHeader, Name: "x-tenant"}, {Kind: HashSourceIP}},
			req:  func(i int) *HTTPRequest { return newReq(fmt.Sprint("t", i%10), "", src(i%5)) },
			same: func(i, j int) bool { return i%10 == j%10 },
		},
		{
			name: "terminal header stops before source ip",
			hash: []HashPolicy{{Kind: HashHeader, Name: "x-tenant", Terminal: true}, {Kind: HashSourceIP}},
			req:  func(i int) *HTTPRequest { return newReq(fmt.Sprint("t", i%50), "", src(i)) },
			same: func(i, j int) bool { return i%50 == j%50 },
		},
		{
			name: "missing header falls through to source ip",
			hash: []HashPolicy{{Kind: HashHeader, Name: "x-absent"}, {Kind: HashSourceIP}},
			req:  func(i int) *HTTPRequest { return newReq(fmt.Sprint("t", i), "", src(i%50)) },
			same: func(i, j int) bool { return i%50 == j%50 },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustNew(t, Config{Policy: Maglev, Hash: tt.hash, Seed: 1}, eps)
			const n = 500
			got := make([]string, n)
			for i := range n {
				ep, ok := b.Pick(tt.req(i))
				if !ok {
					t.Fatal("no endpoint")
				}
				got[i] = ep.ID
				b.Done(ep)
			}
			distinct := map[string]bool{}
			for i := range n {
				distinct[got[i]] = true
				for j := range i {
					if tt.same(i, j) && got[i] != got[j] {
						t.Fatalf("requests %d and %d share a key but went to %s and %s", i, j, got[i], got[j])
					}
				}
			}
			// Different keys spread: 50 keys over 16 endpoints reach most
			// of them (a constant hash would reach one).
			if len(distinct) < 8 {
				t.Errorf("keys reached only %d of 16 endpoints", len(distinct))
			}
		})
	}
}

func TestMaglevNoKeyIsRandom(t *testing.T) {
	eps := endpoints(4)
	b := mustNew(t, Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashHeader, Name: "x-user"}}, Seed: 9}, eps)
	const n = 40000
	counts := pickN(t, b, n, func(int) Request { return headerReq("", "") })
	if x := chiSquare(counts, ids(eps), uniform(4), n); x > chi2Critical001[3] {
		t.Errorf("requests without a key: chi-square %.2f > %.2f: %v", x, chi2Critical001[3], counts)
	}
	// A nil Request has no key either.
	if _, ok := b.Pick(nil); !ok {
		t.Error("Pick(nil) found no endpoint")
	}
}

func TestMaglevGeneratedCookie(t *testing.T) {
	tests := []struct {
		name string
		opts CookieOptions
		want *http.Cookie // with Value ignored; nil means no cookie set
	}{
		{name: "no generation", opts: CookieOptions{}},
		{name: "session cookie", opts: CookieOptions{Generate: true, Path: "/"}, want: &http.Cookie{Name: "sticky", Path: "/", HttpOnly: true}},
		{name: "with ttl", opts: CookieOptions{Generate: true, TTL: time.Hour}, want: &http.Cookie{Name: "sticky", MaxAge: 3600, HttpOnly: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustNew(t, Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashCookie, Name: "sticky", Cookie: tt.opts}}, Seed: 3}, endpoints(16))
			seen := map[string]bool{}
			for i := range 20 {
				first := &HTTPRequest{Req: &http.Request{Header: http.Header{}}}
				ep, _ := b.Pick(first)
				b.Done(ep)
				if tt.want == nil {
					if first.NewCookie != nil {
						t.Fatalf("cookie %v set without Generate", first.NewCookie)
					}
					continue
				}
				c := first.NewCookie
				if c == nil || len(c.Value) != 16 {
					t.Fatalf("request %d: generated cookie = %v, want one with a 16-hex-digit value", i, c)
				}
				if seen[c.Value] {
					t.Fatalf("cookie value %s generated twice", c.Value)
				}
				seen[c.Value] = true
				if diff := cmp.Diff(tt.want, c, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Value" }, cmp.Ignore())); diff != "" {
					t.Fatalf("generated cookie (-want +got):\n%s", diff)
				}
				// The client sends it back: every later request sticks to
				// the endpoint of the first and sets no new cookie.
				for range 5 {
					next := &HTTPRequest{Req: &http.Request{Header: http.Header{"Cookie": {"a=b; " + c.Name + "=" + c.Value}}}}
					got, _ := b.Pick(next)
					b.Done(got)
					if got.ID != ep.ID {
						t.Fatalf("request with cookie %s went to %s, the first to %s", c.Value, got.ID, ep.ID)
					}
					if next.NewCookie != nil {
						t.Fatalf("a request carrying the cookie got a new one: %v", next.NewCookie)
					}
				}
			}
		})
	}
}

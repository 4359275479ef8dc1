package lb

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"
)

// BenchmarkPick measures Pick+Done per policy over 16 endpoints, serially
// and from all Ps at once (one shared Balancer, as in the waypoint).
func BenchmarkPick(b *testing.B) {
	policies := []struct {
		name string
		cfg  Config
		req  Request
	}{
		{name: "RoundRobin", cfg: Config{Policy: RoundRobin}},
		{name: "Random", cfg: Config{Policy: Random}},
		{name: "LeastRequest", cfg: Config{Policy: LeastRequest}},
		{name: "Maglev/header", cfg: Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashHeader, Name: "x-user"}}},
			req: &HTTPRequest{Req: &http.Request{Header: http.Header{"X-User": {"user-12345"}}}}},
		{name: "Maglev/cookie", cfg: Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashCookie, Name: "session"}}},
			req: &HTTPRequest{Req: &http.Request{Header: http.Header{"Cookie": {"theme=dark; session=0123456789abcdef"}}}}},
		{name: "Maglev/sourceIP", cfg: Config{Policy: Maglev, Hash: []HashPolicy{{Kind: HashSourceIP}}},
			req: &HTTPRequest{Source: netip.MustParseAddr("10.2.3.4")}},
	}
	for _, weighted := range []bool{false, true} {
		for _, p := range policies {
			eps := endpoints(16)
			name := p.name
			if weighted {
				for i := range eps {
					eps[i].Weight = uint32(1 + i%4)
				}
				name += "/weighted"
			}
			bal := mustNew(b, p.cfg, eps)
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					ep, _ := bal.Pick(p.req)
					bal.Done(ep)
				}
			})
			b.Run(name+"/parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						ep, _ := bal.Pick(p.req)
						bal.Done(ep)
					}
				})
			})
		}
	}
}

// BenchmarkRebuild measures Update (a full table rebuild) per policy.
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{16, 1000} {
		for _, cfg := range []Config{
			{Policy: LeastRequest},
			{Policy: Maglev, Hash: []HashPolicy{{Kind: HashSourceIP}}},
			{Policy: Maglev, MaglevTableSize: 4099, Hash: []HashPolicy{{Kind: HashSourceIP}}},
		} {
			name := fmt.Sprintf("%v/endpoints=%d", cfg.Policy, n)
			if cfg.Policy == Maglev {
				size := cfg.MaglevTableSize
				if size == 0 {
					size = DefaultMaglevTableSize
				}
				name = fmt.Sprintf("%v/table=%d/endpoints=%d", cfg.Policy, size, n)
			}
			eps := endpoints(n)
			bal := mustNew(b, cfg, eps)
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := bal.Update(eps); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

package mirror

import (
	"net/http"
	"testing"

	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// seq yields 0, 1, 2, ... modulo n, so n draws cover every slot once.
type seq struct{ i uint64 }

func (s *seq) Uint64N(n uint64) uint64 { v := s.i % n; s.i++; return v }

// never fails the test if a share that needs no draw draws anyway.
type never struct{ t *testing.T }

func (n never) Uint64N(uint64) uint64 { n.t.Fatal("drew a random number"); return 0 }

func TestSample(t *testing.T) {
	cases := []struct {
		name     string
		num, den uint32
		draws    int
		want     int
	}{
		{"unset mirrors all", 0, 0, 10, 10},
		{"percent 50", 50, 100, 100, 50},
		{"percent 0", 0, 100, 100, 0},
		{"percent 100", 100, 100, 100, 100},
		{"fraction 1/3", 1, 3, 300, 100},
		{"fraction 7/1000", 7, 1000, 1000, 7},
		{"fraction n/n", 5, 5, 10, 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := &gatewayv1.Mirror{Numerator: c.num, Denominator: c.den, Backend: &gatewayv1.BackendRef{Service: "ns/m"}}
			got := 0
			rnd := &seq{}
			for range c.draws {
				if Sample(m, rnd) {
					got++
				}
			}
			if got != c.want {
				t.Errorf("mirrored %d of %d, want %d", got, c.draws, c.want)
			}
		})
	}
	for _, m := range []*gatewayv1.Mirror{{}, {Numerator: 0, Denominator: 100}, {Numerator: 100, Denominator: 100}} {
		Sample(m, never{t})
	}
}

func TestFilterCollectsMirrors(t *testing.T) {
	a, b := &gatewayv1.BackendRef{Service: "ns/a", Port: 80}, &gatewayv1.BackendRef{Service: "ns/b", Port: 80}
	chain, err := filter.Compile([]*gatewayv1.Filter{
		{Kind: &gatewayv1.Filter_RequestMirror{RequestMirror: &gatewayv1.Mirror{Backend: a, Numerator: 100, Denominator: 100}}},
		{Kind: &gatewayv1.Filter_RequestMirror{RequestMirror: &gatewayv1.Mirror{Backend: b, Numerator: 0, Denominator: 100}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &filter.Request{Header: http.Header{}, Rand: &seq{}}
	chain.OnRequest(r)
	if len(r.Mirrors) != 1 || r.Mirrors[0] != a {
		t.Errorf("mirrors %v, want [a]", r.Mirrors)
	}
	for _, bad := range []*gatewayv1.Mirror{{Backend: &gatewayv1.BackendRef{}}, {Backend: a, Numerator: 3, Denominator: 2}} {
		if _, err := filter.Compile([]*gatewayv1.Filter{{Kind: &gatewayv1.Filter_RequestMirror{RequestMirror: bad}}}); err == nil {
			t.Errorf("mirror %v compiled", bad)
		}
	}
}

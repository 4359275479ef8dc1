package lb

import (
	"encoding/hex"
	"net/http"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// maglev is a Maglev lookup table (Eisenbud et al., NSDI 2016) with Envoy's
// weighted population. The table holds endpoint indexes, in uint16 while they
// fit, so the default 65537-entry table costs 128 KiB per backend.
type maglev struct {
	hash  []HashPolicy
	t16   []uint16
	t32   []uint32
	order []int // table value -> index into table.eps
}

func newMaglev(cfg Config, eps []Endpoint) *maglev {
	m := uint64(cfg.MaglevTableSize)
	// Build in ID order so the table does not depend on the order the
	// endpoints were listed in: replicas given the same set in a different
	// order must agree.
	order := make([]int, len(eps))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(eps[a].ID, eps[b].ID) })

	type entry struct {
		offset, skip, next uint64
		weight, target     uint64
	}
	entries := make([]entry, len(eps))
	var maxW uint64
	for i, idx := range order {
		h := xxhash.Sum64String(eps[idx].ID)
		entries[i] = entry{
			offset: h % m,
			skip:   mix64(h)%(m-1) + 1,
			weight: uint64(weightOf(eps[idx].Weight)),
		}
		maxW = max(maxW, entries[i].weight)
	}
	for i := range entries {
		entries[i].target = maxW
	}

	const empty = ^uint32(0)
	table := make([]uint32, m)
	for i := range table {
		table[i] = empty
	}
	filled := uint64(0)
	// An endpoint of weight w takes a slot on iterations where
	// iteration*w has caught up with its target, which grows by the maximum
	// weight each time: the heaviest takes one every iteration, one of a
	// third of its weight every third (Envoy's scheme).
	for iter := uint64(1); filled < m; iter++ {
		for i := range entries {
			if filled == m {
				break
			}
			e := &entries[i]
			if iter*e.weight < e.target {
				continue
			}
			e.target += maxW
			c := (e.offset + e.skip*e.next) % m
			for table[c] != empty {
				e.next++
				c = (e.offset + e.skip*e.next) % m
			}
			table[c] = uint32(i)
			e.next++
			filled++
		}
	}

	mg := &maglev{hash: cfg.Hash, order: order}
	if len(eps) <= 1<<16 {
		mg.t16 = make([]uint16, m)
		for i, v := range table {
			mg.t16[i] = uint16(v)
		}
	} else {
		mg.t32 = table
	}
	return mg
}

func (mg *maglev) pick(t *table, r *rng, req Request) int {
	h, ok := requestHash(mg.hash, r, req)
	if !ok {
		h = r.uint64()
	}
	if mg.t16 != nil {
		return mg.order[mg.t16[h%uint64(len(mg.t16))]]
	}
	return mg.order[mg.t32[h%uint64(len(mg.t32))]]
}

// requestHash evaluates the hash policies against req like Envoy: the hashes
// of the policies that yield a key are combined (rotate left by one, xor) up
// to the first terminal one that yields.
func requestHash(policies []HashPolicy, r *rng, req Request) (uint64, bool) {
	if req == nil {
		return 0, false
	}
	var hash uint64
	found := false
	for i := range policies {
		p := &policies[i]
		h, ok := policyHash(p, r, req)
		if !ok {
			continue
		}
		if found {
			hash = (hash<<1 | hash>>63) ^ h
		} else {
			hash = h
		}
		found = true
		if p.Terminal {
			break
		}
	}
	return hash, found
}

func policyHash(p *HashPolicy, r *rng, req Request) (uint64, bool) {
	switch p.Kind {
	case HashHeader:
		v, ok := req.Header(p.Name)
		if !ok {
			return 0, false
		}
		return xxhash.Sum64String(v), true
	case HashCookie:
		if v, ok := req.Cookie(p.Name); ok {
			return xxhash.Sum64String(v), true
		}
		if !p.Cookie.Generate {
			return 0, false
		}
		// The value only has to be stable for this client from now on; a
		// random one spreads new clients evenly.
		var raw [8]byte
		x := r.uint64()
		for i := range raw {
			raw[i] = byte(x >> (8 * i))
		}
		v := hex.EncodeToString(raw[:])
		c := &http.Cookie{Name: p.Name, Value: v, Path: p.Cookie.Path, HttpOnly: true}
		if p.Cookie.TTL > 0 {
			c.MaxAge = max(int(p.Cookie.TTL.Seconds()), 1)
		}
		req.SetCookie(c)
		return xxhash.Sum64String(v), true
	case HashSourceIP:
		a := req.SourceAddr()
		if !a.IsValid() {
			return 0, false
		}
		b := a.Unmap().As16()
		return xxhash.Sum64(b[:]), true
	}
	return 0, false
}

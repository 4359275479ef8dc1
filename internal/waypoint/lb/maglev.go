package lb

import (
	"encoding/hex"
	"net/http"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// maglev is a Maglev lookup table (Eisenbud et al., NSDI 2016) with Envoy's
// weighted population.
type maglev struct {
	hash []HashPolicy
	t16  []uint16 // index into table.eps by hash mod size
	t32  []uint32 // instead of t16 for 65535 endpoints or more
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

	entries := make([]maglevEntry, len(eps))
	var maxW uint64
	for i, idx := range order {
		h := xxhash.Sum64String(eps[idx].ID)
		entries[i] = maglevEntry{
			pos:    h % m,
			skip:   mix64(h)%(m-1) + 1,
			weight: uint64(weightOf(eps[idx].Weight)),
		}
		maxW = max(maxW, entries[i].weight)
	}
	for i := range entries {
		entries[i].target = maxW
	}
	mg := &maglev{hash: cfg.Hash}
	// uint16 entries halve the table (128 KiB at the default size), which
	// also keeps the build's random probes in cache.
	if len(eps) < 1<<16-1 {
		mg.t16 = make([]uint16, m)
		fillMaglev(mg.t16, entries, order, maxW)
	} else {
		mg.t32 = make([]uint32, m)
		fillMaglev(mg.t32, entries, order, maxW)
	}
	return mg
}

// fillMaglev populates table with the indexes in order (endpoint indexes,
// by ID) of entries. An endpoint of weight w takes a slot on iterations where
// iteration*w has caught up with its target, which grows by the maximum
// weight each time: the heaviest takes one every iteration, one of a third of
// its weight every third (Envoy's scheme).
func fillMaglev[T uint16 | uint32](table []T, entries []maglevEntry, order []int, maxW uint64) {
	empty := ^T(0)
	for i := range table {
		table[i] = empty
	}
	m := uint64(len(table))
	filled := uint64(0)
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
			for table[e.pos] != empty {
				e.advance(m)
			}
			table[e.pos] = T(order[i])
			e.advance(m)
			filled++
		}
	}
}

// maglevEntry is an endpoint during the table build. pos walks its
// permutation offset, offset+skip, offset+2*skip, ... mod m by addition: a
// division per probe would dominate the build.
type maglevEntry struct {
	pos, skip      uint64
	weight, target uint64
}

func (e *maglevEntry) advance(m uint64) {
	e.pos += e.skip
	if e.pos >= m {
		e.pos -= m
	}
}

func (mg *maglev) pick(t *table, r *rng, req Request) int {
	h, ok := requestHash(mg.hash, r, req)
	if !ok {
		h = r.uint64()
	}
	if mg.t16 != nil {
		return int(mg.t16[h%uint64(len(mg.t16))])
	}
	return int(mg.t32[h%uint64(len(mg.t32))])
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

// Package pmap is a persistent (immutable, structurally shared) map from
// string to V: a hash array mapped trie (HAMT) with 32-way nodes.
//
// It exists so that the xDS client can derive the next snapshot from the
// current one in time proportional to the change, not to the snapshot: a
// Builder copies only the nodes on the paths to the keys it changes (about
// log32(n) nodes per key, 3 for 10,000 keys) and shares every other node with
// the map it started from, which stays valid and unchanged.
//
// A Map is a small value; its zero value is the empty map. Maps are safe for
// concurrent readers. A Builder is not safe for concurrent use.
package pmap

import (
	"hash/maphash"
	"iter"
	"math/bits"
)

const (
	bitsPerLevel = 5
	fanout       = 1 << bitsPerLevel
	levelMask    = fanout - 1
	// maxShift is the shift of the deepest level that still has hash bits
	// (levels use shifts 0, 5, ..., 60); keys whose 64-bit hashes are equal
	// end up together in a collision node instead.
	maxShift = 60
)

// seed is per process: the map is never persisted or sent anywhere, and a
// random seed keeps an adversary who chooses resource names from forcing
// collisions.
var seed = maphash.MakeSeed()

func defaultHash(k string) uint64 { return maphash.String(seed, k) }

// Map is an immutable map from string to V.
type Map[V any] struct {
	root *node[V]
	len  int
	// hash is nil except in tests, which use a weak hash to force collisions.
	hash func(string) uint64
}

// owner marks the nodes a Builder created; only they may be edited in place.
type owner struct{ _ byte } // non-zero size: distinct allocations, distinct pointers

// node is either a bitmap node (collision false), whose entries are the
// present slots in slot order, or a collision node (collision true), whose
// entries are leaves that all share one full 64-bit hash.
type node[V any] struct {
	owner     *owner
	bitmap    uint32
	collision bool
	entries   []entry[V]
}

// entry is a leaf (child nil: key, val and hash of key) or a link to a child
// node. For a collision child, hash is the hash its keys share, so the child
// can be moved between levels like a leaf.
type entry[V any] struct {
	hash  uint64
	key   string
	val   V
	child *node[V]
}

func (m Map[V]) hashOf(k string) uint64 {
	if m.hash != nil {
		return m.hash(k)
	}
	return defaultHash(k)
}

// Len is the number of keys in m.
func (m Map[V]) Len() int { return m.len }

// Get returns the value stored under k.
func (m Map[V]) Get(k string) (V, bool) {
	n := m.root
	if n == nil {
		var zero V
		return zero, false
	}
	h := m.hashOf(k)
	for shift := uint(0); ; shift += bitsPerLevel {
		if n.collision {
			for i := range n.entries {
				if n.entries[i].key == k {
					return n.entries[i].val, true
				}
			}
			break
		}
		bit := uint32(1) << ((h >> shift) & levelMask)
		if n.bitmap&bit == 0 {
			break
		}
		e := &n.entries[bits.OnesCount32(n.bitmap&(bit-1))]
		if e.child == nil {
			if e.key == k {
				return e.val, true
			}
			break
		}
		if e.child.collision && e.hash != h {
			break
		}
		n = e.child
	}
	var zero V
	return zero, false
}

// All iterates over every key and value of m, in an order that depends on
// the hashes of the keys (stable for one Map value within one process).
func (m Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		if m.root != nil {
			m.root.all(yield)
		}
	}
}

func (n *node[V]) all(yield func(string, V) bool) bool {
	for i := range n.entries {
		e := &n.entries[i]
		if e.child != nil {
			if !e.child.all(yield) {
				return false
			}
		} else if !yield(e.key, e.val) {
			return false
		}
	}
	return true
}

// Keys iterates over the keys of m in the order of All.
func (m Map[V]) Keys() iter.Seq[string] {
	return func(yield func(string) bool) {
		for k := range m.All() {
			if !yield(k) {
				return
			}
		}
	}
}

// Set returns a map holding m's keys plus k -> v. m is unchanged.
func (m Map[V]) Set(k string, v V) Map[V] {
	b := m.Builder()
	b.Set(k, v)
	return b.Map()
}

// Delete returns a map holding m's keys minus k. m is unchanged.
func (m Map[V]) Delete(k string) Map[V] {
	b := m.Builder()
	b.Delete(k)
	return b.Map()
}

// Builder returns a Builder that starts from m. m itself never changes.
func (m Map[V]) Builder() *Builder[V] {
	return &Builder[V]{m: m, owner: new(owner)}
}

// Builder applies a batch of changes to a Map. The first change on a path
// copies its nodes; later changes in the same batch edit those copies in
// place, so a batch of k changes costs O(k log n) however they overlap, and
// building a map of n keys from empty allocates O(n) rather than O(n log n).
type Builder[V any] struct {
	m     Map[V]
	owner *owner
}

// Len is the number of keys the map being built holds now.
func (b *Builder[V]) Len() int { return b.m.len }

// Get returns the value currently stored under k in the map being built.
func (b *Builder[V]) Get(k string) (V, bool) { return b.m.Get(k) }

// Map returns the map built so far. The Builder may be used further: its
// later changes copy again, so the returned Map is never affected by them.
func (b *Builder[V]) Map() Map[V] {
	b.owner = new(owner)
	return b.m
}

// Set stores v under k.
func (b *Builder[V]) Set(k string, v V) {
	h := b.m.hashOf(k)
	leaf := entry[V]{hash: h, key: k, val: v}
	if b.m.root == nil {
		b.m.root = &node[V]{owner: b.owner}
	}
	var added bool
	b.m.root, added = b.set(b.m.root, 0, leaf)
	if added {
		b.m.len++
	}
}

// editable returns n itself if this Builder made it, else a copy it owns.
func (b *Builder[V]) editable(n *node[V], extra int) *node[V] {
	if n.owner == b.owner {
		return n
	}
	c := &node[V]{owner: b.owner, bitmap: n.bitmap, collision: n.collision}
	c.entries = make([]entry[V], len(n.entries), len(n.entries)+extra)
	copy(c.entries, n.entries)
	return c
}

// set stores leaf in the subtree n at level shift and returns the (possibly
// new) subtree root and whether the key was not there before.
func (b *Builder[V]) set(n *node[V], shift uint, leaf entry[V]) (*node[V], bool) {
	if n.collision {
		for i := range n.entries {
			if n.entries[i].key == leaf.key {
				n = b.editable(n, 0)
				n.entries[i] = leaf
				return n, false
			}
		}
		n = b.editable(n, 1)
		n.entries = append(n.entries, leaf)
		return n, true
	}
	bit := uint32(1) << ((leaf.hash >> shift) & levelMask)
	idx := bits.OnesCount32(n.bitmap & (bit - 1))
	if n.bitmap&bit == 0 {
		n = b.editable(n, 1)
		n.entries = append(n.entries, entry[V]{})
		copy(n.entries[idx+1:], n.entries[idx:])
		n.entries[idx] = leaf
		n.bitmap |= bit
		return n, true
	}
	e := n.entries[idx]
	switch {
	case e.child == nil && e.key == leaf.key:
		n = b.editable(n, 0)
		n.entries[idx] = leaf
		return n, false
	case e.child == nil || (e.child.collision && e.hash != leaf.hash):
		// A leaf or a collision node for another hash sits in the slot:
		// push both one level down, where they may part.
		// The link carries leaf's hash in case pair returns a collision node.
		n = b.editable(n, 0)
		n.entries[idx] = entry[V]{hash: leaf.hash, child: b.pair(shift+bitsPerLevel, e, leaf)}
		return n, true
	default:
		child, added := b.set(e.child, shift+bitsPerLevel, leaf)
		if child != e.child {
			n = b.editable(n, 0)
			n.entries[idx].child = child
		}
		return n, added
	}
}

// pair returns a node at level shift holding a and b, which are leaves or
// collision nodes (as entries) with different keys.
func (b *Builder[V]) pair(shift uint, x, y entry[V]) *node[V] {
	if x.hash == y.hash {
		// Only leaves can meet here with equal hashes: a collision entry with
		// y's hash would have taken y in set.
		return &node[V]{owner: b.owner, collision: true, entries: []entry[V]{x, y}}
	}
	if shift > maxShift {
		panic("pmap: different hashes agree on every level") // unreachable: 13 levels cover 64 bits
	}
	xi, yi := (x.hash>>shift)&levelMask, (y.hash>>shift)&levelMask
	if xi == yi {
		return &node[V]{owner: b.owner, bitmap: 1 << xi, entries: []entry[V]{{hash: x.hash, child: b.pair(shift+bitsPerLevel, x, y)}}}
	}
	if xi > yi {
		x, y = y, x
	}
	return &node[V]{owner: b.owner, bitmap: 1<<xi | 1<<yi, entries: []entry[V]{x, y}}
}

// Delete removes k, if present.
func (b *Builder[V]) Delete(k string) {
	if b.m.root == nil {
		return
	}
	root, removed := b.del(b.m.root, 0, k, b.m.hashOf(k))
	if !removed {
		return
	}
	b.m.len--
	if len(root.entries) == 0 {
		root = nil
	}
	b.m.root = root
}

// del removes k from the subtree n at level shift. It returns the new
// subtree root, which may be empty or hold just one entry (the caller
// collapses such nodes), and whether k was there.
func (b *Builder[V]) del(n *node[V], shift uint, k string, h uint64) (*node[V], bool) {
	if n.collision {
		for i := range n.entries {
			if n.entries[i].key == k {
				n = b.editable(n, 0)
				n.entries = removeAt(n.entries, i)
				return n, true
			}
		}
		return n, false
	}
	bit := uint32(1) << ((h >> shift) & levelMask)
	if n.bitmap&bit == 0 {
		return n, false
	}
	idx := bits.OnesCount32(n.bitmap & (bit - 1))
	e := n.entries[idx]
	if e.child == nil {
		if e.key != k {
			return n, false
		}
		n = b.editable(n, 0)
		n.entries = removeAt(n.entries, idx)
		n.bitmap &^= bit
		return n, true
	}
	if e.child.collision && e.hash != h {
		return n, false
	}
	child, removed := b.del(e.child, shift+bitsPerLevel, k, h)
	if !removed {
		return n, false
	}
	n = b.editable(n, 0)
	switch {
	case len(child.entries) == 0:
		n.entries = removeAt(n.entries, idx)
		n.bitmap &^= bit
	case len(child.entries) == 1 && (child.collision || child.entries[0].child == nil || child.entries[0].child.collision):
		// One leaf (or one collision node) left below: lift it into this
		// slot, so the trie stays as shallow as its keys require and Get
		// never walks chains of single-entry nodes.
		n.entries[idx] = child.entries[0]
	default:
		n.entries[idx] = entry[V]{hash: h, child: child}
	}
	return n, true
}

func removeAt[V any](es []entry[V], i int) []entry[V] {
	copy(es[i:], es[i+1:])
	es[len(es)-1] = entry[V]{} // drop references for the GC
	return es[:len(es)-1]
}

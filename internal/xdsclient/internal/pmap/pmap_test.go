package pmap

import (
	"fmt"
	"hash/fnv"
	"maps"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func fnv64(k string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(k))
	return h.Sum64()
}

// hashes are the hash functions every model test runs with: the real one,
// and weak ones that force full 64-bit collisions and long shared prefixes
// (deep paths, pair splitting at the last level).
var hashes = []struct {
	name string
	fn   func(string) uint64
}{
	{"maphash", nil},
	{"8 values", func(k string) uint64 { return fnv64(k) % 8 }},
	{"top bits only", func(k string) uint64 { return (fnv64(k) % 16) << 60 }},
	{"top 6 bits", func(k string) uint64 { return fnv64(k) << 58 }},
	{"all equal", func(string) uint64 { return 42 }},
}

func contents[V any](m Map[V]) map[string]V {
	out := map[string]V{}
	for k, v := range m.All() {
		if _, dup := out[k]; dup {
			panic(fmt.Sprintf("All yields %q twice", k))
		}
		out[k] = v
	}
	return out
}

// check compares m with want through every accessor and verifies the trie's
// invariants.
func check(t *testing.T, what string, m Map[int], want map[string]int) {
	t.Helper()
	if diff := cmp.Diff(want, contents(m)); diff != "" {
		t.Fatalf("%s: All differs from the model (-want +got):\n%s", what, diff)
	}
	if m.Len() != len(want) {
		t.Fatalf("%s: Len = %d, want %d", what, m.Len(), len(want))
	}
	for k, v := range want {
		if got, ok := m.Get(k); !ok || got != v {
			t.Fatalf("%s: Get(%q) = %d, %v; want %d, true", what, k, got, ok, v)
		}
	}
	for _, k := range []string{"absent", "k-999999", ""} {
		if _, inModel := want[k]; inModel {
			continue
		}
		if got, ok := m.Get(k); ok {
			t.Fatalf("%s: Get(%q) = %d, true for a key that is not there", what, k, got)
		}
	}
	if got := slices.Collect(m.Keys()); len(got) != len(want) {
		t.Fatalf("%s: Keys yields %d keys, want %d", what, len(got), len(want))
	}
	if m.root != nil {
		if n := invariants(t, what, m, m.root, 0, 0, true); n != len(want) {
			t.Fatalf("%s: trie holds %d leaves, want %d", what, n, len(want))
		}
	}
}

// invariants walks the node at level shift whose keys' hashes have the low
// shift bits equal to prefix, and returns how many leaves it holds.
func invariants(t *testing.T, what string, m Map[int], n *node[int], shift uint, prefix uint64, root bool) int {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: level %d: %s", what, shift/bitsPerLevel, fmt.Sprintf(format, args...))
	}
	if n.collision {
		if len(n.entries) < 2 {
			fail("collision node with %d entries, want >= 2", len(n.entries))
		}
		for _, e := range n.entries {
			if e.child != nil || m.hashOf(e.key) != n.entries[0].hash || e.hash != n.entries[0].hash {
				fail("collision node entry %q does not share the node's hash", e.key)
			}
		}
		return len(n.entries)
	}
	if bits.OnesCount32(n.bitmap) != len(n.entries) {
		fail("bitmap has %d bits, node has %d entries", bits.OnesCount32(n.bitmap), len(n.entries))
	}
	if len(n.entries) == 0 && !root {
		fail("empty non-root node")
	}
	if !root && len(n.entries) == 1 && (n.entries[0].child == nil || n.entries[0].child.collision) {
		fail("non-root node holds a single leaf or collision node; it should have been lifted")
	}
	total := 0
	i := 0
	for slot := range uint64(fanout) {
		if n.bitmap&(1<<slot) == 0 {
			continue
		}
		e := n.entries[i]
		i++
		p := prefix | slot<<shift
		mask := uint64(1)<<(shift+bitsPerLevel) - 1
		if shift+bitsPerLevel >= 64 {
			mask = ^uint64(0)
		}
		switch {
		case e.child == nil:
			if h := m.hashOf(e.key); h != e.hash || h&mask != p {
				fail("leaf %q in slot %d has hash %#x (stored %#x), not under prefix %#x", e.key, slot, h, e.hash, p)
			}
			total++
		case e.child.collision:
			if e.hash&mask != p || e.hash != e.child.entries[0].hash {
				fail("collision link in slot %d has hash %#x, not under prefix %#x or not its keys' hash", slot, e.hash, p)
			}
			total += invariants(t, what, m, e.child, shift+bitsPerLevel, p, false)
		default:
			total += invariants(t, what, m, e.child, shift+bitsPerLevel, p, false)
		}
	}
	return total
}

func TestModel(t *testing.T) {
	for _, h := range hashes {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(1, uint64(len(h.name))))
			m := Map[int]{hash: h.fn}
			want := map[string]int{}
			type version struct {
				m    Map[int]
				want map[string]int
			}
			var versions []version
			const keys = 300
			for step := range 1200 {
				// A batch of 1-8 changes through one Builder, sometimes
				// touching the same key twice.
				b := m.Builder()
				for range 1 + rng.IntN(8) {
					k := fmt.Sprintf("k-%d", rng.IntN(keys))
					if rng.IntN(3) == 0 {
						b.Delete(k)
						delete(want, k)
					} else {
						b.Set(k, step)
						want[k] = step
					}
					if b.Len() != len(want) {
						t.Fatalf("step %d: Builder.Len = %d, want %d", step, b.Len(), len(want))
					}
				}
				m = b.Map()
				check(t, fmt.Sprintf("step %d", step), m, want)
				if step%100 == 0 {
					versions = append(versions, version{m, maps.Clone(want)})
				}
			}
			// Every earlier map is still exactly what it was.
			for i, v := range versions {
				check(t, fmt.Sprintf("version %d", i), v.m, v.want)
			}
			// Delete everything: back to the empty map.
			for k := range want {
				m = m.Delete(k)
			}
			check(t, "emptied", m, map[string]int{})
			if m.root != nil {
				t.Fatal("emptied map still has a root node")
			}
		})
	}
}

func TestSetDeleteLeaveReceiverUnchanged(t *testing.T) {
	for _, h := range hashes {
		t.Run(h.name, func(t *testing.T) {
			base := Map[int]{hash: h.fn}
			want := map[string]int{}
			for i := range 100 {
				k := fmt.Sprintf("k-%d", i)
				base = base.Set(k, i)
				want[k] = i
			}
			for i := range 100 {
				k := fmt.Sprintf("k-%d", i)
				replaced := base.Set(k, -1)
				deleted := base.Delete(k)
				added := base.Set("new", 7)
				check(t, "base after Set/Delete on it", base, want)
				if got, _ := replaced.Get(k); got != -1 {
					t.Fatalf("replaced.Get(%q) = %d, want -1", k, got)
				}
				if _, ok := deleted.Get(k); ok || deleted.Len() != 99 {
					t.Fatalf("deleted still holds %q or has Len %d, want 99", k, deleted.Len())
				}
				if added.Len() != 101 {
					t.Fatalf("added.Len = %d, want 101", added.Len())
				}
			}
			if got := base.Delete("absent"); got.Len() != 100 || got.root != base.root {
				t.Fatal("deleting an absent key changed the map")
			}
		})
	}
}

func TestBuilderAfterMap(t *testing.T) {
	b := Map[int]{}.Builder()
	b.Set("a", 1)
	b.Set("b", 2)
	first := b.Map()
	b.Set("a", 10)
	b.Delete("b")
	b.Set("c", 3)
	second := b.Map()
	check(t, "first", first, map[string]int{"a": 1, "b": 2})
	check(t, "second", second, map[string]int{"a": 10, "c": 3})
}

// TestUpdateCostIsLogarithmic pins the point of the package: changing one
// key of a large map allocates a few nodes, not a copy of the map.
func TestUpdateCostIsLogarithmic(t *testing.T) {
	for _, n := range []int{10_000, 100_000} {
		b := Map[int]{}.Builder()
		for i := range n {
			b.Set(fmt.Sprintf("ns-%02d/wl-%06d", i%20, i), i)
		}
		m := b.Map()
		i := 0
		allocs := testing.AllocsPerRun(100, func() {
			i++
			nb := m.Builder()
			nb.Set(fmt.Sprintf("ns-%02d/wl-%06d", i%20, i), -i)
			nb.Delete(fmt.Sprintf("ns-%02d/wl-%06d", (i+1)%20, i+1))
			_ = nb.Map()
		})
		// Builder + owners + two Sprintf + per changed key (node + entries)
		// for each of ~log32(n)+1 levels.
		if limit := 6.0 + 2*2*5; allocs > limit {
			t.Errorf("n=%d: one Set and one Delete allocate %.0f times, want <= %.0f (O(log n))", n, allocs, limit)
		}
	}
}

// TestConcurrentReaders runs readers on published maps while a writer keeps
// deriving new ones; with -race this checks that a Builder never writes to
// a node reachable from a map it returned.
func TestConcurrentReaders(t *testing.T) {
	m := Map[int]{}
	for i := range 1000 {
		m = m.Set(fmt.Sprint(i), i)
	}
	var (
		mu        sync.Mutex
		published = m
		wg        sync.WaitGroup
		done      = make(chan struct{})
	)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				mu.Lock()
				cur := published
				mu.Unlock()
				n := 0
				for k, v := range cur.All() {
					if got, ok := cur.Get(k); !ok || got != v {
						t.Errorf("Get(%q) = %d, %v during iteration that saw %d", k, got, ok, v)
						return
					}
					n++
				}
				if n != cur.Len() {
					t.Errorf("iterated %d keys, Len is %d", n, cur.Len())
					return
				}
			}
		})
	}
	b := m.Builder()
	for i := range 5000 {
		b.Set(fmt.Sprint(i%1500), i)
		if i%3 == 0 {
			b.Delete(fmt.Sprint((i * 7) % 1500))
		}
		if i%10 == 0 {
			next := b.Map()
			mu.Lock()
			published = next
			mu.Unlock()
		}
	}
	close(done)
	wg.Wait()
}

func BenchmarkGet(b *testing.B) {
	const n = 10_000
	m := Map[int]{}
	keys := make([]string, n)
	bl := m.Builder()
	for i := range keys {
		keys[i] = fmt.Sprintf("ns-%02d/wl-%05d", i%20, i)
		bl.Set(keys[i], i)
	}
	m = bl.Map()
	b.Run("pmap", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, ok := m.Get(keys[i%n]); !ok {
				b.Fatal("missing")
			}
		}
	})
	gm := maps.Collect(m.All())
	b.Run("builtin", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, ok := gm[keys[i%n]]; !ok {
				b.Fatal("missing")
			}
		}
	})
}

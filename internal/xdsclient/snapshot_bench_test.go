package xdsclient

import (
	"fmt"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
	discovery "github.com/ambitmesh/ambit/proto/ambit/xds/v1"
)

// benchWorkloads is the size of the synthetic mesh in bench/controlplane
// (10,000 Workloads), which is what one node proxy holds in the e2e harness.
const benchWorkloads = 10_000

func benchWorkload(b *testing.B, i, rev int) *anypb.Any {
	b.Helper()
	addr := netip.AddrFrom4([4]byte{10, byte(rev), byte(i >> 8), byte(i)})
	a, err := anypb.New(&workloadv1.Workload{
		Namespace:      fmt.Sprintf("ns-%02d", i%20),
		Name:           fmt.Sprintf("wl-%05d", i),
		Uid:            fmt.Sprintf("uid-%05d", i),
		ServiceAccount: fmt.Sprintf("sa-%04d", i/10),
		Identity:       fmt.Sprintf("spiffe://cluster.local/ns/ns-%02d/sa/sa-%04d", i%20, i/10),
		Addresses:      [][]byte{addr.AsSlice()},
		Node:           fmt.Sprintf("node-%02d", i%50),
		Labels:         map[string]string{"app": fmt.Sprintf("svc-%04d", i/10)},
	})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func benchInitial(b *testing.B) *discovery.DeltaDiscoveryResponse {
	b.Helper()
	initial := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURLOf[*workloadv1.Workload](), Nonce: "0"}
	for i := range benchWorkloads {
		initial.Resources = append(initial.Resources, &discovery.Resource{
			Name: benchName(i), Version: "1", Resource: benchWorkload(b, i, 1),
		})
	}
	return initial
}

func benchName(i int) string { return fmt.Sprintf("ns-%02d/wl-%05d", i%20, i) }

func benchSnapshot(b *testing.B) *Snapshot {
	b.Helper()
	s, err := applyDelta(newEmptySnapshot([]string{TypeURLOf[*workloadv1.Workload](), strURL}), benchInitial(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkApplyDelta measures what one node proxy pays for a one-Workload
// change in a 10,000-Workload mesh: applying a delta of one updated resource
// to a snapshot that holds them all. It must not grow with the snapshot.
func BenchmarkApplyDelta(b *testing.B) {
	wlURL := TypeURLOf[*workloadv1.Workload]()
	cur := benchSnapshot(b)
	// Two alternating versions of one Workload, so every op is a real change.
	const changed = 4242
	deltas := [2]*discovery.DeltaDiscoveryResponse{}
	for rev := range deltas {
		deltas[rev] = &discovery.DeltaDiscoveryResponse{TypeUrl: wlURL, Nonce: fmt.Sprint(rev), Resources: []*discovery.Resource{{
			Name: benchName(changed), Version: fmt.Sprint(rev + 2), Resource: benchWorkload(b, changed, rev+2),
		}}}
	}

	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		next, err := applyDelta(cur, deltas[i%2], nil)
		if err != nil {
			b.Fatal(err)
		}
		cur = next
	}
	b.StopTimer()
	if got := cur.Len(wlURL); got != benchWorkloads {
		b.Fatalf("snapshot holds %d Workloads after the updates, want %d", got, benchWorkloads)
	}
}

// BenchmarkApplyInitialPush is the initial sync of the same 10,000 Workloads
// (dominated by unpacking the payloads).
func BenchmarkApplyInitialPush(b *testing.B) {
	initial := benchInitial(b)
	empty := newEmptySnapshot([]string{TypeURLOf[*workloadv1.Workload](), strURL})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := applyDelta(empty, initial, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshotRead is what readers on the data path and in Validate pay.
func BenchmarkSnapshotRead(b *testing.B) {
	s := benchSnapshot(b)
	wlURL := TypeURLOf[*workloadv1.Workload]()
	names := make([]string, benchWorkloads)
	for i := range names {
		names[i] = benchName((i * 7919) % benchWorkloads) // spread over the trie
	}
	b.Run("Get", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, ok := s.Get(wlURL, names[i%benchWorkloads]); !ok {
				b.Fatal("missing")
			}
		}
	})
	b.Run("All", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			for range s.All(wlURL) {
				n++
			}
			if n != benchWorkloads {
				b.Fatalf("All yielded %d", n)
			}
		}
	})
	b.Run("Names", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if len(s.Names(wlURL)) != benchWorkloads {
				b.Fatal("short")
			}
		}
	})
}

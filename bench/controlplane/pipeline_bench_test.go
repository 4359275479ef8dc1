package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/control/xds"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// BenchmarkControlPlane runs the whole control plane (internal/control:
// watched file source, translate, xDS server) in the benchmark's process
// on the synthetic config folder, with node-proxy clients connected, and
// measures one workload edit (atomic rename of its namespace file) until
// every client holds the new address. It is the in-process twin of
// bench/cmd/controlplane-e2e, there to be profiled: the ambit binary serves
// no /debug/pprof, so `-cpuprofile` / `-memprofile` here show where the
// control plane spends a change. Debounce is 1µs so that the figure is the
// work, not the wait.
func BenchmarkControlPlane(b *testing.B) {
	for _, clients := range []int{1, 50} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) { benchControlPlane(b, clients) })
	}
}

func benchControlPlane(b *testing.B, clients int) {
	c := NewConfig(Default)
	dir := writeConfig(b, c)
	discard := slog.New(slog.DiscardHandler)
	cp := control.New(control.Options{ConfigDir: dir, StateDir: b.TempDir(), XDSAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		Debounce: time.Microsecond, Logger: discard})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() {
		if err := cp.Run(ctx); err != nil {
			b.Error(err)
		}
	})
	select {
	case <-cp.Ready():
	case <-time.After(2 * time.Minute):
		b.Fatal("control plane not ready after 2m")
	}
	if r := cp.Result(); r == nil || len(r.Rejected()) > 0 || len(r.SourceErrors) > 0 {
		b.Fatal("the control plane's first translation has rejected objects or source errors")
	}

	var cls []*xdsclient.Client
	for i := range clients {
		node := fmt.Sprintf("node-%02d", i)
		creds, err := JoinNode(ctx, cp.AdminAddr().String(), cp.XDSAddr().String(), node)
		if err != nil {
			b.Fatal(err)
		}
		cl, err := xdsclient.New(xdsclient.Config{Address: cp.XDSAddr().String(), NodeID: "node/" + node,
			TransportCredentials: creds, TypeURLs: xds.NodeTypes, Logger: discard})
		if err != nil {
			b.Fatal(err)
		}
		cls = append(cls, cl)
		wg.Go(func() { _ = cl.Run(ctx) })
	}
	// Synced: every client holds all workloads.
	waitClients(b, cls, func(s *xdsclient.Snapshot) bool { return s.Synced() && s.Len(xds.TypeWorkload) == Default.Workloads })

	i := 0
	for b.Loop() {
		i++
		w := (i * 7919) % Default.Workloads
		ip := netip.AddrFrom4([4]byte{172, 17, byte(i >> 8), byte(i)})
		ref, _ := c.Workload(w)
		b.StopTimer()
		install, err := c.Stage(dir, c.SetWorkloadAddress(w, ip))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := install(); err != nil {
			b.Fatal(err)
		}
		name := ref.String()
		waitClients(b, cls, func(s *xdsclient.Snapshot) bool {
			r, ok := xdsclient.Get[*workloadv1.Workload](s, name)
			if !ok || len(r.GetAddresses()) != 1 {
				return false
			}
			got, _ := netip.AddrFromSlice(r.GetAddresses()[0])
			return got == ip
		})
	}
}

// waitClients waits until ok holds for every client, at most a minute.
func waitClients(b *testing.B, cls []*xdsclient.Client, ok func(*xdsclient.Snapshot) bool) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, c := range cls {
		for {
			ch := c.Changed()
			if ok(c.Current()) {
				break
			}
			select {
			case <-ctx.Done():
				b.Fatalf("client %d: condition not reached within 1m", i)
			case <-ch:
			}
		}
	}
}

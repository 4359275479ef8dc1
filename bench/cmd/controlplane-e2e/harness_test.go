package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/bench/controlplane"
	"github.com/ambitmesh/ambit/internal/control/xds"
)

// TestHarnessSmall runs the whole harness — build, real control plane,
// real xDS clients, file edits — on a small mesh, so that the harness keeps
// working. The figures are not checked against targets here, only that they
// were measured and that a one-workload edit reaches each client as that
// one Workload.
func TestHarnessSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ambit binary; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const clients, changes = 3, 4
	sz := controlplane.Size{Workloads: 200, Services: 20, Routes: 20, Nodes: 4, Namespaces: 4, Waypoints: 2}
	var progress bytes.Buffer
	rep, err := Run(ctx, Options{Size: sz, Clients: clients, Changes: changes, Debounce: 5 * time.Millisecond,
		Timeout: time.Minute, WorkDir: t.TempDir(), Progress: &progress})
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	if len(rep.Change) != changes || len(rep.PerClient) != changes*clients || len(rep.InitialPerClient) != clients {
		t.Fatalf("report has %d changes, %d per-client and %d initial samples; want %d, %d, %d",
			len(rep.Change), len(rep.PerClient), len(rep.InitialPerClient), changes, changes*clients, clients)
	}
	if len(rep.Apply) != changes {
		t.Errorf("control plane logged %d applies for %d changes (a change applied twice, or one missed)", len(rep.Apply), changes)
	}
	for _, d := range append(rep.Change, rep.InitialSync, rep.Ready) {
		if d <= 0 {
			t.Errorf("non-positive duration in report: %+v", rep)
			break
		}
	}
	// Every client holds 200 workloads: the initial push carries at least
	// all of them to every client.
	if got := rep.InitialSent.Resources[xds.TypeWorkload]; got < float64(clients*sz.Workloads) {
		t.Errorf("initial push sent %v Workloads, want at least %d", got, clients*sz.Workloads)
	}
	// A one-workload change is one Workload per client, nothing else.
	for typ, n := range rep.ChangeSent.Resources {
		if typ != xds.TypeWorkload || n != clients*changes {
			t.Errorf("changes sent %v resources of %s; want %d Workloads in all and nothing else", n, typ, clients*changes)
		}
	}
	if rep.RSSAfterSync <= 0 || rep.HWMEnd < rep.RSSEnd {
		t.Errorf("memory: RSS %d after sync, %d (peak %d) at the end", rep.RSSAfterSync, rep.RSSEnd, rep.HWMEnd)
	}
	var out bytes.Buffer
	rep.Print(&out)
	if !strings.Contains(out.String(), "change -> all clients, p99") {
		t.Errorf("printed report lacks the p99 row:\n%s", out.String())
	}
}

// Command controlplane-e2e measures the real control plane end to end: it
// builds `ambit`, writes the synthetic mesh of bench/controlplane as a
// folder of YAML, runs `ambit control` on it, connects node-proxy xDS
// clients (internal/xdsclient) and measures the initial sync, the
// propagation of single-workload edits to every client, what was sent and
// the control plane's memory. See bench/README.md.
//
//	go run ./bench/cmd/controlplane-e2e [-clients 50] [-changes 30] [-debounce 10ms]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ambitmesh/ambit/bench/controlplane"
	"github.com/ambitmesh/ambit/internal/control/xds"
)

func main() {
	var (
		o       Options
		asJSON  bool
		targets = controlplane.Default
	)
	flag.StringVar(&o.Ambit, "ambit", "", "ambit binary to run (default: built into the work dir as make build builds it)")
	flag.IntVar(&o.Clients, "clients", 50, "node-proxy xDS clients (distinct nodes)")
	flag.IntVar(&o.Changes, "changes", 30, "single-workload address edits to measure")
	flag.DurationVar(&o.Debounce, "debounce", 10*time.Millisecond, "the control plane's --debounce")
	flag.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "bound on startup, initial sync and each change")
	flag.StringVar(&o.WorkDir, "workdir", "", "keep binary, config, CA state and control plane log here (default: temporary, removed)")
	flag.IntVar(&targets.Workloads, "workloads", targets.Workloads, "synthetic mesh: workloads")
	flag.IntVar(&targets.Services, "services", targets.Services, "synthetic mesh: services")
	flag.IntVar(&targets.Routes, "routes", targets.Routes, "synthetic mesh: HTTPRoutes")
	flag.IntVar(&targets.Nodes, "nodes", targets.Nodes, "synthetic mesh: nodes")
	flag.BoolVar(&asJSON, "json", false, "print the report as JSON instead of a table")
	controlEnv := flag.String("control-env", "", "space-separated VAR=value pairs for the control plane, e.g. GODEBUG=gctrace=1")
	flag.Parse()
	o.Size = targets
	o.Progress = os.Stderr
	o.ControlEnv = strings.Fields(*controlEnv)

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	rep, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane-e2e:", err)
		os.Exit(1)
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return
	}
	rep.Print(os.Stdout)
}

// Print writes the report as a Markdown table with the targets.
func (r *Report) Print(w io.Writer) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	mb := func(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/1e6) }
	changes := float64(len(r.Change))
	perChange := func(m map[string]float64) string {
		var parts []string
		total := 0.0
		for _, t := range slices.Sorted(maps.Keys(m)) {
			total += m[t]
			parts = append(parts, fmt.Sprintf("%s %.1f", shortType(t), m[t]/changes))
		}
		if len(parts) == 0 {
			return "0"
		}
		return fmt.Sprintf("%.1f (%s)", total/changes, strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "mesh: %d workloads, %d services, %d HTTPRoutes, %d nodes; %d files, %.1f MiB of YAML\n",
		r.Size.Workloads, r.Size.Services, r.Size.Routes, r.Size.Nodes, r.Files, float64(r.ConfigSize)/(1<<20))
	fmt.Fprintf(w, "clients: %d node proxies (%s); control plane --debounce %s; %s/%s, %d CPUs, %s\n\n",
		r.Clients, strings.Join(shortTypes(xds.NodeTypes), ", "), r.Debounce, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Fprintln(w, "| measurement | value | target |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	row := func(what, value, target string) { fmt.Fprintf(w, "| %s | %s | %s |\n", what, value, target) }
	row("process start -> /readyz", ms(r.Ready), "")
	row("initial translate + xDS update (control plane log)", ms(r.InitialApply), "")
	row(fmt.Sprintf("initial full sync, all %d clients", r.Clients), ms(r.InitialSync), "")
	row("initial full sync, per client p50", ms(pct(r.InitialPerClient, 50)), "")
	row("initial push, bytes sent (all clients)", fmt.Sprintf("%.1f MiB", r.InitialSent.total(r.InitialSent.Bytes)/(1<<20)), "")
	row("initial push, resources sent (all clients)", fmt.Sprintf("%.0f", r.InitialSent.total(r.InitialSent.Resources)), "")
	row(fmt.Sprintf("change -> all clients, p50 (%d changes)", len(r.Change)), ms(pct(r.Change, 50)), "")
	row(fmt.Sprintf("change -> all clients, p99 (%d changes)", len(r.Change)), ms(pct(r.Change, 99)), "≤ 100 ms")
	row("change -> all clients, max", ms(slices.Max(r.Change)), "")
	row("change -> one client, p50 / p99", ms(pct(r.PerClient, 50))+" / "+ms(pct(r.PerClient, 99)), "")
	p50max := func(d []time.Duration) string { return ms(pct(d, 50)) + " / " + ms(slices.Max(d)) }
	row("  rename -> translate starts (debounce + file source), p50 / max", p50max(r.Source), "")
	row("  translate + xDS update, p50 / max", p50max(r.Apply), "")
	row("    of which view computation (mean)", ms(r.ViewCompute), "")
	row("  update done -> last client has it, p50 / max", p50max(r.Push), "")
	row("control plane CPU per change (user+sys)", ms(r.CPU/time.Duration(len(r.Change))), "")
	row(fmt.Sprintf("harness (%d clients) CPU per change", r.Clients), ms(r.ClientCPU/time.Duration(len(r.Change))), "")
	row("other processes' CPU per change (noise; should be ~0)", ms(r.OtherCPU/time.Duration(len(r.Change))), "")
	row("resources sent per change (all clients)", perChange(r.ChangeSent.Resources), fmt.Sprintf("O(1) (here: ≤ 1 per client = %d)", r.Clients))
	row("responses per change (all clients)", perChange(r.ChangeSent.Responses), "")
	row("resources removed per change", perChange(r.ChangeSent.Removed), "")
	row("bytes sent per change (all clients)", perChange(r.ChangeSent.Bytes), "")
	row("RSS after initial sync (peak)", mb(r.RSSAfterSync)+" ("+mb(r.HWMAfterSync)+")", "≤ 300 MB")
	row(fmt.Sprintf("RSS after %d changes (peak)", len(r.Change)), mb(r.RSSEnd)+" ("+mb(r.HWMEnd)+")", "≤ 300 MB")
}

func shortType(t string) string { return t[strings.LastIndexByte(t, '.')+1:] }

func shortTypes(ts []string) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = shortType(t)
	}
	return out
}

// pct is the nearest-rank percentile.
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}

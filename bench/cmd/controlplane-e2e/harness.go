package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ambitmesh/ambit/bench/benchproc"
	"github.com/ambitmesh/ambit/bench/controlplane"
	"github.com/ambitmesh/ambit/internal/control/translate"
	"github.com/ambitmesh/ambit/internal/control/xds"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// Options configure one run of the harness.
type Options struct {
	// Ambit is a built ambit binary; empty means build ./cmd/ambit of the
	// module the harness belongs to into the work directory.
	Ambit    string
	Size     controlplane.Size
	Clients  int // node proxies node/node-00.. (at most Size.Nodes distinct IDs)
	Changes  int
	Debounce time.Duration
	// Timeout bounds startup, the initial sync and each change.
	Timeout time.Duration
	// WorkDir holds the binary, config, CA state and the control plane's log;
	// empty means a temporary directory removed at the end.
	WorkDir string
	// Progress receives one line per step; nil discards.
	Progress io.Writer
	// ControlEnv is added to the control plane's environment, e.g.
	// GODEBUG=gctrace=1 (its output lands in the control plane's log).
	ControlEnv []string
}

// Report is what one run measured.
type Report struct {
	Size       controlplane.Size
	Clients    int
	Debounce   time.Duration
	ConfigSize int64 // bytes of YAML
	Files      int

	// Ready is from starting the process to /readyz answering 200 (first
	// load, translate and view computation included).
	Ready time.Duration
	// InitialApply is the control plane's own figure for the first
	// translate + xDS update ("configuration applied ... took=").
	InitialApply time.Duration
	// Join is the time for every client to join (token, CSR, node
	// certificate), one after the other, before they subscribe.
	Join time.Duration
	// InitialSync is from starting the clients to every one holding its
	// complete view; InitialPerClient has each client's time.
	InitialSync      time.Duration
	InitialPerClient []time.Duration
	InitialSent      Sent

	// Change has, per change, the time from the rename to the slowest
	// client holding the new address; PerClient every client's time.
	Change    []time.Duration
	PerClient []time.Duration
	// Each change split in three, from the control plane's log (which has
	// millisecond timestamps): Source is from the rename to the start of
	// translation (debounce and file source), Apply the translate + xDS
	// update ("configuration applied ... took="), Push from the end of the
	// update to the slowest client holding the change.
	Source, Apply, Push []time.Duration
	// ChangeSent is what the control plane sent for all changes together.
	ChangeSent Sent
	// ViewCompute is the average view computation per update (from the
	// ambit_xds_view_compute_seconds histogram, over the changes).
	ViewCompute time.Duration
	// CPU is the control plane's user+system CPU time during the changes,
	// ClientCPU the harness process's (the 50 clients, mostly).
	CPU, ClientCPU time.Duration
	// OtherCPU is the CPU time every other process on the machine used
	// during the changes: the figures are only clean when it is near zero.
	OtherCPU time.Duration

	RSSAfterSync, HWMAfterSync, RSSEnd, HWMEnd int64 // bytes
}

// Sent is counters of the control plane's responses, by type URL.
type Sent struct {
	Responses, Resources, Removed, Bytes map[string]float64
}

func (s Sent) total(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

func (o *Options) defaults() {
	if o.Size == (controlplane.Size{}) {
		o.Size = controlplane.Default
	}
	if o.Clients == 0 {
		o.Clients = 50
	}
	if o.Changes == 0 {
		o.Changes = 30
	}
	if o.Debounce == 0 {
		o.Debounce = 10 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Run builds (unless given) and starts the real `ambit control` on the
// synthetic config, connects the clients and measures. The control plane is
// stopped before Run returns.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	o.defaults()
	if o.Clients > o.Size.Nodes {
		return nil, fmt.Errorf("bench: %d clients but only %d nodes: each client must be a distinct node", o.Clients, o.Size.Nodes)
	}
	work := o.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "ambit-e2e-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	say := func(format string, args ...any) { fmt.Fprintf(o.Progress, format+"\n", args...) }

	bin := o.Ambit
	if bin == "" {
		bin = filepath.Join(work, "ambit")
		say("building ambit into %s", bin)
		if err := build(ctx, bin); err != nil {
			return nil, err
		}
	}

	// The config, and what every client must end up holding.
	cfg := controlplane.NewConfig(o.Size)
	configDir := filepath.Join(work, "config")
	if err := os.MkdirAll(configDir, 0o755); err != nil {
		return nil, err
	}
	if err := cfg.Write(configDir); err != nil {
		return nil, err
	}
	rep = &Report{Size: o.Size, Clients: o.Clients, Debounce: o.Debounce, Files: len(cfg.Files())}
	for _, f := range cfg.Files() {
		st, err := os.Stat(filepath.Join(configDir, f))
		if err != nil {
			return nil, err
		}
		rep.ConfigSize += st.Size()
	}
	result := translate.Translate(cfg.Resources())
	if rej := result.Rejected(); len(rej) > 0 {
		return nil, fmt.Errorf("bench: synthetic config has %d rejected objects, first %s", len(rej), rej[0])
	}
	views, err := xds.ComputeViews(result.Mesh, nil)
	if err != nil {
		return nil, err
	}
	// What each client must hold: the offline views, plus the trust bundle,
	// which comes from the control plane's CA, not from the config.
	nodes := make([]string, o.Clients)
	want := make([]map[string]int, o.Clients)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%02d", i)
		id, err := xds.ParseProxyID("node/" + nodes[i])
		if err != nil {
			return nil, err
		}
		want[i] = map[string]int{}
		for _, t := range xds.NodeTypes {
			want[i][t] = len(views.Set(id, t).Items)
		}
		want[i][xds.TypeTrustBundle] = 1
	}
	say("config: %d files, %.1f MiB in %s", rep.Files, float64(rep.ConfigSize)/(1<<20), configDir)

	// The control plane.
	xdsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(work, "control.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "control", "--config-dir", configDir, "--state-dir", filepath.Join(work, "state"),
		"--xds-address", xdsAddr, "--admin-address", adminAddr, "--debounce", o.Debounce.String(), "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), o.ControlEnv...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if stopErr := stop(cmd, exited); stopErr != nil && err == nil {
			err = stopErr
		}
		if err != nil {
			err = fmt.Errorf("%w (control plane log: %s)", err, logPath)
		}
	}()
	pid := cmd.Process.Pid
	admin := "http://" + adminAddr
	say("control plane pid %d: xDS %s, admin %s, debounce %s", pid, xdsAddr, adminAddr, o.Debounce)

	if err := waitReady(ctx, admin, exited, o.Timeout); err != nil {
		return nil, err
	}
	rep.Ready = time.Since(start)
	applies, err := appliedTimes(logPath)
	if err != nil {
		return nil, err
	}
	if len(applies) != 1 {
		return nil, fmt.Errorf("bench: want one 'configuration applied' log line after startup, found %d", len(applies))
	}
	rep.InitialApply = applies[0].took
	say("ready after %s (initial translate + update %s)", rep.Ready.Round(time.Millisecond), rep.InitialApply)

	// The clients.
	before, err := scrape(ctx, admin)
	if err != nil {
		return nil, err
	}
	cctx, cancelClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelClients(); wg.Wait() }()
	clients := make([]*xdsclient.Client, o.Clients)
	discard := slog.New(slog.DiscardHandler)
	joinStart := time.Now()
	for i := range clients {
		creds, err := controlplane.JoinNode(ctx, adminAddr, xdsAddr, nodes[i])
		if err != nil {
			return nil, err
		}
		if clients[i], err = xdsclient.New(xdsclient.Config{
			Address: xdsAddr, NodeID: "node/" + nodes[i], TransportCredentials: creds, TypeURLs: xds.NodeTypes, Logger: discard,
		}); err != nil {
			return nil, err
		}
	}
	rep.Join = time.Since(joinStart)
	say("%d nodes joined (join token -> node certificate) in %s", o.Clients, rep.Join.Round(time.Millisecond))
	t0 := time.Now()
	for _, c := range clients {
		wg.Go(func() { _ = c.Run(cctx) })
	}
	rep.InitialPerClient, err = waitAll(ctx, clients, o.Timeout, t0, func(i int, s *xdsclient.Snapshot) bool {
		for t, n := range want[i] {
			if s.Len(t) != n {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("bench: initial sync: %w", err)
	}
	rep.InitialSync = slices.Max(rep.InitialPerClient)
	after, err := scrape(ctx, admin)
	if err != nil {
		return nil, err
	}
	rep.InitialSent = sentBetween(before, after)
	if rep.RSSAfterSync, rep.HWMAfterSync, err = memory(pid); err != nil {
		return nil, err
	}
	say("initial sync of %d clients: %s, %.1f MiB sent; RSS %d MiB (peak %d MiB)", o.Clients, rep.InitialSync.Round(time.Millisecond),
		rep.InitialSent.total(rep.InitialSent.Bytes)/(1<<20), rep.RSSAfterSync>>20, rep.HWMAfterSync>>20)

	// The changes: one workload's address each, in its namespace file.
	// The initial sync left the clients' garbage (10,000 resources per
	// client, decoded); collect it now so that its GC cycle is neither
	// counted as nor competing with the changes.
	runtime.GC()
	// Likewise the control plane: it still collects the initial push's
	// garbage (~135 MiB of responses) for a while after the clients hold
	// everything. Measure changes in its steady state.
	if err := waitQuiet(ctx, pid, o.Timeout); err != nil {
		return nil, err
	}
	before = after
	cpuBefore, err := cpuTime(pid)
	if err != nil {
		return nil, err
	}
	clientCPUBefore, err := cpuTime(os.Getpid())
	if err != nil {
		return nil, err
	}
	busyBefore, err := machineBusy()
	if err != nil {
		return nil, err
	}
	var renamed []time.Time
	for k := 1; k <= o.Changes; k++ {
		w := (k * 7919) % o.Size.Workloads
		ip := netip.AddrFrom4([4]byte{172, 16, byte(k >> 8), byte(k)})
		ref, _ := cfg.Workload(w)
		file := cfg.SetWorkloadAddress(w, ip)
		install, err := cfg.Stage(configDir, file)
		if err != nil {
			return nil, err
		}
		name := ref.String()
		start := time.Now()
		renamed = append(renamed, start)
		if err := install(); err != nil {
			return nil, err
		}
		each, err := waitAll(ctx, clients, o.Timeout, start, func(_ int, s *xdsclient.Snapshot) bool {
			r, ok := xdsclient.Get[*workloadv1.Workload](s, name)
			if !ok || len(r.GetAddresses()) != 1 {
				return false
			}
			got, _ := netip.AddrFromSlice(r.GetAddresses()[0])
			return got == ip
		})
		if err != nil {
			return nil, fmt.Errorf("bench: change %d (%s -> %s in %s): %w", k, name, ip, file, err)
		}
		rep.PerClient = append(rep.PerClient, each...)
		rep.Change = append(rep.Change, slices.Max(each))
		say("change %2d: %s -> %s in %s: all %d clients after %s", k, name, ip, file, o.Clients, slices.Max(each).Round(100*time.Microsecond))
	}
	cpuAfter, err := cpuTime(pid)
	if err != nil {
		return nil, err
	}
	rep.CPU = cpuAfter - cpuBefore
	clientCPUAfter, err := cpuTime(os.Getpid())
	if err != nil {
		return nil, err
	}
	rep.ClientCPU = clientCPUAfter - clientCPUBefore
	busyAfter, err := machineBusy()
	if err != nil {
		return nil, err
	}
	rep.OtherCPU = max(busyAfter-busyBefore-rep.CPU-rep.ClientCPU, 0)
	// Responses are counted before they are sent, so once every client has
	// the last change its responses are in the counters.
	after, err = scrape(ctx, admin)
	if err != nil {
		return nil, err
	}
	rep.ChangeSent = sentBetween(before, after)
	if n := after.get("ambit_xds_view_compute_seconds_count", "") - before.get("ambit_xds_view_compute_seconds_count", ""); n > 0 {
		sum := after.get("ambit_xds_view_compute_seconds_sum", "") - before.get("ambit_xds_view_compute_seconds_sum", "")
		rep.ViewCompute = time.Duration(sum / n * float64(time.Second))
	}
	// The control plane logs an apply after pushing it, so the last line
	// may still be on its way when the clients already hold the change.
	applies, err = waitApplied(ctx, logPath, o.Changes+1, o.Timeout)
	if err != nil {
		return nil, err
	}
	if len(applies) != o.Changes+1 {
		return nil, fmt.Errorf("bench: %d changes but %d 'configuration applied' log lines after startup; want one each", o.Changes, len(applies)-1)
	}
	for k, a := range applies[1:] {
		// The log's timestamps have millisecond resolution.
		rep.Source = append(rep.Source, max(a.at.Add(-a.took).Sub(renamed[k]), 0))
		rep.Apply = append(rep.Apply, a.took)
		rep.Push = append(rep.Push, max(renamed[k].Add(rep.Change[k]).Sub(a.at), 0))
	}
	if rep.RSSEnd, rep.HWMEnd, err = memory(pid); err != nil {
		return nil, err
	}
	return rep, nil
}

// waitAll waits until ok holds for every client's current snapshot and
// returns, per client, the time from start at which it first did.
func waitAll(ctx context.Context, clients []*xdsclient.Client, timeout time.Duration, start time.Time,
	ok func(i int, s *xdsclient.Snapshot) bool) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := make([]time.Duration, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for {
				ch := c.Changed() // before Current, so no swap is missed
				if ok(i, c.Current()) {
					out[i] = time.Since(start)
					return
				}
				select {
				case <-ctx.Done():
					errs[i] = fmt.Errorf("client %d not there after %s: %w", i, timeout, ctx.Err())
					return
				case <-ch:
				}
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func build(ctx context.Context, out string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("bench: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd := benchproc.ReleaseBuild(ctx, out, "ambit")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bench: go build ./cmd/ambit in %s: %w\n%s", root, err, b)
	}
	return nil
}

// freeAddr asks the kernel for a free loopback port. Another process could
// take it before the control plane binds it; the control plane would then
// fail to start, which Run reports.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitReady(ctx context.Context, admin string, exited <-chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: control plane not ready after %s", timeout)
		}
		select {
		case err := <-exited:
			return fmt.Errorf("bench: control plane exited before it was ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// stop interrupts the control plane and waits for it; it is killed if it
// does not stop within 10s.
func stop(cmd *exec.Cmd, exited <-chan error) error {
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
			return nil // died of the interrupt: not an error here
		}
		if err != nil {
			return fmt.Errorf("bench: control plane exited with %w", err)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return errors.New("bench: control plane did not stop within 10s of SIGINT; killed it")
	}
}

var appliedRe = regexp.MustCompile(`^time=(\S+) .*msg="configuration applied".* took=(\S+)`)

type applied struct {
	at   time.Time // when the log line was written: the end of the apply
	took time.Duration
}

// waitApplied polls the control plane's log until it holds at least want
// "configuration applied" lines, or timeout passes; it returns what it read.
func waitApplied(ctx context.Context, logPath string, want int, timeout time.Duration) ([]applied, error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		applies, err := appliedTimes(logPath)
		if err != nil || len(applies) >= want {
			return applies, err
		}
		select {
		case <-tick.C:
		case <-deadline:
			return applies, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// appliedTimes reads the control plane's "configuration applied ... took="
// log lines: translate plus xDS update, per snapshot.
func appliedTimes(logPath string) ([]applied, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []applied
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := appliedRe.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			return nil, fmt.Errorf("bench: %s: time=%q: %w", logPath, m[1], err)
		}
		took, err := time.ParseDuration(m[2])
		if err != nil {
			return nil, fmt.Errorf("bench: %s: took=%q: %w", logPath, m[2], err)
		}
		out = append(out, applied{at, took})
	}
	return out, sc.Err()
}

// metrics is one scrape: series ("name{labels}") -> value.
type metrics map[string]float64

func (m metrics) get(name, labels string) float64 {
	if labels == "" {
		return m[name]
	}
	return m[name+"{"+labels+"}"]
}

func scrape(ctx context.Context, admin string) (metrics, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: scrape metrics: %s", resp.Status)
	}
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// sentBetween is the xDS response counters' increase, by type URL.
func sentBetween(before, after metrics) Sent {
	s := Sent{Responses: map[string]float64{}, Resources: map[string]float64{}, Removed: map[string]float64{}, Bytes: map[string]float64{}}
	for series, v := range after {
		name, labels, ok := strings.Cut(series, "{")
		if !ok {
			continue
		}
		typ := strings.TrimSuffix(strings.TrimPrefix(labels, `type="`), `"}`)
		var into map[string]float64
		switch name {
		case "ambit_xds_pushes_total":
			into = s.Responses
		case "ambit_xds_resources_sent_total":
			into = s.Resources
		case "ambit_xds_resources_removed_total":
			into = s.Removed
		case "ambit_xds_response_bytes_total":
			into = s.Bytes
		default:
			continue
		}
		if d := v - before[series]; d != 0 {
			into[typ] = d
		}
	}
	return s
}

// memory reads VmRSS and VmHWM of a process.
func memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("bench: read memory of pid %d: %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("bench: no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}

// cpuTime is a process's user+system time from /proc/<pid>/stat (clock
// ticks of 10ms on Linux).
// waitQuiet waits until process pid used less than 10% of a CPU over
// 200 ms (the clock ticks are 10 ms, so that is at most 2 ticks).
func waitQuiet(ctx context.Context, pid int, timeout time.Duration) error {
	const window = 200 * time.Millisecond
	deadline := time.Now().Add(timeout)
	last, err := cpuTime(pid)
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(window):
		}
		now, err := cpuTime(pid)
		if err != nil {
			return err
		}
		if now-last <= window/10 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: control plane (pid %d) still busy %s after the initial sync", pid, timeout)
		}
		last = now
	}
}

func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: read CPU time of pid %d: %w", pid, err)
	}
	// The command name may contain spaces; fields count from after it.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: too few fields", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// machineBusy is the CPU time all processes used (every non-idle column of
// /proc/stat's cpu line, clock ticks of 10ms).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("bench: /proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	// user nice system idle iowait irq softirq steal: skip idle and iowait.
	for i, v := range f[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ambitmesh/ambit/internal/lab"
)

// Options configure a demo run; the zero value (with Out) is `ambit demo`.
type Options struct {
	// Binary is the ambit executable the mesh runs (default: this process's own).
	Binary string
	Mode   Mode
	// Requests is the canary split's sample size (default 1000).
	Requests int
	// Load is the load run's length (default 3s).
	Load time.Duration
	// Keep leaves the mesh running after the scenarios until ctx ends.
	Keep bool
	// Verbose also prints each process's command line and where it runs.
	Verbose bool
	Out     io.Writer
	// TempDir holds the run folder and the lock file (default os.TempDir()).
	TempDir string
	// NetnsDir is where leftover namespaces are looked for (default /run/netns).
	NetnsDir string
	// ProbeCapture checks that nftables capture works (nil: install the real rules in a throw-away
	// namespace); tests inject a failing one.
	ProbeCapture func(ctx context.Context) error
	// Ready, if set, is called with the mesh's addresses once every step passed (before --keep
	// waits); tests use it to look at a kept mesh.
	Ready func(Report)
}

// Report is what a run did and found.
type Report struct {
	Mode      Mode
	Why       string // why this mode
	RunDir    string // removed at the end unless a step failed (then only logs/ stays)
	ConfigDir string
	LogDir    string
	Steps     []Step
	// Kept lists, with --keep, how to reach the running mesh by hand.
	Kept []string
}

// Run brings the mesh up, runs every scenario and tears everything down. It returns an error
// when the mesh could not start, a step failed (the report says which and why) or ctx ended.
func Run(ctx context.Context, opts Options) (rep Report, err error) {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Requests <= 0 {
		opts.Requests = 1000
	}
	if opts.Load <= 0 {
		opts.Load = 3 * time.Second
	}
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	if opts.NetnsDir == "" {
		opts.NetnsDir = "/run/netns"
	}
	if opts.Binary == "" {
		if opts.Binary, err = os.Executable(); err != nil {
			return rep, fmt.Errorf("demo: find the ambit binary to run: %w", err)
		}
	}
	started := time.Now()
	say := func(format string, args ...any) { fmt.Fprintf(opts.Out, format+"\n", args...) }

	unlock, err := lock(filepath.Join(opts.TempDir, "ambit-demo.lock"))
	if err != nil {
		return rep, err
	}
	defer unlock()
	if rep.Mode, rep.Why, err = chooseMode(ctx, opts.Mode, thisHost(opts.ProbeCapture)); err != nil {
		return rep, err
	}
	say("mode: %s — %s", rep.Mode, rep.Why)
	if err := errors.Join(cleanLeftoverNamespaces(opts.NetnsDir, say), cleanLeftoverRuns(opts.TempDir, say)); err != nil {
		return rep, err
	}

	var lay *layout
	if rep.Mode == ModeNetns {
		if lay, err = netnsLayout(); err != nil {
			return rep, err
		}
	} else {
		lay = loopbackLayout()
		if err := checkPorts(lay.ports); err != nil {
			return rep, err
		}
	}
	m := &mesh{bin: opts.Binary, lay: lay, say: say, verbose: opts.Verbose}
	// Logs stay only when something failed by itself (not when interrupted): they are the evidence.
	defer func() { err = errors.Join(err, m.cleanup(err != nil && ctx.Err() == nil, say)) }()
	if err := m.folders(opts.TempDir); err != nil {
		return rep, err
	}
	rep.RunDir, rep.ConfigDir, rep.LogDir = m.runDir, m.configDir, m.logDir
	say("run folder: %s (config %s, one log per process in %s)", m.runDir, m.configDir, m.logDir)

	if err := m.start(ctx); err != nil {
		return rep, fmt.Errorf("%w\nlogs: %s", err, m.logDir)
	}
	w := &walk{m: m, requests: opts.Requests, load: opts.Load}
	rep.Steps, err = runSteps(ctx, say, w.scenarios())
	if err != nil {
		return rep, fmt.Errorf("%w\nlogs (one per process): %s", err, m.logDir)
	}
	say("all %d steps passed in %s", len(rep.Steps), time.Since(started).Round(100*time.Millisecond))
	if opts.Keep {
		rep.Kept = m.howToReach()
	}
	if opts.Ready != nil {
		opts.Ready(rep)
	}
	if opts.Keep {
		say("\nthe mesh keeps running (--keep); Ctrl-C stops it and removes everything")
		for _, s := range rep.Kept {
			say("  %s", s)
		}
		<-ctx.Done()
	}
	return rep, nil
}

// folders makes the run folder: config/ (watched by the control plane), state/ (its CA), logs/.
func (m *mesh) folders(tmp string) error {
	// Named with the pid, so a killed run's folder is recognised (cleanLeftoverRuns).
	dir, err := os.MkdirTemp(tmp, fmt.Sprintf("ambit-demo-run-%d-", os.Getpid()))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	m.runDir = dir
	m.configDir, m.stateDir, m.logDir = filepath.Join(dir, "config"), filepath.Join(dir, "state"), filepath.Join(dir, "logs")
	for _, d := range []string{m.configDir, m.stateDir, m.logDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	return nil
}

// cleanLeftoverRuns removes the run folders of demos that were killed: their pid is gone and
// their state/ (the CA key) is still there. A failed run's folder has only logs/ left and stays.
func cleanLeftoverRuns(tmp string, say func(string, ...any)) error {
	left, err := lab.Leftovers(tmp, "demo", nil)
	if err != nil {
		return err
	}
	for _, l := range left {
		dir := filepath.Join(tmp, l.Name)
		if st, err := os.Stat(filepath.Join(dir, "state")); err != nil || !st.IsDir() {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("demo: remove %s: %w", dir, err)
		}
		say("removed run folder %s, left by a demo that was killed (pid %d is gone)", dir, l.PID)
	}
	return nil
}

// cleanup stops every process and removes the namespaces (with their capture rules) and the run
// folder; with keepLogs the logs stay for reading.
func (m *mesh) cleanup(keepLogs bool, say func(string, ...any)) error {
	errs := []error{m.stop(), m.lay.close()}
	if m.runDir == "" {
		return errors.Join(errs...)
	}
	if !keepLogs {
		errs = append(errs, os.RemoveAll(m.runDir))
		say("cleaned up: %s, the run folder removed", m.stoppedWhat())
		return errors.Join(errs...)
	}
	for _, d := range []string{m.configDir, m.stateDir} {
		errs = append(errs, os.RemoveAll(d))
	}
	say("cleaned up: %s; logs kept in %s", m.stoppedWhat(), m.logDir)
	return errors.Join(errs...)
}

func (m *mesh) stoppedWhat() string {
	if m.lay.mode == ModeNetns {
		return "processes stopped, namespaces (and their nftables rules) removed"
	}
	return "processes stopped"
}

// howToReach lists each proxy's endpoints and commands to send traffic by hand.
func (m *mesh) howToReach() []string {
	l := m.lay
	var out []string
	for _, n := range []string{"node-1", "node-2"} {
		ep := l.nodeEP[n]
		out = append(out, fmt.Sprintf("%s: admin %s, metrics %s  e.g. %s", n, ep.admin, ep.metrics,
			l.curl(l.nodes[n], "http://"+localize(ep.metrics)+"/metrics | grep istio_tcp_connections_opened_total")))
	}
	out = append(out, fmt.Sprintf("%s: admin %s, metrics %s  e.g. %s", waypoint, l.waypointEP.admin, l.waypointEP.metrics,
		l.curl(l.waypoint, "http://"+localize(l.waypointEP.metrics)+"/metrics | grep istio_requests_total")))
	for _, c := range []struct{ from, service, hdr string }{
		{"productpage-1", "reviews", ""}, {"productpage-1", "reviews", "-H 'x-region: eu' "}, {"reviews-v1-1", "ratings", ""},
	} {
		_, addr := l.app(c.from, c.service)
		out = append(out, fmt.Sprintf("%s -> %s: %s", c.from, c.service, l.curl(l.podPlace[c.from], c.hdr+"http://"+addr+"/")))
	}
	out = append(out, "config folder (edit it live): "+m.configDir, "logs: "+m.logDir)
	return out
}

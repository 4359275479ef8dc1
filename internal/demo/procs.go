package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/lab"
)

// mesh is the running demo: its folders and processes.
type mesh struct {
	bin                                 string
	lay                                 *layout
	runDir, configDir, stateDir, logDir string
	procs                               []*lab.Process // in start order
	say                                 func(string, ...any)
	verbose                             bool
}

const stopGrace = 3 * time.Second

// start writes the config folder and runs, in order, the control plane, the echo apps, both node
// proxies and the waypoint, waiting for each to be ready.
func (m *mesh) start(ctx context.Context) error {
	if err := m.writeConfig("mesh.yaml", meshYAML(m.lay.pods, m.lay.waypointIP)); err != nil {
		return err
	}
	l := m.lay
	args := []string{"control", "--config-dir", m.configDir, "--state-dir", m.stateDir,
		"--xds-address", l.xds, "--admin-address", l.controlAdmin, "--debounce", "20ms"}
	if l.serverName != "" {
		args = append(args, "--server-name", l.serverName)
	}
	cp, err := m.run("control", l.control, args...)
	if err != nil {
		return err
	}
	if err := m.waitHTTP(ctx, cp, l.control, "http://"+l.controlAdmin+"/readyz"); err != nil {
		return err
	}
	m.say("control plane ready: xDS %s, config folder %s", l.xds, m.configDir)

	echos := map[string]*lab.Process{}
	for _, w := range l.pods {
		args := []string{"echo", "--http-port", fmt.Sprint(appPort), "--grpc-port", "0", "--tcp-port", "0",
			"--namespace", namespace, "--pod", w.name, "--service", w.app}
		if a := l.echoListen[w.name]; a != "" {
			args = append(args, "--listen", a)
		}
		if echos[w.name], err = m.run("echo-"+w.name, l.podPlace[w.name], args...); err != nil {
			return err
		}
	}

	nodes := map[string]*lab.Process{}
	for _, n := range []string{"node-1", "node-2"} {
		tok, err := m.token(ctx, "--node", n)
		if err != nil {
			return err
		}
		ep := l.nodeEP[n]
		args := []string{"node", "--control-plane", l.xds, "--node", n, "--token", tok.Token, "--ca-pin", tok.CAPin,
			"--trust-domain", tok.TrustDomain, "--admin-address", ep.admin, "--metrics-address", ep.metrics, "--readiness-address", ep.ready}
		for _, e := range l.explicit[n] {
			args = append(args, "--explicit", e)
		}
		for _, e := range l.enroll[n] {
			args = append(args, "--enroll", e)
		}
		if nodes[n], err = m.run(n, l.nodes[n], args...); err != nil {
			return err
		}
	}
	tok, err := m.token(ctx, "--gateway", namespace+"/"+waypoint)
	if err != nil {
		return err
	}
	ep := l.waypointEP
	wp, err := m.run(waypoint, l.waypoint, "waypoint", "--control-plane", l.xds, "--gateway", namespace+"/"+waypoint,
		"--token", tok.Token, "--ca-pin", tok.CAPin, "--trust-domain", tok.TrustDomain, "--hbone-address", l.waypointHBONE,
		"--admin-address", ep.admin, "--metrics-address", ep.metrics, "--readiness-address", ep.ready)
	if err != nil {
		return err
	}

	for _, w := range l.pods {
		if err := m.waitHTTP(ctx, echos[w.name], l.podPlace[w.name], fmt.Sprintf("http://%s/health", echoAddr(l, w))); err != nil {
			return err
		}
	}
	for _, n := range []string{"node-1", "node-2"} {
		if err := m.waitHTTP(ctx, nodes[n], l.nodes[n], "http://"+localize(l.nodeEP[n].ready)+"/healthz/ready"); err != nil {
			return err
		}
	}
	if err := m.waitHTTP(ctx, wp, l.waypoint, "http://"+localize(ep.ready)+"/healthz/ready"); err != nil {
		return err
	}
	m.say("node-1, node-2 and the %s are ready; %d echo apps serve", waypoint, len(l.pods))
	return nil
}

// echoAddr is the echo's address as seen from its own place.
func echoAddr(l *layout, w workload) string {
	if l.echoListen[w.name] != "" {
		return fmt.Sprintf("%s:%d", w.ip, appPort)
	}
	return fmt.Sprintf("127.0.0.1:%d", appPort)
}

// run starts `ambit args...` at p, its output in logs/<name>.log.
func (m *mesh) run(name string, p place, args ...string) (*lab.Process, error) {
	proc, err := lab.Start(name, p.netns, filepath.Join(m.logDir, name+".log"), m.bin, args...)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	m.procs = append(m.procs, proc)
	if m.verbose {
		where := "this host"
		if p.netns != "" {
			where = "netns " + filepath.Base(p.netns)
		}
		m.say("  started %s in %s: %s %s (log %s)", name, where, m.bin, strings.Join(args, " "), proc.Log)
	}
	return proc, nil
}

// token runs `ambit token create` where the control plane runs (its token endpoint answers on
// loopback only), as a user joining a host would.
func (m *mesh) token(ctx context.Context, who ...string) (control.TokenResponse, error) {
	var tok control.TokenResponse
	args := append([]string{"token", "create"}, who...)
	args = append(args, "--control-plane", m.lay.controlAdmin, "-o", "json")
	cmd := exec.CommandContext(ctx, m.bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := lab.StartIn(m.lay.control.netns, cmd); err != nil {
		return tok, fmt.Errorf("demo: ambit %s: %w", strings.Join(args, " "), err)
	}
	if err := cmd.Wait(); err != nil {
		return tok, fmt.Errorf("demo: ambit %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	if err := json.Unmarshal(out.Bytes(), &tok); err != nil || tok.Token == "" {
		return tok, fmt.Errorf("demo: ambit %s printed %q, want JSON with a token: %v", strings.Join(args, " "), out.String(), err)
	}
	return tok, nil
}

// waitHTTP polls url from p until it answers 200; it gives up early if proc exits (with the end of
// its log, which says why: a port in use, a refused token).
func (m *mesh) waitHTTP(ctx context.Context, proc *lab.Process, p place, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	dial := m.lay.tool(p, hostOfURL(url))
	var last error
	for {
		r, err := get(ctx, dial, url, nil)
		if err == nil && r.status == 200 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("status %d: %s", r.status, bytes.TrimSpace(r.body))
		}
		last = err
		select {
		case <-proc.Done():
			out, _ := proc.Output()
			return fmt.Errorf("demo: %s exited before it was ready (%v); the end of %s:\n%s", proc.Name, proc.Err(), proc.Log, tail(out, 15))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("demo: %s not ready after 20s (GET %s: %v); see %s", proc.Name, url, last, proc.Log)
			}
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// stop ends every process, last started first.
func (m *mesh) stop() error {
	var errs []error
	for _, p := range slices.Backward(m.procs) {
		errs = append(errs, p.Stop(stopGrace))
	}
	m.procs = nil
	return errors.Join(errs...)
}

// writeConfig writes a file of the config folder atomically (the watcher never sees half of it).
func (m *mesh) writeConfig(name, content string) error {
	tmp := filepath.Join(m.configDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(m.configDir, name)); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

// logOf returns what the named process wrote so far.
func (m *mesh) logOf(name string) string {
	for _, p := range m.procs {
		if p.Name == name {
			out, _ := p.Output()
			return out
		}
	}
	return ""
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

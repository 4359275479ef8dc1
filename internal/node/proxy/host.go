package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ambitmesh/ambit/internal/node/capture"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/telemetry"
)

// hostCapture is host mode: Workloads that are processes of the node itself,
// captured in the node's own network namespace (Options.HostNetNS). They
// share one rule set, rebuilt from the snapshot whenever their addresses or
// ports change, and one set of listeners.
type hostCapture struct {
	mu        sync.Mutex // serialises enrolment and rule changes
	keys      map[string]bool
	stop      func()          // closes the listeners; nil while no workload is enrolled
	installed *capture.Config // the rules in force; nil: none
	problems  string          // last reported, so an unchanged problem is logged once
}

// EnrollHost captures, in host mode, the traffic of local workload key
// ("<namespace>/<name>"), a process running in the node's own network
// namespace. Only that workload's traffic is captured: outbound connections
// from its addresses and inbound ones to its addresses on the HBONE port and
// on the ports it serves for mesh services (the Services' target ports);
// the host's other traffic, ssh included, is left alone. Rules follow the
// workload's addresses and ports as the snapshot changes and are all removed
// on Unenroll and when Run ends (unlike a pod's: a host must stay reachable
// without its proxy).
func (p *Proxy) EnrollHost(ctx context.Context, key string) error {
	if err := CheckWorkloadKey(key); err != nil {
		return fmt.Errorf("node proxy: enroll in host mode: %w", err)
	}
	p.enrollMu.Lock() // see Enroll
	defer p.enrollMu.Unlock()
	p.mu.Lock()
	runCtx := p.runCtx
	old := p.pods[key]
	p.mu.Unlock()
	if runCtx == nil {
		return errNotRunning
	}
	if old != nil && !old.host {
		return kindErrorf(ErrEnrolled, "node proxy: enroll %s in host mode: %w in netns %s; unenroll it first (POST /unenroll workload=%s)", key, ErrEnrolled, old.nsPath, key)
	}
	if err := p.checkHostWorkload(key); err != nil {
		return err
	}
	h := &p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.keys[key] {
		return nil
	}
	// Registered first, and the explicit-mode HBONE listeners closed: the
	// host's wildcard HBONE listener cannot bind next to them, and serves
	// their addresses too (the certificate follows the local address).
	p.mu.Lock()
	p.pods[key] = &pod{key: key, nsPath: p.opts.HostNetNS, host: true, stop: func() {}}
	p.hostListening = true
	p.mu.Unlock()
	p.reconcileInbound(runCtx)
	undo := func() {
		p.mu.Lock()
		delete(p.pods, key)
		p.mu.Unlock()
		p.signal()
	}
	if h.stop == nil {
		cc := capture.DefaultConfig()
		cc.InboundHBONEPort = p.opts.HBONEPort
		stop, err := p.serveCapture(ctx, runCtx, p.opts.HostNetNS, cc, p.serveHostCaptured)
		if err != nil {
			p.mu.Lock()
			p.hostListening = false
			p.mu.Unlock()
			undo()
			return fmt.Errorf("node proxy: enroll %s in host mode: %w", key, err)
		}
		h.stop = stop
	}
	if h.keys == nil {
		h.keys = map[string]bool{}
	}
	h.keys[key] = true
	if err := p.applyHostLocked(ctx); err != nil {
		delete(h.keys, key)
		if len(h.keys) == 0 {
			p.closeHostListeners()
		}
		undo()
		return fmt.Errorf("node proxy: enroll %s in host mode: %w", key, err)
	}
	p.signal()
	p.log.Info("workload enrolled", "workload", key, "mode", "host", "netns", nsName(p.opts.HostNetNS))
	return nil
}

// checkHostWorkload refuses a workload the snapshot places on another node.
// One not in the snapshot yet is accepted: its rules follow when it arrives.
func (p *Proxy) checkHostWorkload(key string) error {
	cfg := p.cfg.Load()
	if cfg.WorkloadByKey(p.opts.Node, key) != nil || cfg.Snapshot == nil {
		return nil
	}
	for node, ws := range cfg.byNode {
		if slices.ContainsFunc(ws, func(w *Workload) bool { return w.Key() == key }) {
			return kindErrorf(ErrBadRequest, "node proxy: enroll %s in host mode: the workload's spec.node is %s, not this node (%s); enrol it on its own node", key, node, p.opts.Node)
		}
	}
	return nil
}

// unenrollHost removes key from host mode: the rules are rebuilt without it
// (removed with the last one, and the listeners closed).
func (p *Proxy) unenrollHost(ctx context.Context, key string) error {
	h := &p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.keys, key)
	err := p.applyHostLocked(ctx)
	if len(h.keys) == 0 {
		p.closeHostListeners()
	}
	p.signal()
	if err != nil {
		return fmt.Errorf("node proxy: unenroll %s: %w", key, err)
	}
	p.log.Info("workload unenrolled", "workload", key, "mode", "host")
	return nil
}

// stopHost removes the host rules and closes the host listeners (Run is
// ending).
func (p *Proxy) stopHost() {
	h := &p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.keys)
	// Run's context is over; removing must not depend on it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.applyHostLocked(ctx); err != nil {
		p.log.Error("host capture rules not removed; remove them with: nft delete table inet "+capture.TableName, "err", err)
	}
	p.closeHostListeners()
}

// closeHostListeners closes the host-mode listeners (no host workload is
// left); explicit-mode HBONE listeners may bind again. h.mu is held.
func (p *Proxy) closeHostListeners() {
	h := &p.host
	if h.stop != nil {
		h.stop()
		h.stop = nil
	}
	p.mu.Lock()
	p.hostListening = false
	p.mu.Unlock()
	p.signal()
}

// reconcileHost re-applies the host rules after a snapshot change.
func (p *Proxy) reconcileHost(ctx context.Context) {
	h := &p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := p.applyHostLocked(ctx); err != nil {
		p.log.Warn("host capture rules not updated; the previous ones stay", "err", err)
	}
}

// applyHostLocked installs the rules the enrolled host workloads need now,
// or removes them when none has an address. h.mu is held.
func (p *Proxy) applyHostLocked(ctx context.Context) error {
	h := &p.host
	cc, problems := p.hostCaptureConfig()
	if msg := joinErrs(problems); msg != h.problems {
		h.problems = msg
		for _, err := range problems {
			p.log.Warn("host workload not captured", "err", err)
		}
	}
	if len(cc.OutboundSources) == 0 {
		if h.installed == nil {
			return nil
		}
		if err := capture.Remove(ctx, p.opts.HostNetNS, *h.installed); err != nil {
			return err
		}
		h.installed = nil
		p.hostActive.Store(false)
		return nil
	}
	if h.installed != nil && reflect.DeepEqual(*h.installed, cc) {
		return nil
	}
	// From now on the proxy's own sockets must carry the mark, or the rules
	// would send them back to the proxy.
	p.hostActive.Store(true)
	if err := capture.Install(ctx, p.opts.HostNetNS, cc); err != nil {
		p.hostActive.Store(h.installed != nil)
		return err
	}
	h.installed = &cc
	p.log.Info("host capture rules installed", "addresses", cc.InboundDestinations, "ports", cc.InboundPorts)
	return nil
}

// hostCaptureConfig is the rule set of the enrolled host workloads: their
// addresses and the target ports of the services they back. A workload
// missing from the snapshot, or sharing an address with another identity
// (its outbound connections could not be told apart), is left out.
func (p *Proxy) hostCaptureConfig() (capture.Config, []error) {
	cfg := p.cfg.Load()
	cc := capture.DefaultConfig()
	cc.Mode = capture.ModeHost
	cc.InboundHBONEPort = p.opts.HBONEPort
	var problems []error
	keys := make([]string, 0, len(p.host.keys))
	for k := range p.host.keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	owner := map[netip.Addr]*Workload{}
	ports := map[uint16]bool{}
	for _, key := range keys {
		w := cfg.WorkloadByKey(p.opts.Node, key)
		if w == nil || len(w.Addresses) == 0 || w.Identity.IsZero() {
			if cfg.Snapshot == nil {
				continue // no snapshot yet: nothing to report
			}
			problems = append(problems, fmt.Errorf("node proxy: host workload %s: not a workload of node %s with an address and a valid identity in the current snapshot; captured once it is", key, p.opts.Node))
			continue
		}
		if i := slices.IndexFunc(w.Addresses, func(a netip.Addr) bool { return owner[a] != nil && owner[a].Identity != w.Identity }); i >= 0 {
			o := owner[w.Addresses[i]]
			problems = append(problems, fmt.Errorf("node proxy: host workload %s: address %s is also host workload %s's, of another identity (%s); their connections could not be told apart, so %s is not captured", key, w.Addresses[i], o.Key(), o.Identity, key))
			continue
		}
		for _, a := range w.Addresses {
			if owner[a] == nil {
				owner[a] = w
				pfx := netip.PrefixFrom(a, a.BitLen())
				cc.OutboundSources = append(cc.OutboundSources, pfx)
				cc.InboundDestinations = append(cc.InboundDestinations, pfx)
			}
		}
		for _, pl := range w.Proto.GetServices() {
			for _, pm := range pl.GetPorts() {
				port := uint16(pm.GetTargetPort())
				if port == 0 {
					port = uint16(pm.GetServicePort())
				}
				if p.isProxyPort(port) {
					problems = append(problems, fmt.Errorf("node proxy: host workload %s: port %d is one of the proxy's own; not captured", key, port))
					continue
				}
				ports[port] = true
			}
		}
	}
	for port := range ports {
		cc.InboundPorts = append(cc.InboundPorts, port)
	}
	slices.Sort(cc.InboundPorts)
	return cc, problems
}

// serveHostCaptured serves a connection redirected to the host's outbound
// port: its source must be an address of a host-mode workload, whose
// identity it then carries. Other processes of the host are not captured,
// so anything else is refused rather than lent an identity.
func (p *Proxy) serveHostCaptured(ctx context.Context, c net.Conn) {
	from := addrPortOf(c.RemoteAddr())
	var key string
	for _, w := range p.cfg.Load().Workloads(from.Addr()) {
		// Not p.host.mu: it is held while these connections are waited for.
		if pd := p.podOf(w.Key()); pd != nil && pd.host && w.Proto.GetNode() == p.opts.Node {
			key = w.Key()
			break
		}
	}
	if key == "" {
		dst := addrPortOf(c.LocalAddr())
		if orig, err := netns.OriginalDst(c); err == nil {
			dst = orig
		}
		p.refuse(telemetry.Labels{Reporter: telemetry.ReporterSource}, from, dst, func(error) error { return nil },
			fmt.Errorf("%w: %s is not the address of a host-mode workload of node %s", errUnknownSource, from.Addr(), p.opts.Node))
		_ = c.Close()
		return
	}
	p.serveCaptured(ctx, c, key)
}

// HostCaptureActive reports whether host rules are installed, so that the
// proxy's other connections (to the control plane) must carry the mark.
func (p *Proxy) HostCaptureActive() bool { return p.hostActive.Load() }

// plainDial dials dst from the proxy's own namespace (from src when valid).
// While host rules are installed the socket carries the proxy's mark (made
// in Options.HostNetNS, the proxy's own namespace outside tests): unmarked,
// the rules could capture the proxy's own connection and hand it back to it.
func (p *Proxy) plainDial(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	if p.hostActive.Load() {
		d := netns.Dialer{NetNS: p.opts.HostNetNS, Timeout: 10 * time.Second}
		if src.IsValid() {
			d.LocalAddr = netip.AddrPortFrom(src, 0)
		}
		return d.DialContext(ctx, "tcp", dst.String())
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	return d.DialContext(ctx, "tcp", dst.String())
}

// isProxyPort reports whether port is one of the capture listeners'.
func (p *Proxy) isProxyPort(port uint16) bool {
	cc := capture.DefaultConfig()
	return port == cc.OutboundPort || port == cc.InboundPlaintextPort || port == p.opts.HBONEPort
}

func joinErrs(errs []error) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString(e.Error())
		b.WriteByte('\n')
	}
	return b.String()
}

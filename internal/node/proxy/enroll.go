package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ambitmesh/ambit/internal/node/capture"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/policy"
	"github.com/ambitmesh/ambit/internal/telemetry"
)

// pod is a workload network namespace enrolled for transparent capture.
type pod struct {
	key     string // "<namespace>/<name>"
	nsPath  string
	capture capture.Config
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// errNotRunning refuses enrolment before Run (listeners live as long as Run).
var errNotRunning = errors.New("node proxy: not running; call Enroll after Run started")

// Enroll captures the traffic of workload key ("<namespace>/<name>", a local
// workload) whose network namespace is nsPath, Istio's in-pod way: the
// proxy's outbound (15001), plaintext inbound (15006) and HBONE (HBONEPort)
// listeners are opened inside the namespace first, then the nftables rules
// are installed there. Enrolling again replaces the previous enrolment.
// The listeners close when Run ends; the rules stay (the pod fails closed
// while no proxy serves it) until Unenroll.
func (p *Proxy) Enroll(ctx context.Context, key, nsPath string) error {
	p.mu.Lock()
	runCtx := p.runCtx
	old := p.pods[key]
	p.mu.Unlock()
	if runCtx == nil {
		return errNotRunning
	}
	if old != nil {
		p.stopPod(old)
	}
	cc := capture.DefaultConfig()
	cc.InboundHBONEPort = p.opts.HBONEPort
	pc, cancel := context.WithCancel(runCtx)
	pd := &pod{key: key, nsPath: nsPath, capture: cc, cancel: cancel}
	type spec struct {
		port        uint16
		transparent bool
		serve       func(net.Conn)
	}
	specs := []spec{
		{cc.OutboundPort, false, func(c net.Conn) { p.serveCaptured(pc, c, key) }},
		{cc.InboundPlaintextPort, true, func(c net.Conn) { p.servePlaintext(pc, c) }},
		{cc.InboundHBONEPort, true, func(c net.Conn) { p.server.ServeConn(pc, c) }},
	}
	var listeners []net.Listener
	for _, s := range specs {
		lis, err := netns.Listen(ctx, nsPath, "tcp", fmt.Sprintf("[::]:%d", s.port), netns.ListenOptions{Transparent: s.transparent})
		if err != nil {
			cancel()
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("node proxy: enroll %s: listen on port %d in %s: %w", key, s.port, nsPath, err)
		}
		listeners = append(listeners, lis)
	}
	if err := capture.Install(ctx, nsPath, cc); err != nil {
		cancel()
		for _, l := range listeners {
			l.Close()
		}
		return fmt.Errorf("node proxy: enroll %s: %w", key, err)
	}
	for i, lis := range listeners {
		serve := specs[i].serve
		pd.wg.Go(func() { _ = acceptLoop(pc, lis, serve) })
	}
	p.mu.Lock()
	p.pods[key] = pd
	p.mu.Unlock()
	p.signal()
	p.log.Info("workload enrolled", "workload", key, "netns", nsPath)
	return nil
}

// Unenroll closes the workload's listeners and connections and removes
// every capture rule from its namespace.
func (p *Proxy) Unenroll(ctx context.Context, key string) error {
	p.mu.Lock()
	pd := p.pods[key]
	delete(p.pods, key)
	p.mu.Unlock()
	if pd == nil {
		return fmt.Errorf("node proxy: unenroll %s: not enrolled", key)
	}
	p.stopPod(pd)
	p.signal()
	if err := capture.Remove(ctx, pd.nsPath, pd.capture); err != nil {
		return fmt.Errorf("node proxy: unenroll %s: %w", key, err)
	}
	p.log.Info("workload unenrolled", "workload", key, "netns", pd.nsPath)
	return nil
}

func (p *Proxy) stopPod(pd *pod) {
	pd.cancel()
	pd.wg.Wait()
}

func (p *Proxy) stopPods() {
	p.mu.Lock()
	pods := p.pods
	p.pods = map[string]*pod{}
	p.runCtx = nil
	p.mu.Unlock()
	for _, pd := range pods {
		p.stopPod(pd)
	}
}

func (p *Proxy) podOf(key string) *pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pods[key]
}

// serveCaptured forwards an outbound connection redirected to 15001.
func (p *Proxy) serveCaptured(ctx context.Context, c net.Conn, key string) {
	dst, err := netns.OriginalDst(c)
	if err != nil {
		p.log.Warn("outbound connection without original destination", "workload", key, "err", err)
		c.Close()
		return
	}
	p.outbound(ctx, c, netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), key, nil)
}

// servePlaintext serves a connection TPROXY'd to 15006: no identity, so it
// passes only policies that do not require one.
func (p *Proxy) servePlaintext(ctx context.Context, c net.Conn) {
	defer c.Close()
	cfg := p.cfg.Load()
	src := addrPortOf(c.RemoteAddr())
	dstAddr := addrPortOf(c.LocalAddr())
	labels := telemetry.Labels{Reporter: telemetry.ReporterDestination, SecurityPolicy: telemetry.SecurityNone}
	if ws := cfg.Workloads(src.Addr()); len(ws) > 0 {
		labels.Source = telemetry.PeerFromWorkload(ws[0].Proto, p.opts.Cluster)
		labels.Source.Principal = ""
	}
	dst := cfg.LocalWorkload(p.opts.Node, dstAddr.Addr())
	if dst != nil {
		labels.Destination = telemetry.PeerFromWorkload(dst.Proto, p.opts.Cluster)
	}
	m := telemetry.Open(labels, telemetry.Endpoints{Src: src, Dst: dstAddr})
	if dst == nil {
		m.Finish(p.access, telemetry.Result{Err: fmt.Errorf("node proxy: plaintext inbound to %s: no workload of node %s has that address", dstAddr, p.opts.Node), Flags: telemetry.FlagConnectFailure})
		return
	}
	up := &upstream{m: m, access: p.access}
	d, release := p.authz.Admit(policy.Conn{
		SrcIP: src.Addr(), DstNamespace: dst.Proto.GetNamespace(), DstName: dst.Proto.GetName(),
		DstIP: dstAddr.Addr(), DstPort: dstAddr.Port(),
	}, func(d policy.Decision) { up.revoke(d); _ = c.Close() })
	if !d.Allowed {
		m.Finish(p.access, telemetry.Result{Err: fmt.Errorf("node proxy: plaintext inbound: %s", d), Flags: telemetry.FlagDenied, Policy: d.Policy.String()})
		return
	}
	up.release = release
	conn, err := p.opts.DialWorkload(ctx, dst, src, dstAddr)
	if err != nil {
		release()
		m.Finish(p.access, telemetry.Result{Err: fmt.Errorf("node proxy: connect to workload %s at %s: %w", dst.Key(), dstAddr, err), Flags: telemetry.FlagConnectFailure})
		return
	}
	if !up.set(telemetry.CountConn(conn, m, telemetry.ReadsAreResponse)) {
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { _ = up.Close(); _ = c.Close() })
	defer stop()
	relay(c, up)
}

// dialWorkload connects to a local workload: inside its namespace from the
// original client address when it is enrolled, else plain TCP.
func (p *Proxy) dialWorkload(ctx context.Context, w *Workload, src, dst netip.AddrPort) (net.Conn, error) {
	if pd := p.podOf(w.Key()); pd != nil {
		d := netns.Dialer{NetNS: pd.nsPath, Transparent: true, LocalAddr: netip.AddrPortFrom(src.Addr(), 0), Timeout: 10 * time.Second}
		return d.DialContext(ctx, "tcp", dst.String())
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	return d.DialContext(ctx, "tcp", dst.String())
}

// dialHBONE opens the outer connection of a tunnel: from inside the source
// workload's namespace, from its address, when it is enrolled.
func (p *Proxy) dialHBONE(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	if src.IsValid() {
		for _, w := range p.cfg.Load().Workloads(src) {
			if pd := p.podOf(w.Key()); pd != nil {
				d := netns.Dialer{NetNS: pd.nsPath, LocalAddr: netip.AddrPortFrom(src, 0), Timeout: 10 * time.Second}
				return d.DialContext(ctx, "tcp", dst.String())
			}
		}
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	return d.DialContext(ctx, "tcp", dst.String())
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ambitmesh/ambit/internal/node/capture"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/policy"
	"github.com/ambitmesh/ambit/internal/telemetry"
)

// pod is a workload enrolled for transparent capture: in its own network
// namespace, or in host mode in the node's (host, nsPath Options.HostNetNS).
type pod struct {
	key     string // "<namespace>/<name>"
	nsPath  string
	host    bool
	capture capture.Config // in-pod only; host mode shares p.host's rules
	stop    func()         // closes its listeners and connections; waits for them
}

// errNotRunning refuses enrolment before Run (listeners live as long as Run).
var errNotRunning = errors.New("node proxy: not running; call Enroll after Run started")

// Kinds of Enroll, EnrollHost and Unenroll errors that are the caller's to
// fix (the admin API answers them 400, 404 and 409); every other error is
// the proxy's own. Test with errors.Is.
var (
	ErrBadRequest  = errors.New("bad request")
	ErrNotEnrolled = errors.New("not enrolled")
	ErrEnrolled    = errors.New("already enrolled")
)

// kindError is err, classified as one of the kinds above without changing
// its message.
type kindError struct{ kind, err error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

func kindErrorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

// CheckWorkloadKey checks that key names a workload as "<namespace>/<name>".
func CheckWorkloadKey(key string) error {
	ns, name, _ := strings.Cut(key, "/")
	if ns == "" || name == "" || strings.Contains(name, "/") || strings.ContainsAny(key, " \t\n") {
		return kindErrorf(ErrBadRequest, "workload %q: want <namespace>/<name> (one slash, both non-empty), e.g. shop/web-1", key)
	}
	return nil
}

// Enroll captures the traffic of workload key ("<namespace>/<name>", a local
// workload) whose network namespace is nsPath, Istio's in-pod way: the
// proxy's outbound (15001), plaintext inbound (15006) and HBONE (HBONEPort)
// listeners are opened inside the namespace first, then the nftables rules
// are installed there. Enrolling again replaces the previous enrolment.
// The listeners close when Run ends; the rules stay (the pod fails closed
// while no proxy serves it) until Unenroll.
func (p *Proxy) Enroll(ctx context.Context, key, nsPath string) error {
	if err := CheckWorkloadKey(key); err != nil {
		return fmt.Errorf("node proxy: enroll: %w", err)
	}
	if _, err := os.Stat(nsPath); err != nil {
		return kindErrorf(ErrBadRequest, "node proxy: enroll %s: netns %w; want the path of the pod's network namespace, e.g. /run/netns/NAME or /proc/PID/ns/net", key, err)
	}
	// Held across the I/O below (listeners, nftables): it serialises only
	// enrolments, which must see each other's result; traffic takes p.mu.
	p.enrollMu.Lock()
	defer p.enrollMu.Unlock()
	p.mu.Lock()
	runCtx := p.runCtx
	old := p.pods[key]
	p.mu.Unlock()
	if runCtx == nil {
		return errNotRunning
	}
	if old != nil && old.host {
		return kindErrorf(ErrEnrolled, "node proxy: enroll %s in %s: %w in host mode; unenroll it first (POST /unenroll workload=%s)", key, nsPath, ErrEnrolled, key)
	}
	if old != nil {
		old.stop()
	}
	p.mu.Lock()
	p.enrolling[key] = nsPath
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.enrolling, key)
		p.mu.Unlock()
	}()
	fail := func(err error) error {
		if old == nil {
			return fmt.Errorf("node proxy: enroll %s: %w", key, err)
		}
		// The old enrolment's listeners are closed: it no longer serves
		// the pod, whose rules stay (it fails closed) until enrolled again.
		p.mu.Lock()
		delete(p.pods, key)
		p.mu.Unlock()
		p.signal()
		return fmt.Errorf("node proxy: enroll %s: %w (its previous enrolment in %s is stopped; its traffic is refused until it is enrolled again)", key, err, old.nsPath)
	}
	cc := capture.DefaultConfig()
	cc.InboundHBONEPort = p.opts.HBONEPort
	stop, err := p.serveCapture(ctx, runCtx, nsPath, cc, func(ctx context.Context, c net.Conn) { p.serveCaptured(ctx, c, key) })
	if err != nil {
		return fail(err)
	}
	if err := capture.Install(ctx, nsPath, cc); err != nil {
		stop()
		return fail(err)
	}
	p.mu.Lock()
	p.pods[key] = &pod{key: key, nsPath: nsPath, capture: cc, stop: stop}
	p.mu.Unlock()
	p.signal()
	p.log.Info("workload enrolled", "workload", key, "netns", nsPath)
	return nil
}

// serveCapture opens the outbound, plaintext inbound and HBONE listeners of
// a capture inside nsPath and serves them until runCtx ends or the returned
// stop is called (which waits for their connections to end).
func (p *Proxy) serveCapture(ctx, runCtx context.Context, nsPath string, cc capture.Config, outbound func(context.Context, net.Conn)) (stop func(), err error) {
	sctx, cancel := context.WithCancel(runCtx)
	type spec struct {
		port        uint16
		transparent bool
		serve       func(net.Conn)
	}
	specs := []spec{
		{cc.OutboundPort, false, func(c net.Conn) { outbound(sctx, c) }},
		{cc.InboundPlaintextPort, true, func(c net.Conn) { p.servePlaintext(sctx, c) }},
		{cc.InboundHBONEPort, true, func(c net.Conn) { p.server.ServeConn(sctx, c) }},
	}
	var listeners []net.Listener
	for _, s := range specs {
		lis, err := netns.Listen(ctx, nsPath, "tcp", fmt.Sprintf("[::]:%d", s.port), netns.ListenOptions{Transparent: s.transparent})
		if err != nil {
			cancel()
			for _, l := range listeners {
				l.Close()
			}
			return nil, fmt.Errorf("listen on port %d in %s: %w", s.port, nsName(nsPath), err)
		}
		listeners = append(listeners, lis)
	}
	var wg sync.WaitGroup
	for i, lis := range listeners {
		serve := specs[i].serve
		wg.Go(func() { _ = acceptLoop(sctx, lis, serve) })
	}
	return func() { cancel(); wg.Wait() }, nil
}

func nsName(nsPath string) string {
	if nsPath == "" {
		return "the node's netns"
	}
	return nsPath
}

// Unenroll closes the workload's listeners and connections and removes
// every capture rule from its namespace.
func (p *Proxy) Unenroll(ctx context.Context, key string) error {
	if err := CheckWorkloadKey(key); err != nil {
		return fmt.Errorf("node proxy: unenroll: %w", err)
	}
	p.enrollMu.Lock()
	defer p.enrollMu.Unlock()
	p.mu.Lock()
	pd := p.pods[key]
	delete(p.pods, key)
	p.mu.Unlock()
	if pd == nil {
		return kindErrorf(ErrNotEnrolled, "node proxy: unenroll %s: %w; GET /config_dump lists the enrolled workloads", key, ErrNotEnrolled)
	}
	if pd.host {
		return p.unenrollHost(ctx, key)
	}
	pd.stop()
	p.signal()
	if err := capture.Remove(ctx, pd.nsPath, pd.capture); err != nil {
		return fmt.Errorf("node proxy: unenroll %s: %w", key, err)
	}
	p.log.Info("workload unenrolled", "workload", key, "netns", pd.nsPath)
	return nil
}

func (p *Proxy) stopPods() {
	p.enrollMu.Lock()
	defer p.enrollMu.Unlock()
	p.mu.Lock()
	pods := p.pods
	p.pods = map[string]*pod{}
	p.runCtx = nil
	p.mu.Unlock()
	for _, pd := range pods {
		pd.stop()
	}
	p.stopHost()
}

// Enrolled maps each enrolled workload to where it is captured: its
// network namespace path, or "host" for host mode.
func (p *Proxy) Enrolled() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.pods))
	for key, pd := range p.pods {
		out[key] = pd.nsPath
		if pd.host {
			out[key] = "host"
		}
	}
	return out
}

func (p *Proxy) podOf(key string) *pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pods[key]
}

// podNetNS is the network namespace a workload's connections are dialled
// from: an enrolled workload's, or one being enrolled (its listeners may
// already have accepted a tunnel).
func (p *Proxy) podNetNS(key string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pd := p.pods[key]; pd != nil {
		return pd.nsPath, true
	}
	ns, ok := p.enrolling[key]
	return ns, ok
}

// serveCaptured forwards an outbound connection redirected to 15001.
func (p *Proxy) serveCaptured(ctx context.Context, c net.Conn, key string) {
	dst, err := netns.OriginalDst(c)
	if err != nil {
		p.log.Warn("outbound connection without original destination", "workload", key, "err", err)
		c.Close()
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if dst == addrPortOf(c.LocalAddr()) {
		// Made to the outbound port itself, not redirected: forwarding it
		// would dial this same listener again, and again.
		p.refuse(telemetry.Labels{Reporter: telemetry.ReporterSource}, addrPortOf(c.RemoteAddr()), dst, func(error) error { return nil },
			fmt.Errorf("node proxy: connection to the proxy's outbound port %s itself (not a redirected one) refused", dst))
		c.Close()
		return
	}
	p.outbound(ctx, c, dst, key, nil)
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
	if p.isProxyPort(dstAddr.Port()) {
		// Addressed to one of the proxy's own ports: forwarding it would
		// reach this proxy again, in a loop.
		m.Finish(p.access, telemetry.Result{Err: fmt.Errorf("node proxy: plaintext inbound to %s refused: that is the proxy's own port", dstAddr), Flags: telemetry.FlagConnectFailure})
		return
	}
	if dst == nil {
		m.Finish(p.access, telemetry.Result{Err: fmt.Errorf("node proxy: plaintext inbound to %s: no workload of node %s has that address", dstAddr, p.opts.Node), Flags: telemetry.FlagConnectFailure})
		return
	}
	up := &upstream{m: m, access: p.access}
	pc := policy.Conn{
		SrcIP: src.Addr(), DstNamespace: dst.Proto.GetNamespace(), DstName: dst.Proto.GetName(),
		DstIP: dstAddr.Addr(), DstPort: dstAddr.Port(),
	}
	d, release := p.authz.Admit(pc, func(d policy.Decision) { up.revoke(d); _ = c.Close() })
	if !d.Allowed {
		err := fmt.Errorf("node proxy: plaintext inbound: %s", d)
		if p.needsIdentity(cfg, pc, d) {
			err = fmt.Errorf("%w: %s", errMTLSRequired, d)
		}
		m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagDenied, Policy: d.Policy.String()})
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
	telemetry.Relay(c, up)
}

// errMTLSRequired refuses plaintext to a destination that accepts only
// authenticated peers: STRICT peer authentication (MeshConfig mtlsMode, which
// the control plane sends as a DENY policy for connections without a peer
// identity) or any policy that a peer identity would satisfy.
var errMTLSRequired = errors.New("node proxy: plaintext refused: the destination requires mTLS (STRICT peer authentication); reach it through the mesh")

// needsIdentity reports whether denied plaintext conn would have passed
// with a peer identity (that of the source workload when it is known): the
// policy that refused it asks for mTLS, not for another client.
func (p *Proxy) needsIdentity(cfg *Config, conn policy.Conn, denied policy.Decision) bool {
	conn.SrcIdentity = "spiffe://" + p.opts.Bundle.TrustDomain().Name() + "/ns/-/sa/-"
	if ws := cfg.Workloads(conn.SrcIP); len(ws) > 0 && !ws[0].Identity.IsZero() {
		conn.SrcIdentity = ws[0].Identity.String()
	}
	d := cfg.Policies.Check(conn)
	return d.Allowed || d.Policy != denied.Policy
}

// dialWorkload connects to a local workload: inside its namespace from the
// original client address when it is enrolled, else plain TCP.
func (p *Proxy) dialWorkload(ctx context.Context, w *Workload, src, dst netip.AddrPort) (net.Conn, error) {
	if ns, ok := p.podNetNS(w.Key()); ok {
		d := netns.Dialer{NetNS: ns, Transparent: true, LocalAddr: netip.AddrPortFrom(src.Addr(), 0), Timeout: 10 * time.Second}
		return d.DialContext(ctx, "tcp", dst.String())
	}
	return p.plainDial(ctx, netip.Addr{}, dst)
}

// dialHBONE opens the outer connection of a tunnel: from inside the source
// workload's namespace, from its address, when it is enrolled.
func (p *Proxy) dialHBONE(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	if src.IsValid() {
		for _, w := range p.cfg.Load().Workloads(src) {
			if ns, ok := p.podNetNS(w.Key()); ok {
				d := netns.Dialer{NetNS: ns, LocalAddr: netip.AddrPortFrom(src, 0), Timeout: 10 * time.Second}
				return d.DialContext(ctx, "tcp", dst.String())
			}
		}
	}
	return p.plainDial(ctx, src, dst)
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

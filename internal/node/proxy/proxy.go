// Package proxy is the node proxy's data path: it keeps an indexed view of
// the xDS snapshot, terminates HBONE for the workloads on this node (policy,
// telemetry, upstream dial) and, in explicit mode, tunnels the connections
// apps make to local listeners to the right endpoint over HBONE.
//
// HBONE addressing follows ztunnel: a tunnel goes to the destination
// workload's own address on the HBONE port, and the destination node proxy
// listens there (inside the pod's namespace under in-pod capture, on the
// workload's host address in explicit mode). The listener's local address
// therefore names the destination workload before the TLS handshake, which is
// how the server picks the certificate it presents.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/node/policy"
	"github.com/ambitmesh/ambit/internal/xdsclient"
)

// DefaultHBONEPort is the port HBONE tunnels are addressed to.
const DefaultHBONEPort = 15008

// Options configure a Proxy.
type Options struct {
	// Node is the name of this node; workloads whose node matches are local.
	Node string
	// Cluster is reported in telemetry labels and baggage.
	Cluster string
	// Certs supplies workload certificates (an *identity.Manager).
	Certs identity.Source
	// Bundle is the trust bundle; updated from xDS TrustBundle resources.
	Bundle *identity.Bundle
	// HBONEPort is the port of the inbound listeners on each local workload
	// address and of outbound tunnels. Default DefaultHBONEPort.
	HBONEPort uint16
	// Explicit lists the local listeners of explicit mode.
	Explicit []Explicit
	// DialWorkload connects an inbound connection to local workload w at
	// dst; src is the original client address (from the forwarded header,
	// else the tunnel's peer). Default: for an enrolled workload, from src
	// (IP_TRANSPARENT) inside its namespace; otherwise plain TCP ignoring
	// src, which is right in explicit mode.
	DialWorkload func(ctx context.Context, w *Workload, src, dst netip.AddrPort) (net.Conn, error)
	// DialPassthrough connects an outbound connection to a destination
	// outside the mesh. Default: a plain TCP dial (marked while host
	// capture is on).
	DialPassthrough func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// HostNetNS is the network namespace of host-mode workloads
	// (EnrollHost): where their rules go and the proxy's host sockets are
	// made. Empty: the proxy's own namespace, which is the host's; tests
	// point it at a namespace playing the host.
	HostNetNS string
	// HTTPProxies are explicit-mode HTTP CONNECT proxy listeners: apps
	// send "CONNECT ip:port" and the connection is forwarded like one made
	// to an Explicit listener targeting ip:port.
	HTTPProxies []HTTPProxy
	// Logger is the component logger; AccessLog receives one line per
	// connection (nil: Logger).
	Logger, AccessLog *slog.Logger
	// Dialer overrides the HBONE dialer options (Source and Bundle are
	// filled in from Certs and Bundle).
	Dialer hbone.DialerConfig
	// Server overrides the HBONE server options (Source, Bundle, Identity,
	// Handler are filled in).
	Server hbone.ServerConfig
}

// Explicit is one explicit-mode listener: apps connect to Listen and are
// tunnelled to Target (a service VIP:port or a workload ip:port) as Source.
type Explicit struct {
	Listen netip.AddrPort
	Target netip.AddrPort
	// Source is the local workload "<namespace>/<name>" the connections come
	// from; when it is not on this node they are refused. Empty: the local
	// workload whose address the client connected from, else the node's only
	// local workload.
	Source string
}

// ParseExplicit parses "listen=target[@namespace/name]", e.g.
// "127.0.0.1:9080=10.96.0.10:80@shop/web-1".
func ParseExplicit(s string) (Explicit, error) {
	var e Explicit
	rest, src, hasSrc := cutLast(s, "@")
	l, t, ok := strings.Cut(rest, "=")
	if !ok {
		return e, fmt.Errorf("node proxy: explicit %q: want listen=target[@namespace/name], e.g. 127.0.0.1:9080=10.96.0.10:80", s)
	}
	var err error
	if e.Listen, err = netip.ParseAddrPort(l); err != nil {
		return e, fmt.Errorf("node proxy: explicit %q: listen address: %w", s, err)
	}
	if e.Target, err = netip.ParseAddrPort(t); err != nil {
		return e, fmt.Errorf("node proxy: explicit %q: target must be ip:port: %w", s, err)
	}
	if hasSrc {
		if err := CheckWorkloadKey(src); err != nil {
			return e, fmt.Errorf("node proxy: explicit %q: source %w", s, err)
		}
		e.Source = src
	}
	return e, nil
}

// Proxy is a node proxy's data path. Create it with New, feed it snapshots
// with Update (or let Run watch an xDS client), and serve with Run.
type Proxy struct {
	opts   Options
	log    *slog.Logger
	access *slog.Logger
	cfg    atomic.Pointer[Config]
	authz  *policy.Authorizer
	server *hbone.Server
	dialer *hbone.Dialer

	changed       chan struct{} // signalled (non-blocking) when cfg changes
	ready         chan struct{} // closed once the explicit listeners are bound
	explicitAddrs []netip.AddrPort
	proxyAddrs    []netip.AddrPort
	// enrollMu serialises Enroll, EnrollHost, Unenroll and stopPods: each
	// decides from the enrolments in force. Taken before host.mu and mu.
	enrollMu     sync.Mutex
	mu           sync.Mutex
	inbound      map[netip.AddrPort]*listener // HBONE listeners by address
	listenFailed map[netip.AddrPort]bool
	pods         map[string]*pod // enrolled workloads by key
	// enrolling maps in-pod enrolments under way to their netns: their
	// listeners accept before the workload joins pods, and what they accept
	// must already be dialled from inside the pod.
	enrolling  map[string]string
	runCtx     context.Context // Run's context, nil when not running
	host       hostCapture
	hostActive atomic.Bool // host rules installed: the proxy's sockets need the mark
	// hostListening: host mode's listeners are open (guarded by mu).
	hostListening bool
	waypoints     waypointHealth
}

type listener struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// New checks opts and builds the HBONE server and dialer; it does no I/O.
func New(opts Options) (*Proxy, error) {
	if opts.Node == "" {
		return nil, errors.New("node proxy: Options.Node is empty; want this node's name")
	}
	if opts.Certs == nil || opts.Bundle == nil {
		return nil, errors.New("node proxy: Options.Certs and Options.Bundle are required")
	}
	if opts.HBONEPort == 0 {
		opts.HBONEPort = DefaultHBONEPort
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AccessLog == nil {
		opts.AccessLog = opts.Logger
	}
	p := &Proxy{
		opts:         opts,
		log:          opts.Logger,
		access:       opts.AccessLog,
		authz:        policy.NewAuthorizer(nil),
		changed:      make(chan struct{}, 1),
		ready:        make(chan struct{}),
		inbound:      map[netip.AddrPort]*listener{},
		pods:         map[string]*pod{},
		enrolling:    map[string]string{},
		listenFailed: map[netip.AddrPort]bool{},
	}
	if p.opts.DialWorkload == nil {
		p.opts.DialWorkload = p.dialWorkload
	}
	if p.opts.DialPassthrough == nil {
		p.opts.DialPassthrough = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			return p.plainDial(ctx, netip.Addr{}, dst)
		}
	}
	p.cfg.Store(emptyConfig())

	sc := opts.Server
	sc.Source, sc.Bundle, sc.Logger = opts.Certs, opts.Bundle, opts.Logger
	sc.Identity = p.serverIdentity
	sc.Handler = hbone.HandlerFunc(p.serveInbound)
	var err error
	if p.server, err = hbone.NewServer(sc); err != nil {
		return nil, fmt.Errorf("node proxy: %w", err)
	}
	dc := opts.Dialer
	dc.Source, dc.Bundle, dc.Logger = opts.Certs, opts.Bundle, opts.Logger
	if dc.DialTCP == nil {
		dc.DialTCP = p.dialHBONE
	}
	if p.dialer, err = hbone.NewDialer(dc); err != nil {
		return nil, fmt.Errorf("node proxy: %w", err)
	}
	return p, nil
}

// Config returns the configuration in force (never nil).
func (p *Proxy) Config() *Config { return p.cfg.Load() }

// Update installs the configuration of snapshot s: indexes, policies
// (re-checking live connections) and the trust bundle.
func (p *Proxy) Update(s *xdsclient.Snapshot) {
	cfg, problems := BuildConfig(s)
	for _, err := range problems {
		p.log.Warn("config problem", "generation", cfg.Generation, "err", err)
	}
	if tb := cfg.TrustBundle; tb != nil && tb.GetTrustDomain() == p.opts.Bundle.TrustDomain().Name() {
		if _, err := p.opts.Bundle.SetRootsPEM(tb.GetGeneration(), tb.GetRootsPem()); err != nil {
			p.log.Warn("trust bundle not applied", "generation", tb.GetGeneration(), "err", err)
		}
	}
	p.cfg.Store(cfg)
	if n := p.authz.Update(cfg.Policies); n > 0 {
		p.log.Info("policy update closed connections", "generation", cfg.Generation, "closed", n)
	}
	p.signal()
}

// signal wakes Run to reconcile listeners and certificates.
func (p *Proxy) signal() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends: it applies every snapshot of xc (when not nil),
// keeps an HBONE listener on each local workload address and serves the
// explicit listeners. It returns nil once ctx ends and everything stopped,
// or an error if an explicit listener cannot be opened.
func (p *Proxy) Run(ctx context.Context, xc *xdsclient.Client) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer p.dialer.Close()
	defer p.closeInbound()
	defer p.stopPods()
	p.mu.Lock()
	p.runCtx = ctx
	p.mu.Unlock()

	var addrs []netip.AddrPort
	for _, e := range p.opts.Explicit {
		lis, err := net.Listen("tcp", e.Listen.String())
		if err != nil {
			return fmt.Errorf("node proxy: explicit listener %s: %w", e.Listen, err)
		}
		addrs = append(addrs, lis.Addr().(*net.TCPAddr).AddrPort())
		wg.Go(func() { p.serveExplicit(ctx, lis, e) })
	}
	var proxyAddrs []netip.AddrPort
	for _, h := range p.opts.HTTPProxies {
		lis, err := net.Listen("tcp", h.Listen.String())
		if err != nil {
			return fmt.Errorf("node proxy: HTTP CONNECT proxy listener %s: %w", h.Listen, err)
		}
		proxyAddrs = append(proxyAddrs, lis.Addr().(*net.TCPAddr).AddrPort())
		wg.Go(func() { p.serveHTTPProxy(ctx, lis, h) })
	}
	p.mu.Lock()
	p.explicitAddrs = addrs
	p.proxyAddrs = proxyAddrs
	p.mu.Unlock()
	close(p.ready)
	if xc != nil {
		wg.Go(func() { _ = xc.Watch(ctx, p.Update) })
	}
	held := map[spiffeid.ID]bool{}
	for {
		p.reconcileInbound(ctx)
		p.reconcileHost(ctx)
		p.reconcileIdentities(ctx, &wg, held)
		select {
		case <-ctx.Done():
			return nil
		case <-p.changed:
		}
	}
}

// reconcileInbound opens an HBONE listener on every local workload address
// and closes those of addresses no longer local. An address that cannot be
// bound (not configured on this host) is logged and retried on the next
// update.
func (p *Proxy) reconcileInbound(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[netip.AddrPort]bool{}
	// Host mode's wildcard HBONE listener in this namespace serves every
	// local address.
	hostServes := p.hostListening && p.opts.HostNetNS == ""
	for _, w := range p.cfg.Load().NodeWorkloads(p.opts.Node) {
		if p.pods[w.Key()] != nil || hostServes {
			continue // served inside its own namespace, or by host mode
		}
		for _, a := range w.Addresses {
			want[netip.AddrPortFrom(a, p.opts.HBONEPort)] = true
		}
	}
	for ap, l := range p.inbound {
		if !want[ap] {
			l.cancel()
			<-l.done
			delete(p.inbound, ap)
		}
	}
	for ap := range want {
		if p.inbound[ap] != nil {
			continue
		}
		lis, err := net.Listen("tcp", ap.String())
		if err != nil {
			// Once per address: a pod address waiting for its enrolment is
			// normal and retried on every update.
			level := slog.LevelDebug
			if !p.listenFailed[ap] {
				p.listenFailed[ap] = true
				level = slog.LevelWarn
			}
			p.log.Log(ctx, level, "hbone listener not opened on workload address (not local to this host; enrol the workload's netns or add the address)", "addr", ap, "err", err)
			continue
		}
		delete(p.listenFailed, ap)
		lctx, lcancel := context.WithCancel(ctx)
		l := &listener{cancel: lcancel, done: make(chan struct{})}
		p.inbound[ap] = l
		go func() {
			defer close(l.done)
			// Own accept loop and ServeConn, not Server.Serve: closing this
			// listener must end its own connections only (Serve's exit closes
			// and waits for every connection of the server, pods' included,
			// while reconcileInbound holds p.mu, which their streams need).
			if err := acceptLoop(lctx, lis, func(c net.Conn) { p.server.ServeConn(lctx, c) }); err != nil {
				p.log.Warn("hbone listener stopped", "addr", ap, "err", err)
			}
		}()
	}
}

// reconcileIdentities fetches certificates for the identities of local
// workloads as they appear, so the first connection does not wait for the
// CA, and forgets those whose last workload left (when Certs can forget, as
// *identity.Manager does). held is the set fetched so far.
func (p *Proxy) reconcileIdentities(ctx context.Context, wg *sync.WaitGroup, held map[spiffeid.ID]bool) {
	want := map[spiffeid.ID]bool{}
	for _, w := range p.cfg.Load().NodeWorkloads(p.opts.Node) {
		if !w.Identity.IsZero() {
			want[w.Identity] = true
		}
	}
	for id := range want {
		if held[id] {
			continue
		}
		held[id] = true
		wg.Go(func() {
			if _, err := p.opts.Certs.Get(ctx, id); err != nil && ctx.Err() == nil {
				// Handshakes retry through Get; this only warns early.
				p.log.Warn("certificate not obtained", "identity", id, "err", err)
			}
		})
	}
	f, canForget := p.opts.Certs.(interface{ Forget(spiffeid.ID) })
	for id := range held {
		if !want[id] {
			delete(held, id)
			if canForget {
				f.Forget(id)
			}
		}
	}
}

func (p *Proxy) closeInbound() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ap, l := range p.inbound {
		l.cancel()
		<-l.done
		delete(p.inbound, ap)
	}
}

// Ready is closed once Run has bound the explicit listeners.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// ExplicitAddrs returns the bound explicit listener addresses, in the order
// of Options.Explicit (valid after Ready).
func (p *Proxy) ExplicitAddrs() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.explicitAddrs)
}

// HTTPProxyAddrs returns the bound HTTP CONNECT proxy addresses, in the
// order of Options.HTTPProxies (valid after Ready).
func (p *Proxy) HTTPProxyAddrs() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.proxyAddrs)
}

// InboundAddrs lists the HBONE listeners open now.
func (p *Proxy) InboundAddrs() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]netip.AddrPort, 0, len(p.inbound))
	for ap := range p.inbound {
		out = append(out, ap)
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return out
}

func cutLast(s, sep string) (string, string, bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

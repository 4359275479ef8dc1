// Package waypoint runs `ambit gateway` (ingress: HTTP listeners from the
// Gateway's Listener resources) and `ambit waypoint` (HBONE on 15008, one
// bound service per CONNECT authority) around the L7 engine of package
// proxy. Both join the mesh as gateway/<namespace>/<name> and take their
// configuration from xDS (xds.GatewayTypes) like `ambit node` does
// (package proxyboot).
package waypoint

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/proxyboot"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/waypoint/proxy"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	authzv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// TypeURLs are the xDS types a gateway or waypoint subscribes to (the
// control plane's xds.GatewayTypes).
var TypeURLs = []string{
	xdsclient.TypeURLOf[*cav1.TrustBundle](),
	xdsclient.TypeURLOf[*workloadv1.Workload](),
	xdsclient.TypeURLOf[*gatewayv1.Backend](),
	xdsclient.TypeURLOf[*gatewayv1.Secret](),
	xdsclient.TypeURLOf[*gatewayv1.RouteTable](),
	xdsclient.TypeURLOf[*gatewayv1.Listener](),
	xdsclient.TypeURLOf[*authzv1.Authorization](),
}

// DefaultHBONEPort is the waypoint's HBONE port.
const DefaultHBONEPort = 15008

// DefaultShutdownGrace is how long in-flight requests of a listener that
// is removed (or of every listener at exit) may take to finish.
const DefaultShutdownGrace = 5 * time.Second

// Options configure a gateway or waypoint process.
type Options struct {
	ControlPlane string // control plane xDS/CA address, host:port
	Gateway      string // "<namespace>/<name>" of the Gateway object
	Token        string // join token (ambit token create --gateway NS/NAME)
	CAPin        string // CA pin printed with the token
	TrustDomain  string // default cluster.local
	Cluster      string // reported in telemetry

	// Waypoint serves HBONE on HBONEPort instead of (besides) the
	// Listener ports: `ambit waypoint`.
	Waypoint  bool
	HBONEPort uint16
	// ListenAddress is the host the Listener ports are opened on; empty
	// is every interface.
	ListenAddress string
	// PortMap opens a Listener port on another local port (80 -> 8080):
	// for a gateway behind a port forward (a Service targetPort, a NAT
	// rule, a container port mapping), so it runs without the privilege
	// to bind low ports. The Listener keeps its own port for matching and
	// redirects, as it is the port clients connect to.
	PortMap map[uint32]uint32
	// HBONEAddress is the host of the HBONE listener; empty is every
	// interface.
	HBONEAddress string
	// UpstreamHBONEPort is the node proxies' HBONE port a waypoint
	// tunnels to endpoints with an identity (default DefaultHBONEPort).
	UpstreamHBONEPort uint16
	// PlaintextUpstreams makes a waypoint dial every endpoint as plain
	// TCP, as the ingress gateway does by default (tests without node
	// proxies).
	PlaintextUpstreams bool
	// MeshUpstreams makes an ingress gateway reach endpoints with a mesh
	// identity as a waypoint does: over HBONE through their node proxy,
	// with mutual TLS and the gateway's identity as the peer (Istio's
	// ingress in ambient mode), so STRICT mTLS admits its traffic. Off by
	// default: file-mode setups often run workloads without node proxies.
	MeshUpstreams bool

	AdminAddress     string // default 127.0.0.1:15000; "-" disables
	MetricsAddress   string // default :15020; "-" disables
	ReadinessAddress string // default :15021; "-" disables

	ShutdownGrace time.Duration
	// Limits of the downstream side (zero: the engine's defaults, see
	// proxy.Config).
	ReadHeaderTimeout    time.Duration
	IdleTimeout          time.Duration
	MaxHeaderBytes       int
	MaxConcurrentStreams uint32
	// TCPIdleTimeout closes a relayed TCP connection (TCP and TLS
	// listeners, a waypoint's TCP pass-through) on which no byte moved
	// either way for that long (zero: telemetry.DefaultTCPIdleTimeout,
	// Envoy's 1h; negative: never).
	TCPIdleTimeout time.Duration
	// BeforeTCPDial, when set, is called before a waypoint dials the
	// endpoint of a TCP pass-through stream (tests: to change the
	// policies while the dial is in flight).
	BeforeTCPDial func()

	Logger     *slog.Logger
	AccessLog  *slog.Logger
	XDSBackoff xdsclient.Backoff
}

// Gateway is a running gateway or waypoint.
type Gateway struct {
	opts      Options
	namespace string
	name      string
	log       *slog.Logger
	ready     chan struct{}
	synced    chan struct{}

	mu        sync.Mutex
	addrs     map[string]net.Addr
	listeners map[uint32]*served
	applyErr  error
	services  map[serviceKey]serviceTarget // waypoint: VIP:port -> service
	workloads map[netip.Addr]serviceTarget // waypoint: bound workload address -> it
	streams   map[*tcpStream]bool          // waypoint: live TCP pass-through streams
	// upstreamIDs: waypoint: endpoint address -> its workload identity,
	// for the HBONE tunnel to it.
	upstreamIDs map[netip.Addr]spiffeid.ID

	sess   *proxyboot.Session
	engine *proxy.Engine
	// dialer tunnels a waypoint's upstream connections (nil with
	// PlaintextUpstreams and for an ingress gateway without
	// MeshUpstreams).
	dialer *hbone.Dialer
}

type served struct {
	addr   net.Addr
	family string // proxy.FamilyHTTP, FamilyTLS or FamilyTCP
	cancel context.CancelFunc
	done   chan struct{}
}

// wanted is what a snapshot asks of one port: a listener name (for logs)
// and how the port is served.
type wanted struct {
	name, family string
}

// New applies defaults and checks opts; it does no I/O.
func New(opts Options) (*Gateway, error) {
	comp := "gateway"
	if opts.Waypoint {
		comp = "waypoint"
	}
	if err := proxyboot.CheckRequired(comp,
		[2]string{"control plane address", opts.ControlPlane}, [2]string{"gateway (namespace/name)", opts.Gateway},
		[2]string{"join token", opts.Token}, [2]string{"CA pin", opts.CAPin}); err != nil {
		return nil, err
	}
	ns, name, ok := strings.Cut(opts.Gateway, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("%s: gateway %q: want <namespace>/<name>, e.g. infra/edge", comp, opts.Gateway)
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if _, err := spiffeid.TrustDomainFromString(opts.TrustDomain); err != nil {
		return nil, fmt.Errorf("%s: trust domain %q: %w", comp, opts.TrustDomain, err)
	}
	if opts.HBONEPort == 0 {
		opts.HBONEPort = DefaultHBONEPort
	}
	if opts.UpstreamHBONEPort == 0 {
		opts.UpstreamHBONEPort = DefaultHBONEPort
	}
	if opts.AdminAddress == "" {
		opts.AdminAddress = "127.0.0.1:15000"
	}
	if opts.MetricsAddress == "" {
		opts.MetricsAddress = ":15020"
	}
	if opts.ReadinessAddress == "" {
		opts.ReadinessAddress = ":15021"
	}
	if opts.TCPIdleTimeout == 0 {
		opts.TCPIdleTimeout = telemetry.DefaultTCPIdleTimeout
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Gateway{
		opts: opts, namespace: ns, name: name, log: opts.Logger.With("component", comp),
		ready: make(chan struct{}), synced: make(chan struct{}),
		addrs: map[string]net.Addr{}, listeners: map[uint32]*served{}, streams: map[*tcpStream]bool{},
	}, nil
}

// Ready is closed once the endpoints are bound and the process is
// subscribed (not necessarily synced; see Synced).
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Synced is closed once a complete configuration was applied and its
// listeners opened.
func (g *Gateway) Synced() <-chan struct{} { return g.synced }

// Addr returns the bound address of "admin", "metrics", "readiness" or
// "hbone" (nil when disabled or before Ready).
func (g *Gateway) Addr(name string) net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.addrs[name]
}

// ListenerAddrs returns the bound address of each open Listener port.
func (g *Gateway) ListenerAddrs() map[uint32]net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := make(map[uint32]net.Addr, len(g.listeners))
	for p, s := range g.listeners {
		m[p] = s.addr
	}
	return m
}

// Run joins, subscribes and serves until ctx ends; it returns nil then, or
// the error that stopped it before (join refused, a port in use).
func (g *Gateway) Run(ctx context.Context) error {
	comp := "gateway"
	reporter := telemetry.ReporterSource
	if g.opts.Waypoint {
		comp, reporter = "waypoint", "waypoint"
	}
	td := spiffeid.RequireTrustDomainFromString(g.opts.TrustDomain)
	id, err := identity.WorkloadID(td, g.namespace, g.name)
	if err != nil {
		return fmt.Errorf("%s: %w", comp, err)
	}
	if g.sess, err = proxyboot.Join(ctx, proxyboot.Options{
		ControlPlane: g.opts.ControlPlane, Token: g.opts.Token, CAPin: g.opts.CAPin, ID: id,
		NodeID: "gateway/" + g.namespace + "/" + g.name, TypeURLs: TypeURLs,
		Logger: g.opts.Logger, XDSBackoff: g.opts.XDSBackoff,
	}); err != nil {
		return fmt.Errorf("%s: %w", comp, err)
	}
	defer g.sess.Close()
	ecfg := proxy.Config{
		Logger: g.log.With("component", "proxy"), AccessLog: g.opts.AccessLog, Reporter: reporter,
		ReadHeaderTimeout: g.opts.ReadHeaderTimeout, IdleTimeout: g.opts.IdleTimeout, TCPIdleTimeout: g.opts.TCPIdleTimeout,
		MaxHeaderBytes: g.opts.MaxHeaderBytes, MaxConcurrentStreams: g.opts.MaxConcurrentStreams,
		Self: telemetry.Peer{Workload: g.name, Namespace: g.namespace, Principal: id.String(), App: g.name,
			CanonicalService: g.name, CanonicalRevision: "latest", Cluster: g.opts.Cluster},
	}
	if (g.opts.Waypoint || g.opts.MeshUpstreams) && !g.opts.PlaintextUpstreams {
		d, err := hbone.NewDialer(hbone.DialerConfig{Source: g.sess.Certs, Bundle: g.sess.Bundle, Logger: g.log.With("component", "hbone")})
		if err != nil {
			return fmt.Errorf("%s: %w", comp, err)
		}
		// Closed after the engine (deferred later, runs earlier), whose
		// idle upstream connections are tunnels of this dialer.
		defer d.Close()
		g.dialer = d
		ecfg.DialContext = g.upstreamDialer(d, nil)
		ecfg.HBONE = g.reachedOverHBONE
	}
	if g.opts.Waypoint {
		ecfg.Waypoint = g.opts.Gateway
	}
	if g.engine, err = proxy.New(ecfg); err != nil {
		return fmt.Errorf("%s: %w", comp, err)
	}
	defer g.engine.Close()
	reg, err := proxyboot.Registry()
	if err != nil {
		return fmt.Errorf("%s: %w", comp, err)
	}
	if err := proxy.Register(reg); err != nil {
		return fmt.Errorf("%s: %w", comp, err)
	}

	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Listeners drain (Serve's graceful shutdown) before the engine closes.
	defer g.closeListeners()
	defer wg.Wait()
	defer stop()
	err = proxyboot.ServeEndpoints(ctx, &wg, []proxyboot.Endpoint{
		{Name: "admin", Address: g.opts.AdminAddress, Handler: g.adminHandler()},
		{Name: "metrics", Address: g.opts.MetricsAddress, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})},
		{Name: "readiness", Address: g.opts.ReadinessAddress, Handler: proxyboot.Readiness(g.synced)},
	}, func(name string, a net.Addr) { g.mu.Lock(); g.addrs[name] = a; g.mu.Unlock() })
	if err != nil {
		return fmt.Errorf("%s: %w", comp, err)
	}
	if g.opts.Waypoint {
		if err := g.startHBONE(ctx, &wg); err != nil {
			return fmt.Errorf("%s: %w", comp, err)
		}
	}
	g.sess.RunBackground(ctx, &wg)
	wg.Go(func() { _ = g.sess.XDS.Watch(ctx, func(s *xdsclient.Snapshot) { g.apply(ctx, s) }) })
	close(g.ready)
	g.log.Info(comp+" started", "gateway", g.opts.Gateway, "identity", id)
	<-ctx.Done()
	return nil
}

// apply installs one accepted snapshot: trust bundle, engine config,
// waypoint service index, then the listener set (opened after the engine
// has their routes, closed after it no longer has them).
func (g *Gateway) apply(ctx context.Context, s *xdsclient.Snapshot) {
	if err := g.sess.ApplyTrustBundle(s); err != nil {
		g.log.Warn("trust bundle not applied", "generation", s.Generation(), "error", err)
	}
	err := g.engine.ApplySnapshot(s)
	g.mu.Lock()
	g.applyErr = err
	g.services = serviceIndex(s, g.namespace, g.name)
	g.workloads = workloadIndex(s, g.namespace, g.name)
	g.upstreamIDs = upstreamIdentities(s)
	g.mu.Unlock()
	g.recheckStreams()
	want := map[uint32]wanted{}
	for _, l := range xdsclient.All[*gatewayv1.Listener](s) {
		if f := proxy.Family(l.GetProtocol()); f != "" {
			// Listeners sharing a port are of one family (the control
			// plane refuses mixes); the engine serves them all.
			want[l.GetPort()] = wanted{name: l.GetName(), family: f}
		}
	}
	ok := g.reconcile(ctx, want)
	if ok && s.Synced() {
		select {
		case <-g.synced:
		default:
			close(g.synced)
			g.log.Info("configuration synced", "generation", s.Generation(), "listeners", len(want))
		}
	}
}

// reconcile opens the wanted ports not open yet and closes the others
// (and a port whose family changed, to reopen it). A port that cannot be
// opened is logged and retried at the next snapshot; false then.
func (g *Gateway) reconcile(ctx context.Context, want map[uint32]wanted) bool {
	// Only the Watch goroutine changes the set; the lock guards readers,
	// and is not held while a removed listener drains.
	var gone []*served
	g.mu.Lock()
	for port, s := range g.listeners {
		if w, ok := want[port]; !ok || w.family != s.family {
			gone = append(gone, s)
			delete(g.listeners, port)
			g.log.Info("listener closed", "port", port)
		}
	}
	g.mu.Unlock()
	for _, s := range gone {
		s.cancel()
		<-s.done // the port is released before it could be wanted again
	}
	all := true
	for port, w := range want {
		g.mu.Lock()
		open := g.listeners[port] != nil
		g.mu.Unlock()
		if open {
			continue
		}
		local := port
		if p, ok := g.opts.PortMap[port]; ok {
			local = p
		}
		addr := net.JoinHostPort(g.opts.ListenAddress, strconv.FormatUint(uint64(local), 10))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			g.log.Error("listener not opened", "listener", w.name, "address", addr, "error", err)
			all = false
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		s := &served{addr: ln.Addr(), family: w.family, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(s.done)
			if err := g.engine.ServeListener(lctx, ln, port, w.family, g.opts.ShutdownGrace); err != nil {
				g.log.Error("listener stopped", "listener", w.name, "address", addr, "error", err)
			}
		}()
		g.mu.Lock()
		g.listeners[port] = s
		g.mu.Unlock()
		g.log.Info("listener opened", "listener", w.name, "family", w.family, "address", ln.Addr().String())
	}
	return all
}

func (g *Gateway) closeListeners() {
	g.mu.Lock()
	ls := g.listeners
	g.listeners = map[uint32]*served{}
	g.mu.Unlock()
	for _, s := range ls {
		s.cancel()
		<-s.done
	}
}

// ConfigDump is the admin /config_dump answer.
type ConfigDump struct {
	Gateway    string                                `json:"gateway"`
	Mode       string                                `json:"mode"`
	Generation uint64                                `json:"generation"`
	Synced     bool                                  `json:"synced"`
	XDS        xdsclient.Status                      `json:"xds"`
	Identities []string                              `json:"identities"`
	Listeners  map[string]string                     `json:"listeners"` // port -> bound address
	ApplyError string                                `json:"applyError,omitempty"`
	Resources  map[string]map[string]json.RawMessage `json:"resources"`
}

func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		snap := g.sess.XDS.Current()
		mode := "gateway"
		if g.opts.Waypoint {
			mode = "waypoint"
		}
		d := ConfigDump{Gateway: g.opts.Gateway, Mode: mode, Generation: snap.Generation(), Synced: snap.Synced(),
			XDS: g.sess.XDS.Status(), Listeners: map[string]string{}}
		for _, id := range g.sess.Certs.Identities() {
			d.Identities = append(d.Identities, id.String())
		}
		g.mu.Lock()
		for p, s := range g.listeners {
			d.Listeners[strconv.FormatUint(uint64(p), 10)] = s.addr.String()
		}
		if g.applyErr != nil {
			d.ApplyError = g.applyErr.Error()
		}
		g.mu.Unlock()
		var err error
		if d.Resources, err = proxyboot.DumpResources(snap); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		redactSecrets(d.Resources)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d)
	})
	return mux
}

// redactSecrets replaces the private keys in a resource dump: the admin
// endpoint shows which certificates a gateway serves, never their keys.
func redactSecrets(res map[string]map[string]json.RawMessage) {
	secrets := res[xdsclient.TypeURLOf[*gatewayv1.Secret]()]
	for name, raw := range secrets {
		var m map[string]any
		if json.Unmarshal(raw, &m) != nil {
			delete(secrets, name)
			continue
		}
		if _, ok := m["privateKeyPem"]; ok {
			m["privateKeyPem"] = "(redacted)"
		}
		secrets[name], _ = json.Marshal(m)
	}
}

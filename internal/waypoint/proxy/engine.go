// Package proxy is the L7 engine of ambit's waypoint and ingress gateway:
// an http.Handler that routes requests with a compiled route.Table, runs
// the Gateway API filters, picks an endpoint with an lb.Balancer and
// streams the request to it, with retries, timeouts, mirrors, telemetry and
// an access log line per request.
//
// # Model
//
// The configuration (listeners, waypoint route tables, backends) arrives
// as whole xDS snapshots. Apply compiles one into an immutable config and
// publishes it through an atomic pointer, so requests never take a lock
// and a push never blocks them: a request keeps the config it started
// with. Balancers are the only state carried from one config to the next
// (one per backend and service port), so in-flight counts and health
// survive pushes.
//
// Forwarding is net/http/httputil.ReverseProxy (hop-by-hop header
// hygiene per RFC 9110 §7.6.1, Upgrade/WebSocket switching, trailers,
// streaming with immediate flushes for bodies of unknown length) over the
// engine's own RoundTripper, which picks the endpoint, applies
// timeouts.backendRequest per attempt and retries. HTTP/1.1 attempts go
// through h1Client, which does the round trip on the request's goroutine;
// upgrades and HTTP/2 upstreams through http.Transport.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambitmesh/ambit/internal/node/policy"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	_ "github.com/ambitmesh/ambit/internal/waypoint/filter/builtin" // every built-in filter
	"github.com/ambitmesh/ambit/internal/waypoint/lb"
	"github.com/ambitmesh/ambit/internal/waypoint/route"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	authzv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Defaults for zero Config fields.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
	// DefaultMaxConcurrentStreams is Envoy's edge recommendation.
	DefaultMaxConcurrentStreams = 100
	DefaultDialTimeout          = 5 * time.Second
	DefaultMirrorTimeout        = 10 * time.Second
	// DefaultRetryBackoff is the base backoff when a retry policy sets
	// none (Envoy's 25 ms).
	DefaultRetryBackoff = 25 * time.Millisecond
	// maxMirrorsInFlight bounds mirror goroutines: a mirror that cannot
	// start is dropped, never queued, so a slow mirror backend cannot
	// make the proxy's memory grow.
	maxMirrorsInFlight = 256
)

// Config configures an Engine.
type Config struct {
	// Logger receives configuration problems; AccessLog one line per
	// request (nil: no access log).
	Logger    *slog.Logger
	AccessLog *slog.Logger

	// Reporter is the reporter label of the request metrics: "source"
	// for an ingress gateway (as Istio's), "waypoint" for a waypoint.
	Reporter string
	// Self describes this proxy; it is the source peer of the metrics of
	// an ingress gateway (the downstream client is unknown there).
	Self telemetry.Peer

	// ReadHeaderTimeout bounds how long a client may take to send a
	// request head (slowloris); IdleTimeout closes idle keep-alive
	// connections; MaxHeaderBytes bounds the request head (larger heads
	// are answered 431); MaxConcurrentStreams bounds the streams one
	// HTTP/2 client may have open.
	ReadHeaderTimeout    time.Duration
	IdleTimeout          time.Duration
	MaxHeaderBytes       int
	MaxConcurrentStreams uint32

	// DialTimeout bounds an upstream TCP connect.
	DialTimeout time.Duration
	// TCPIdleTimeout closes a TCP or TLS listener's connection on which
	// no byte moved either way for that long (zero:
	// telemetry.DefaultTCPIdleTimeout, Envoy's; negative: never).
	TCPIdleTimeout time.Duration
	// PreferIPv6 picks endpoints' IPv6 addresses first.
	PreferIPv6 bool
	// Balancer is the load balancing config of every backend (least
	// request unless set); a backend's LoadBalancer (the Service's
	// ambit.dev/lb-policy annotation) overrides its policy and hash key.
	Balancer lb.Config
	// DialContext, when set, replaces the plain TCP dialer for upstream
	// connections (a waypoint's HBONE tunnels, tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// HBONE, when set, reports whether DialContext reaches an endpoint
	// address over HBONE; such endpoints never get a BackendTLSPolicy's
	// TLS (the tunnel is mutual TLS already).
	HBONE func(netip.Addr) bool
	// Waypoint, "<namespace>/<name>", makes ApplySnapshot enforce the
	// AuthorizationPolicies that target this waypoint or its services on
	// ServiceHandler requests.
	Waypoint string
}

// Engine is the L7 engine. Create it with New, feed it with Apply or
// ApplySnapshot, serve with Handler/Serve, and Close it when done.
type Engine struct {
	cfg Config
	log *slog.Logger

	cur atomic.Pointer[config]
	// authz and authzTCP are the waypoint's policy engines for HTTP
	// requests and for TCP streams (nil: no policies).
	authz, authzTCP atomic.Pointer[policy.Engine]
	// workloads caches WorkloadHandler's configurations until the next
	// Apply.
	workloads sync.Map

	mu   sync.Mutex // serialises Apply
	bals map[balKey]*lb.Balancer
	// certs is the last good certificate of each Secret (see
	// applySecrets).
	certs map[string]*certEntry
	// tlsUps are the TLS originations of the current configuration's
	// backend ports, kept while their policy is unchanged.
	tlsUps map[balKey]*backendTLS

	rp      *httputil.ReverseProxy
	h1, h2c *http.Transport // upgrades, HTTP/2 upstreams
	fast    *h1Client       // every other HTTP/1.1 attempt
	// dial opens upstream connections (Config.DialContext or TCP).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// base is cancelled by Close; mirrors run under it.
	base    context.Context
	cancel  context.CancelFunc
	mirrors sync.WaitGroup
	mirSem  chan struct{}
	closed  atomic.Bool
}

type balKey struct {
	service string // "<namespace>/<name>"
	port    uint32
}

// config is one immutable compiled configuration.
type config struct {
	// listeners are the HTTP listeners' tables by port, then by the
	// listener hostname that best matches a request's Host.
	listeners map[uint32]*route.HostIndex[*route.Table]
	// tlsPorts are the HTTPS and TLS listeners by port, tlsListeners the
	// same by listener name; tcp the TCP listeners by port.
	tlsPorts     map[uint32]*tlsPort
	tlsListeners map[string]*tlsListener
	tcp          map[uint32]*tcpListener
	// services are waypoint route tables by resource name
	// ("<ns>/<name>" or "<ns>/<name>:<port>").
	services map[string]*route.Table
	// passthrough: "<ns>/<name>:<port>" of every service bound to a
	// waypoint -> a table with one route to the service itself, served
	// when no route table applies (Istio's default waypoint route).
	passthrough map[string]*route.Table
	routes      map[*gatewayv1.Route]*compiledRoute
	backends    map[balKey]*upstream
}

type compiledRoute struct {
	chain filter.Chain
	// err (rule filters) makes the route answer 500; report is every
	// problem, for Apply's error.
	err    error
	report error
	// backends parallels Route.Backends.
	backends []compiledBackend
}

type compiledBackend struct {
	chain filter.Chain
	err   error
}

// upstream is one (backend, service port) a route can send to.
type upstream struct {
	backend *gatewayv1.Backend
	port    uint32
	bal     *lb.Balancer
	// h2c: the port's appProtocol asks for HTTP/2 (without TLS, or in
	// ALPN when tls is set).
	h2c bool
	// tls, when set, originates TLS to the endpoints not reached over
	// HBONE (a BackendTLSPolicy).
	tls *backendTLS
}

// New builds an Engine with an empty configuration (every request is
// answered 404 until Apply). It does no I/O.
func New(cfg Config) (*Engine, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.TCPIdleTimeout == 0 {
		cfg.TCPIdleTimeout = telemetry.DefaultTCPIdleTimeout
	}
	if cfg.Reporter == "" {
		cfg.Reporter = telemetry.ReporterSource
	}
	if _, err := lb.New(cfg.Balancer); err != nil {
		return nil, fmt.Errorf("proxy: balancer config: %w", err)
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, bals: map[balKey]*lb.Balancer{}, mirSem: make(chan struct{}, maxMirrorsInFlight)}
	e.base, e.cancel = context.WithCancel(context.Background())
	dial := cfg.DialContext
	if dial == nil {
		d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
		dial = d.DialContext
	}
	e.dial = dial
	// One transport per upstream protocol: http.Transport pools
	// connections per endpoint address, which is the per-endpoint pool.
	e.h1, e.h2c = newTransports(dial)
	e.fast = newH1Client(dial)
	e.rp = &httputil.ReverseProxy{
		Rewrite:        e.rewrite,
		Transport:      (*roundTripper)(e),
		ErrorHandler:   e.errorHandler,
		ModifyResponse: e.modifyResponse,
		BufferPool:     bufferPool{},
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	e.cur.Store(&config{})
	return e, nil
}

func newTransports(dial func(ctx context.Context, network, addr string) (net.Conn, error)) (h1, h2c *http.Transport) {
	newTransport := func(h2c bool) *http.Transport {
		var p http.Protocols
		if h2c {
			p.SetUnencryptedHTTP2(true)
		} else {
			p.SetHTTP1(true)
		}
		return &http.Transport{
			DialContext:         dial,
			Protocols:           &p,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			// The proxy forwards the client's Accept-Encoding and must not
			// decompress behind its back.
			DisableCompression: true,
			ForceAttemptHTTP2:  false,
		}
	}
	return newTransport(false), newTransport(true)
}

type transportsKey struct{}

type transports struct {
	h1, h2c *http.Transport
	fast    *h1Client
}

// WithUpstreams gives the requests served under ctx their own upstream
// connections, dialled with dial, instead of the engine's shared pool;
// release closes them once idle. A waypoint gives each downstream
// connection its own so the tunnels to the endpoints carry that client's
// forwarded address (a shared tunnel would carry the first client's).
func (e *Engine) WithUpstreams(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (context.Context, func()) {
	t := &transports{}
	t.h1, t.h2c = newTransports(dial)
	t.fast = newH1Client(dial)
	return context.WithValue(ctx, transportsKey{}, t), func() {
		t.h1.CloseIdleConnections()
		t.h2c.CloseIdleConnections()
		t.fast.Close()
	}
}

// transport is the round tripper of an attempt: its request's
// WithUpstreams pool or the engine's; h1Client unless the attempt is
// HTTP/2 (h2c) or an upgrade.
func (e *Engine) transport(ctx context.Context, h2c, upgrade bool) http.RoundTripper {
	h1, h2, fast := e.h1, e.h2c, e.fast
	if t, ok := ctx.Value(transportsKey{}).(*transports); ok {
		h1, h2, fast = t.h1, t.h2c, t.fast
	}
	switch {
	case h2c:
		return h2
	case upgrade:
		return h1
	}
	return fast
}

// PickEndpoint picks an endpoint of a service port for a TCP connection
// from src (a waypoint passing a non-HTTP port through; a source-ip hash
// keys on src), and describes it for the connection's metrics (dst); done
// must be called when the connection ends. ok is false when the service
// has no endpoint.
func (e *Engine) PickEndpoint(service string, port uint32, src netip.Addr) (ep netip.AddrPort, dst telemetry.Peer, done func(), ok bool) {
	up := e.cur.Load().backends[balKey{service, port}]
	if up == nil {
		return netip.AddrPort{}, telemetry.Peer{}, nil, false
	}
	p, ok := up.bal.Pick(l4Request{src: src})
	if !ok {
		return netip.AddrPort{}, telemetry.Peer{}, nil, false
	}
	return p.Addr, endpointPeer(p), func() { up.bal.Done(p) }, true
}

// Close stops mirrors, waits for them and closes idle upstream
// connections. Requests in flight are not interrupted (their server's
// shutdown owns them).
func (e *Engine) Close() {
	e.closed.Store(true)
	e.cancel()
	e.mirrors.Wait()
	e.h1.CloseIdleConnections()
	e.h2c.CloseIdleConnections()
	e.fast.Close()
	e.mu.Lock()
	for _, t := range e.tlsUps {
		t.close()
	}
	e.mu.Unlock()
}

// ApplySnapshot applies the gateway resources of an xDS snapshot (see
// internal/control/xds GatewayTypes).
func (e *Engine) ApplySnapshot(s *xdsclient.Snapshot) error {
	var ls []*gatewayv1.Listener
	var ts []*gatewayv1.RouteTable
	var bs []*gatewayv1.Backend
	var ss []*gatewayv1.Secret
	for _, sec := range xdsclient.All[*gatewayv1.Secret](s) {
		ss = append(ss, sec)
	}
	for _, l := range xdsclient.All[*gatewayv1.Listener](s) {
		ls = append(ls, l)
	}
	for _, t := range xdsclient.All[*gatewayv1.RouteTable](s) {
		ts = append(ts, t)
	}
	for _, b := range xdsclient.All[*gatewayv1.Backend](s) {
		bs = append(bs, b)
	}
	err := e.Apply(ls, ts, bs, ss...)
	if e.cfg.Waypoint != "" {
		var ps []*authzv1.Authorization
		for _, a := range xdsclient.All[*authzv1.Authorization](s) {
			ps = append(ps, a)
		}
		err = errors.Join(err, e.ApplyAuthorization(ps))
	}
	return err
}

// ApplyAuthorization replaces the waypoint's policies (Config.Waypoint);
// requests already past their check are not affected, every later one
// is. Values that cannot be compiled are enforced fail-closed (a DENY
// rule matches, an ALLOW rule does not) and reported.
func (e *Engine) ApplyAuthorization(policies []*authzv1.Authorization) error {
	ns, name, _ := strings.Cut(e.cfg.Waypoint, "/")
	ref := policy.Ref{Namespace: ns, Name: name}
	pe := policy.NewWaypoint(policies, ref)
	e.authzTCP.Store(policy.NewWaypointTCP(policies, ref))
	e.authz.Store(pe)
	if p := pe.Problems(); len(p) > 0 {
		err := fmt.Errorf("proxy: authorization: %w", errors.Join(p...))
		e.log.Warn("proxy: authorization policies applied fail-closed", "error", err)
		return err
	}
	return nil
}

// Apply compiles and publishes a configuration. Problems (an invalid
// route, two HTTP listeners on one port, a filter that cannot be
// compiled, a Secret that does not parse) are reported together; the
// configuration is published anyway with the bad parts left out or
// answering 500 (a bad Secret keeps its last good certificate), so one bad
// object never takes the others down.
func (e *Engine) Apply(listeners []*gatewayv1.Listener, tables []*gatewayv1.RouteTable, backends []*gatewayv1.Backend, secrets ...*gatewayv1.Secret) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.workloads.Clear()
	certs, err := e.applySecrets(secrets)
	errs := []error{err}
	c := &config{
		listeners:    map[uint32]*route.HostIndex[*route.Table]{},
		tlsPorts:     map[uint32]*tlsPort{},
		tlsListeners: map[string]*tlsListener{},
		tcp:          map[uint32]*tcpListener{},
		services:     map[string]*route.Table{},
		passthrough:  map[string]*route.Table{},
		routes:       map[*gatewayv1.Route]*compiledRoute{},
		backends:     map[balKey]*upstream{},
	}
	addRoutes := func(rs []*gatewayv1.Route) {
		for _, r := range rs {
			c.routes[r] = compileRoute(r)
			if err := c.routes[r].report; err != nil {
				src := r.GetSource()
				errs = append(errs, fmt.Errorf("proxy: %s %s/%s rule %d: %w", src.GetKind(), src.GetNamespace(), src.GetName(), src.GetRule(), err))
			}
		}
	}
	for _, l := range listeners {
		port := l.GetPort()
		switch Family(l.GetProtocol()) {
		case FamilyHTTP:
			idx := c.listeners[port]
			if idx == nil {
				idx = &route.HostIndex[*route.Table]{}
				c.listeners[port] = idx
			}
			t, err := route.CompileListener(l)
			errs = append(errs, err)
			if !idx.Add(l.GetHostname(), t) {
				errs = append(errs, fmt.Errorf("proxy: listener %q: port %d already has an HTTP listener for hostname %q; give each listener of a port its own hostname", l.GetName(), port, l.GetHostname()))
				continue
			}
		case FamilyTLS:
			tl, err := compileTLSListener(l, certs)
			errs = append(errs, err)
			p := c.tlsPorts[port]
			if p == nil {
				p = &tlsPort{}
				c.tlsPorts[port] = p
			}
			if !p.byName.Add(l.GetHostname(), tl) {
				errs = append(errs, fmt.Errorf("proxy: listener %q: port %d already has a TLS listener for hostname %q; give each listener of a port its own hostname", l.GetName(), port, l.GetHostname()))
				continue
			}
			c.tlsListeners[l.GetName()] = tl
		case FamilyTCP:
			if _, dup := c.tcp[port]; dup {
				errs = append(errs, fmt.Errorf("proxy: listener %q: port %d already has a TCP listener; TCP listeners cannot share a port", l.GetName(), port))
				continue
			}
			t, err := route.CompileListener(l)
			errs = append(errs, err)
			c.tcp[port] = &tcpListener{name: l.GetName(), table: t}
		default:
			continue // HBONE (the waypoint's own), UDP: not this engine
		}
		for _, vh := range l.GetVirtualHosts() {
			addRoutes(vh.GetRoutes())
		}
	}
	for _, rt := range tables {
		name := rt.GetService().GetNamespace() + "/" + rt.GetService().GetName()
		if rt.GetPort() != 0 {
			name += fmt.Sprintf(":%d", rt.GetPort())
		}
		t, err := route.CompileRouteTable(rt)
		errs = append(errs, err)
		c.services[name] = t
		addRoutes(rt.GetRoutes())
	}
	// Balancers for every port a backend declares and every port a
	// route refers to.
	byName := make(map[string]*gatewayv1.Backend, len(backends))
	want := map[balKey]bool{}
	for _, b := range backends {
		name := b.GetNamespace() + "/" + b.GetName()
		byName[name] = b
		for _, p := range b.GetPorts() {
			want[balKey{name, p.GetPort()}] = true
			if b.GetWaypoint().GetName() != "" {
				r := passthroughRoute(b, p.GetPort())
				t, _ := route.CompileRouteTable(&gatewayv1.RouteTable{Routes: []*gatewayv1.Route{r}})
				c.passthrough[portKey(name, p.GetPort())] = t
				addRoutes([]*gatewayv1.Route{r})
			}
		}
	}
	for r := range c.routes {
		for _, br := range r.GetBackends() {
			if br.GetService() != "" {
				want[balKey{br.GetService(), br.GetPort()}] = true
			}
		}
		for _, f := range r.GetFilters() {
			if m := f.GetRequestMirror().GetBackend(); m.GetService() != "" {
				want[balKey{m.GetService(), m.GetPort()}] = true
			}
		}
	}
	for k := range want {
		b := byName[k.service]
		if b == nil {
			continue // the route's share answers 500 (no such backend)
		}
		bal, err := e.balancer(k, b)
		if err != nil {
			errs = append(errs, fmt.Errorf("proxy: backend %s port %d: %w", k.service, k.port, err))
			if bal == nil {
				continue
			}
		}
		if err := bal.Update(lb.FromBackend(b, k.port, e.cfg.PreferIPv6)); err != nil {
			errs = append(errs, fmt.Errorf("proxy: backend %s port %d: %w", k.service, k.port, err))
		}
		c.backends[k] = &upstream{backend: b, port: k.port, bal: bal, h2c: isH2C(b, k.port), tls: e.backendTLSFor(k, b)}
	}
	e.bals = make(map[balKey]*lb.Balancer, len(c.backends))
	for k, u := range c.backends {
		e.bals[k] = u.bal
	}
	e.certs = certs
	e.cur.Store(c)
	e.retireBackendTLS(c)
	err = errors.Join(errs...)
	if err != nil {
		e.log.Warn("proxy: configuration applied with errors", "error", err)
	}
	return err
}

// balancer returns the balancer of a backend port, kept from the last
// config so in-flight counts and health survive, switched to the policy
// the backend now asks for. A policy that cannot be used is reported and
// the balancer keeps its previous one (least request when new).
func (e *Engine) balancer(k balKey, b *gatewayv1.Backend) (*lb.Balancer, error) {
	cfg, err := lb.ConfigFor(e.cfg.Balancer, b)
	bal := e.bals[k]
	if bal == nil {
		var nerr error
		if bal, nerr = lb.New(cfg); nerr != nil {
			bal, _ = lb.New(e.cfg.Balancer) // New checked it
		}
		return bal, errors.Join(err, nerr)
	}
	if err == nil {
		err = bal.SetConfig(cfg)
	}
	return bal, err
}

// portKey is the "<ns>/<name>:<port>" key of config.passthrough (and of
// a port's own route table in config.services).
func portKey(name string, port uint32) string {
	return name + ":" + strconv.FormatUint(uint64(port), 10)
}

// passthroughRoute sends every request to the service port itself, with
// the default load balancing, no filters, timeouts or retries.
func passthroughRoute(b *gatewayv1.Backend, port uint32) *gatewayv1.Route {
	return passthroughRouteOf("Service", b, port)
}

// passthroughRouteOf is passthroughRoute with the source kind named
// (Service, or Workload for traffic addressed to a workload).
func passthroughRouteOf(kind string, b *gatewayv1.Backend, port uint32) *gatewayv1.Route {
	return &gatewayv1.Route{
		Source:   &gatewayv1.RouteSource{Kind: kind, Namespace: b.GetNamespace(), Name: b.GetName(), RuleName: "passthrough"},
		Match:    &gatewayv1.RouteMatch{},
		Backends: []*gatewayv1.BackendRef{{Service: b.GetNamespace() + "/" + b.GetName(), Port: port, Weight: 1}},
	}
}

func compileRoute(r *gatewayv1.Route) *compiledRoute {
	cr := &compiledRoute{}
	var errs []error
	cr.chain, cr.err = filter.Compile(r.GetFilters())
	if cr.err != nil {
		errs = append(errs, cr.err)
	}
	cr.backends = make([]compiledBackend, len(r.GetBackends()))
	for i, b := range r.GetBackends() {
		ch, err := filter.Compile(b.GetFilters())
		cr.backends[i] = compiledBackend{chain: ch, err: err}
		if err != nil {
			errs = append(errs, fmt.Errorf("backendRefs[%d] %s: %w", i, b.GetService(), err))
		}
	}
	// A route whose rule filters are broken answers 500 as a whole; a
	// broken backend filter only its backend's share.
	cr.report = errors.Join(errs...)
	return cr
}

// isH2C says whether the service port speaks HTTP/2 with prior knowledge.
func isH2C(b *gatewayv1.Backend, port uint32) bool {
	for _, p := range b.GetPorts() {
		if p.GetPort() != port {
			continue
		}
		switch strings.ToLower(p.GetAppProtocol()) {
		case "kubernetes.io/h2c", "h2c", "grpc", "http2":
			return true
		}
	}
	return false
}

// copyBuffers are ReverseProxy's body copy buffers. Without a pool it
// allocates 32 KiB per response, which made the garbage collector the
// largest cost of a small request (bench/gateway).
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type bufferPool struct{}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

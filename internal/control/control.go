// Package control runs the control plane: a config source feeds the
// translator, whose model the xDS server pushes to proxies; an admin HTTP
// endpoint serves metrics, readiness and what `ambit status` shows.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ambitmesh/ambit/internal/ca"
	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/source/file"
	"github.com/ambitmesh/ambit/internal/control/translate"
	"github.com/ambitmesh/ambit/internal/control/xds"
)

// Options configure a control plane.
type Options struct {
	// ConfigDir is the folder of YAML files (file mode).
	ConfigDir string
	// XDSAddress serves delta ADS (gRPC), default ":15010".
	XDSAddress string
	// AdminAddress serves /metrics, /readyz and /debug/*, default ":15014".
	AdminAddress string
	// StateDir keeps the CA's root and the join tokens across restarts.
	StateDir string
	// PluginCertsDir, when set, holds a user-supplied CA (see docs/identity.md).
	PluginCertsDir string
	// LeafTTL of issued workload certificates (default 24h).
	LeafTTL time.Duration
	// ServerNames are extra DNS names and IPs for the control plane's
	// serving certificate (the addresses proxies dial). The host name,
	// localhost and loopback addresses are always included.
	ServerNames []string
	// Debounce coalesces bursts of file changes.
	Debounce time.Duration
	Logger   *slog.Logger
}

// Control is a running control plane.
type Control struct {
	opts     Options
	log      *slog.Logger
	registry *prometheus.Registry
	xds      *xds.Server
	ca       *ca.CA
	tokens   *ca.TokenStore

	last  atomic.Pointer[translate.Result]
	authz atomic.Pointer[authIndex]
	// lastRes is the snapshot last was translated from, so the next one can
	// be translated as a change (translate.Retranslate). Only apply, which
	// the source calls from one goroutine, uses it.
	lastRes *resources.Resources
	// pushMu orders pushes so a bundle change and a config change never
	// overwrite each other with stale halves.
	pushMu sync.Mutex

	mu        sync.Mutex
	xdsAddr   net.Addr
	adminAddr net.Addr
	ready     chan struct{}
	readyOnce sync.Once
	// applied closes after the first translation was pushed; ready waits
	// for it and for the listeners.
	applied     chan struct{}
	appliedOnce sync.Once
}

// New builds a control plane; it does no I/O.
func New(opts Options) *Control {
	if opts.XDSAddress == "" {
		opts.XDSAddress = ":15010"
	}
	if opts.AdminAddress == "" {
		opts.AdminAddress = ":15014"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Control{
		opts:     opts,
		log:      opts.Logger.With("component", "control"),
		registry: reg,
		tokens:   ca.NewTokenStore(ca.TokensFile(opts.StateDir), nil),
		ready:    make(chan struct{}),
		applied:  make(chan struct{}),
	}
}

// Ready is closed once the first configuration has been translated and
// both listeners accept connections.
func (c *Control) Ready() <-chan struct{} { return c.ready }

// XDSAddr and AdminAddr are the bound addresses (useful with port 0).
func (c *Control) XDSAddr() net.Addr   { c.mu.Lock(); defer c.mu.Unlock(); return c.xdsAddr }
func (c *Control) AdminAddr() net.Addr { c.mu.Lock(); defer c.mu.Unlock(); return c.adminAddr }

// Result is the latest translation (nil before the first).
func (c *Control) Result() *translate.Result { return c.last.Load() }

// CA is the control plane's certificate authority (nil before Run opened it).
func (c *Control) CA() *ca.CA { c.mu.Lock(); defer c.mu.Unlock(); return c.ca }

// Run serves until ctx is cancelled.
func (c *Control) Run(ctx context.Context) error {
	if c.opts.StateDir == "" {
		return errors.New("control: a state directory is required (--state-dir) to keep the CA's root across restarts")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src := file.New(c.opts.ConfigDir, file.Options{Debounce: c.opts.Debounce, Logger: c.opts.Logger.With("component", "source/file")})
	// The trust domain comes from MeshConfig, so the CA opens on the
	// source's first snapshot, which waits for it before being applied
	// (changing the trust domain later needs a restart; apply reports it).
	first := make(chan *resources.Resources, 1)
	opened := make(chan struct{})
	setupDone := sync.OnceFunc(func() { close(opened) })
	defer setupDone()
	var firstOnce sync.Once
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := src.Run(gctx, func(res *resources.Resources) {
			firstOnce.Do(func() { first <- res; <-opened })
			if c.CA() != nil {
				c.apply(res)
			}
		})
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	})
	fail := func(err error) error {
		setupDone()
		cancel()
		_ = g.Wait()
		return err
	}
	var initial *resources.Resources
	select {
	case initial = <-first:
	case <-gctx.Done():
		if err := g.Wait(); err != nil {
			return fmt.Errorf("control: %w", err)
		}
		return nil
	}
	authority, err := ca.Open(ca.Options{
		StateDir: c.opts.StateDir, TrustDomain: translate.TrustDomain(initial), LeafTTL: c.opts.LeafTTL,
		PluginCertsDir: c.opts.PluginCertsDir, Logger: c.opts.Logger.With("component", "ca"),
	})
	if err != nil {
		return fail(fmt.Errorf("control: %w", err))
	}
	if err := ca.RegisterMetrics(c.registry); err != nil {
		return fail(fmt.Errorf("control: %w", err))
	}
	dns, ips := serverNames(c.opts.ServerNames)
	tlsConf, err := authority.ServerTLSConfig(dns, ips)
	if err != nil {
		return fail(fmt.Errorf("control: serving certificate: %w", err))
	}
	svc := ca.NewService(authority, ca.ServiceOptions{Authorizer: (*authorizer)(c), Tokens: c.tokens, Logger: c.opts.Logger.With("component", "ca")})
	c.mu.Lock()
	c.ca = authority
	c.xds = xds.NewServer(xds.Options{
		Logger:        c.opts.Logger.With("component", "xds"),
		Authenticator: svc,
		Registerer:    c.registry,
	})
	c.mu.Unlock()
	setupDone()

	var lc net.ListenConfig
	xl, err := lc.Listen(ctx, "tcp", c.opts.XDSAddress)
	if err != nil {
		return fail(fmt.Errorf("control: xDS listener: %w (is another control plane running? pick another port with --xds-address)", err))
	}
	al, err := lc.Listen(ctx, "tcp", c.opts.AdminAddress)
	if err != nil {
		xl.Close()
		return fail(fmt.Errorf("control: admin listener: %w (pick another port with --admin-address)", err))
	}
	c.mu.Lock()
	c.xdsAddr, c.adminAddr = xl.Addr(), al.Addr()
	c.mu.Unlock()

	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConf)), grpc.MaxConcurrentStreams(1<<16))
	c.xds.Register(gs)
	svc.Register(gs)
	admin := &http.Server{Handler: c.adminHandler(), ReadHeaderTimeout: 5 * time.Second}

	g.Go(func() error { c.pushBundles(gctx); return nil })
	g.Go(func() error {
		select {
		case <-c.applied:
			c.readyOnce.Do(func() { close(c.ready) })
		case <-gctx.Done():
		}
		return nil
	})
	g.Go(func() error {
		if err := gs.Serve(xl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("control: xDS server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := admin.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("control: admin server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		gs.Stop()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = admin.Shutdown(sctx)
		return nil
	})
	c.log.Info("control plane serving", "xds", xl.Addr().String(), "admin", al.Addr().String(),
		"configDir", c.opts.ConfigDir, "trustDomain", authority.TrustDomain().Name(), "caPin", authority.RootPin())
	return g.Wait()
}

// apply translates a snapshot and pushes it. Bad objects were already
// rejected by the translator; what was good still flows.
func (c *Control) apply(res *resources.Resources) {
	start := time.Now()
	result := translate.Retranslate(c.last.Load(), c.lastRes, res)
	c.lastRes = res
	for _, e := range result.SourceErrors {
		c.log.Error("config source problem; the file's last good objects stay in force", "error", e.Error())
	}
	for i := range result.Status {
		if o := &result.Status[i]; o.Rejected() {
			c.log.Warn("object rejected", "object", o.String(), "status", o.Problem())
		}
	}
	if td := c.ca.TrustDomain().Name(); result.Mesh.TrustDomain != td {
		c.log.Error("MeshConfig trust domain changed; restart the control plane (and re-join proxies) to use it",
			"serving", td, "configured", result.Mesh.TrustDomain)
	}
	c.authz.Store(newAuthIndex(result.Mesh))
	c.last.Store(result)
	c.push()
	c.log.Info("configuration applied",
		"workloads", len(result.Mesh.Workloads), "services", len(result.Mesh.Services),
		"gateways", len(result.Mesh.Gateways), "policies", len(result.Mesh.Policies),
		"took", time.Since(start).Round(time.Microsecond))
	c.appliedOnce.Do(func() { close(c.applied) })
}

// push sends the latest translation with the current trust bundle.
func (c *Control) push() {
	c.pushMu.Lock()
	defer c.pushMu.Unlock()
	r := c.last.Load()
	if r == nil {
		return
	}
	mesh := *r.Mesh // shallow: the translation result itself stays untouched
	b := c.ca.Bundle()
	mesh.TrustBundle = &model.TrustBundle{TrustDomain: b.TrustDomain.Name(), Generation: b.Generation, RootsPEM: b.PEM}
	// Objects the xDS layer cannot convert are logged by it; the rest is served.
	_ = c.xds.Update(&mesh)
}

// pushBundles re-pushes whenever the CA's roots change (root rotation).
func (c *Control) pushBundles(ctx context.Context) {
	_, changed := c.ca.WatchBundle()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		// Watch again before pushing, so a change during the push is not missed.
		var b ca.Bundle
		b, changed = c.ca.WatchBundle()
		c.log.Info("trust bundle changed; pushing it to every proxy", "generation", b.Generation, "roots", len(b.Roots))
		c.push()
	}
}

func (c *Control) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-c.ready:
			fmt.Fprintln(w, "ok")
		default:
			http.Error(w, "no configuration translated yet", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("GET /debug/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, c.Status())
	})
	mux.HandleFunc("GET /ca", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, c.caStatus()) })
	mux.HandleFunc("POST /ca/tokens", loopbackOnly(c.handleCreateToken))
	mux.HandleFunc("POST /ca/rotate/{phase}", loopbackOnly(c.handleRotate))
	mux.HandleFunc("GET /debug/model", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, c.last.Load())
	})
	return mux
}

// Status is what `ambit status` shows.
type Status struct {
	Proxies      []xds.ProxyStatus       `json:"proxies"`
	SourceErrors []resources.SourceError `json:"sourceErrors,omitempty"`
	Rejected     []RejectedObject        `json:"rejected,omitempty"`
	Counts       map[string]int          `json:"counts,omitempty"`
}

// RejectedObject is an object that was not accepted and why.
type RejectedObject struct {
	Object string `json:"object"`
	Reason string `json:"reason"`
}

// Status snapshots connected proxies and configuration problems.
func (c *Control) Status() Status {
	st := Status{Proxies: c.xds.Proxies()}
	if r := c.last.Load(); r != nil {
		st.SourceErrors = r.SourceErrors
		for i := range r.Status {
			if o := &r.Status[i]; o.Rejected() {
				st.Rejected = append(st.Rejected, RejectedObject{Object: o.String(), Reason: o.Problem()})
			}
		}
		st.Counts = map[string]int{
			"workloads": len(r.Mesh.Workloads), "services": len(r.Mesh.Services),
			"gateways": len(r.Mesh.Gateways), "policies": len(r.Mesh.Policies),
		}
	}
	return st
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

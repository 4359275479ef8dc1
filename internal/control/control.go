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
	// Tokens maps bootstrap tokens to the one proxy node ID each may use.
	Tokens map[string]string
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

	last atomic.Pointer[translate.Result]

	mu        sync.Mutex
	xdsAddr   net.Addr
	adminAddr net.Addr
	ready     chan struct{}
	readyOnce sync.Once
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
	log := opts.Logger.With("component", "control")
	return &Control{
		opts:     opts,
		log:      log,
		registry: reg,
		xds: xds.NewServer(xds.Options{
			Logger:        opts.Logger.With("component", "xds"),
			Authenticator: xds.TokenAuthenticator(opts.Tokens),
			Registerer:    reg,
		}),
		ready: make(chan struct{}),
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

// Run serves until ctx is cancelled.
func (c *Control) Run(ctx context.Context) error {
	var lc net.ListenConfig
	xl, err := lc.Listen(ctx, "tcp", c.opts.XDSAddress)
	if err != nil {
		return fmt.Errorf("control: xDS listener: %w (is another control plane running? pick another port with --xds-address)", err)
	}
	al, err := lc.Listen(ctx, "tcp", c.opts.AdminAddress)
	if err != nil {
		xl.Close()
		return fmt.Errorf("control: admin listener: %w (pick another port with --admin-address)", err)
	}
	c.mu.Lock()
	c.xdsAddr, c.adminAddr = xl.Addr(), al.Addr()
	c.mu.Unlock()

	gs := grpc.NewServer(grpc.MaxConcurrentStreams(1 << 16))
	c.xds.Register(gs)
	admin := &http.Server{Handler: c.adminHandler(), ReadHeaderTimeout: 5 * time.Second}

	src := file.New(c.opts.ConfigDir, file.Options{Debounce: c.opts.Debounce, Logger: c.opts.Logger.With("component", "source/file")})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := src.Run(gctx, c.apply)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
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
	c.log.Info("control plane serving", "xds", xl.Addr().String(), "admin", al.Addr().String(), "configDir", c.opts.ConfigDir)
	return g.Wait()
}

// apply translates a snapshot and pushes it. Bad objects were already
// rejected by the translator; what was good still flows.
func (c *Control) apply(res *resources.Resources) {
	start := time.Now()
	result := translate.Translate(res)
	for _, e := range result.SourceErrors {
		c.log.Error("config source problem; the file's last good objects stay in force", "error", e.Error())
	}
	for i := range result.Status {
		if o := &result.Status[i]; o.Rejected() {
			c.log.Warn("object rejected", "object", o.String(), "status", o.Problem())
		}
	}
	c.xds.Update(result.Mesh)
	c.last.Store(result)
	c.log.Info("configuration applied",
		"workloads", len(result.Mesh.Workloads), "services", len(result.Mesh.Services),
		"gateways", len(result.Mesh.Gateways), "policies", len(result.Mesh.Policies),
		"took", time.Since(start).Round(time.Microsecond))
	c.readyOnce.Do(func() { close(c.ready) })
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

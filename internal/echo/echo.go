// Package echo is `ambit echo`: the backend of the mesh's tests, demo,
// benchmarks and Gateway API conformance harness. One process serves
// HTTP/1.1 and h2c on one port, a gRPC echo service on another and raw TCP
// echo on a third; each answer says what the server saw of the request,
// including the client address, so a test can check what a proxy preserved.
//
// The HTTP JSON keeps the field layout of the Gateway API conformance echo
// server (conformance/echo-basic) and only adds fields, so the conformance
// harness can decode it with the upstream expectations.
package echo

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultMaxDelay          = 30 * time.Second
	DefaultMaxSize           = 16 << 30
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultShutdownTimeout   = 5 * time.Second
	// DefaultMaxHeaderBytes bounds an HTTP/1.1 request head and the HTTP/2
	// header list alike.
	DefaultMaxHeaderBytes = 64 << 10
)

// Context says where the echo server runs; it is copied into every answer.
// The JSON names are those of the conformance echo server.
type Context struct {
	Namespace string `json:"namespace"`
	Ingress   string `json:"ingress"`
	Service   string `json:"service"`
	Pod       string `json:"pod"`
}

// ContextFromEnv reads NAMESPACE, INGRESS_NAME, SERVICE_NAME and POD_NAME,
// the variables the conformance echo server reads (set from the downward API
// in a pod).
func ContextFromEnv() Context {
	return Context{
		Namespace: os.Getenv("NAMESPACE"),
		Ingress:   os.Getenv("INGRESS_NAME"),
		Service:   os.Getenv("SERVICE_NAME"),
		Pod:       os.Getenv("POD_NAME"),
	}
}

// Options configure a Server. An empty address disables that listener;
// port 0 in an address picks a free port (read it back with HTTPAddr etc.).
type Options struct {
	// HTTPAddress serves HTTP/1.1 and h2c with prior knowledge, e.g. ":8080".
	HTTPAddress string
	// GRPCAddress serves ambit.echo.v1.EchoService, the conformance
	// GrpcEcho service, gRPC health and reflection, e.g. ":7070".
	GRPCAddress string
	// TCPAddress echoes raw bytes back as sent, e.g. ":9090".
	TCPAddress string
	// TLS, when set, makes the HTTP listener serve HTTPS (HTTP/1.1, and
	// HTTP/2 by ALPN) instead of cleartext: the backend a gateway
	// re-encrypts to. Answers then carry "tls" (the SNI the proxy sent).
	TLS *tls.Config

	Context Context
	// Logger receives start/stop at info and one line per request at debug.
	Logger *slog.Logger

	// MaxDelay bounds ?delay=; larger values are refused with 400.
	MaxDelay time.Duration
	// MaxSize bounds ?size=; larger values are refused with 400.
	MaxSize int64
	// ReadHeaderTimeout bounds how long a client may take to send a request
	// head (slowloris).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers.
	MaxHeaderBytes int
	// ShutdownTimeout is how long in-flight HTTP requests and gRPC calls
	// may finish after the context is cancelled; then they are cut.
	ShutdownTimeout time.Duration
}

// Server is an echo server. Create it with New and start it with Run.
type Server struct {
	opts    Options
	log     *slog.Logger
	handler http.Handler

	started atomic.Bool
	ready   chan struct{}
	// Bound addresses, written once before ready is closed.
	httpAddr, grpcAddr, tcpAddr net.Addr

	inflight tracker
	retries  retries
}

// New applies defaults and builds the handlers; it does no I/O.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	s := &Server{
		opts:  opts,
		log:   opts.Logger,
		ready: make(chan struct{}),
	}
	s.handler = s.newHTTPHandler()
	return s
}

// Options returns the options in force, defaults applied.
func (s *Server) Options() Options { return s.opts }

// Handler is the HTTP echo handler, for serving it from another listener
// (e.g. an httptest TLS server, which makes answers carry "tls").
func (s *Server) Handler() http.Handler { return s.handler }

// Ready is closed once every enabled listener is bound; after that the
// address accessors return the bound addresses.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// HTTPAddr is the bound HTTP address, nil before Ready or when disabled.
func (s *Server) HTTPAddr() net.Addr { return s.addr(func() net.Addr { return s.httpAddr }) }

// GRPCAddr is the bound gRPC address, nil before Ready or when disabled.
func (s *Server) GRPCAddr() net.Addr { return s.addr(func() net.Addr { return s.grpcAddr }) }

// TCPAddr is the bound TCP echo address, nil before Ready or when disabled.
func (s *Server) TCPAddr() net.Addr { return s.addr(func() net.Addr { return s.tcpAddr }) }

func (s *Server) addr(get func() net.Addr) net.Addr {
	select {
	case <-s.ready:
		return get()
	default:
		return nil
	}
}

// InFlight is the number of HTTP requests being handled now; tests use it to
// see a delayed request start and stop.
func (s *Server) InFlight() int { return s.inflight.count() }

// Run binds the enabled listeners, serves until ctx is cancelled, then shuts
// down gracefully: listeners close at once, in-flight HTTP requests and gRPC
// calls get ShutdownTimeout to finish, TCP echo connections are closed. It
// returns nil after a shutdown caused by ctx, or the first serving error.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("echo: Run called twice on the same Server")
	}
	o := s.opts
	if o.HTTPAddress == "" && o.GRPCAddress == "" && o.TCPAddress == "" {
		return errors.New("echo: nothing to serve: set at least one of HTTPAddress, GRPCAddress, TCPAddress")
	}

	var lc net.ListenConfig
	var opened []net.Listener
	listen := func(kind, addr string) (net.Listener, error) {
		if addr == "" {
			return nil, nil
		}
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			for _, l := range opened {
				_ = l.Close()
			}
			return nil, fmt.Errorf("echo: listen %s on %q: %w", kind, addr, err)
		}
		opened = append(opened, ln)
		return ln, nil
	}
	httpLn, err := listen("http", o.HTTPAddress)
	if err != nil {
		return err
	}
	grpcLn, err := listen("grpc", o.GRPCAddress)
	if err != nil {
		return err
	}
	tcpLn, err := listen("tcp", o.TCPAddress)
	if err != nil {
		return err
	}
	if httpLn != nil {
		s.httpAddr = httpLn.Addr()
		if o.TLS != nil {
			cfg := o.TLS.Clone()
			if len(cfg.NextProtos) == 0 {
				cfg.NextProtos = []string{"h2", "http/1.1"}
			}
			httpLn = tls.NewListener(httpLn, cfg)
		}
	}
	if grpcLn != nil {
		s.grpcAddr = grpcLn.Addr()
	}
	if tcpLn != nil {
		s.tcpAddr = tcpLn.Addr()
	}
	close(s.ready)
	s.log.Info("echo: serving", "http", s.httpAddr, "https", o.TLS != nil, "grpc", s.grpcAddr, "tcp", s.tcpAddr,
		"namespace", o.Context.Namespace, "pod", o.Context.Pod, "service", o.Context.Service)

	// hardCtx outlives ctx by ShutdownTimeout: request handlers (delays,
	// bodies) watch it so they stop when the grace period is over.
	hardCtx, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()

	g, gctx := errgroup.WithContext(ctx)
	var stops []func(graceCtx context.Context)

	if httpLn != nil {
		hs := s.newHTTPServer(hardCtx)
		g.Go(func() error {
			if err := hs.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("echo: serve http on %s: %w", httpLn.Addr(), err)
			}
			return nil
		})
		stops = append(stops, func(graceCtx context.Context) {
			if err := hs.Shutdown(graceCtx); err != nil {
				_ = hs.Close()
			}
		})
	}
	if grpcLn != nil {
		gs := s.newGRPCServer()
		g.Go(func() error {
			if err := gs.Serve(grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("echo: serve grpc on %s: %w", grpcLn.Addr(), err)
			}
			return nil
		})
		stops = append(stops, func(graceCtx context.Context) {
			done := make(chan struct{})
			go func() { gs.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-graceCtx.Done():
				gs.Stop()
				<-done
			}
		})
	}
	if tcpLn != nil {
		ts := newTCPEcho(tcpLn, s.log)
		g.Go(ts.serve)
		stops = append(stops, func(context.Context) { ts.close() })
	}

	g.Go(func() error {
		<-gctx.Done()
		graceCtx, cancel := context.WithTimeout(hardCtx, o.ShutdownTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for _, stop := range stops {
			wg.Go(func() { stop(graceCtx) })
		}
		wg.Wait()
		// Whatever still runs (hijacked WebSockets, handlers of connections
		// Close cut) is told to stop and waited for, so Run leaves nothing
		// behind.
		hardCancel()
		s.inflight.closeAndWait()
		return nil
	})
	err = g.Wait()
	if err == nil {
		s.log.Info("echo: stopped")
	}
	return err
}

// tracker counts running handlers; after closeAndWait no new one starts.
// A WaitGroup does not fit: handlers of still-open HTTP/2 connections may
// start while Run is already waiting.
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{}
}

func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

func (t *tracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	if t.n == 0 {
		t.mu.Unlock()
		return
	}
	idle := make(chan struct{})
	t.idle = idle
	t.mu.Unlock()
	<-idle
}

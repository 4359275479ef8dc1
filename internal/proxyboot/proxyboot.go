// Package proxyboot is what every ambit data-plane process does before it
// serves traffic: join the mesh with a token (pinning the CA), keep its
// certificates, subscribe to its configuration over delta xDS with mTLS,
// and serve the admin, metrics and readiness endpoints. `ambit node`,
// `ambit gateway` and `ambit waypoint` share it.
package proxyboot

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
)

// JoinTimeout bounds the join RPC.
const JoinTimeout = 30 * time.Second

// Options say who joins where.
type Options struct {
	ControlPlane string      // control plane xDS/CA address, host:port
	Token        string      // join token
	CAPin        string      // CA pin printed with the token
	ID           spiffeid.ID // the identity to join as
	NodeID       string      // xDS node ID: node/<node> or gateway/<ns>/<name>
	TypeURLs     []string    // xDS types to subscribe to
	Logger       *slog.Logger
	XDSBackoff   xdsclient.Backoff
	// Dial, when set, makes the TCP connections to the control plane (the
	// join, CA and xDS), e.g. with a socket mark; addr is host:port.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Session is a joined proxy: its certificates, trust bundle and xDS
// client. Run the Certs manager and the XDS client (RunBackground does
// both) and Close the session when done.
type Session struct {
	ID     spiffeid.ID
	Bundle *identity.Bundle
	Certs  *identity.Manager
	XDS    *xdsclient.Client
	conn   *grpc.ClientConn
}

// Join redeems the token for a certificate and builds the certificate
// manager and the xDS client over mTLS to the control plane. It does the
// join RPC (I/O) but starts nothing long-lived.
func Join(ctx context.Context, o Options) (*Session, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	td := o.ID.TrustDomain()
	var dialOpts []grpc.DialOption
	if o.Dial != nil {
		dialOpts = append(dialOpts, grpc.WithContextDialer(o.Dial))
	}
	joinCtx, cancel := context.WithTimeout(ctx, JoinTimeout)
	res, err := identity.Join(joinCtx, o.ControlPlane, o.Token, o.CAPin, o.ID, dialOpts...)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("join %s as %s: %w", o.ControlPlane, o.ID, err)
	}
	s := &Session{ID: o.ID, Bundle: identity.NewBundle(td, nil)}
	if _, err := s.Bundle.SetRootsAt(res.Generation, res.Roots); err != nil {
		return nil, fmt.Errorf("roots from join: %w", err)
	}
	// The manager is built after the connection it fetches over; the TLS
	// config reads it lazily, by then it exists.
	cached := identity.SourceFunc(func(_ context.Context, id spiffeid.ID) (*tls.Certificate, error) { return s.Certs.Current(id) })
	tlsCfg, err := identity.ClientConfig(cached, s.Bundle, o.ID, []spiffeid.ID{identity.ControlID(td)})
	if err != nil {
		return nil, err
	}
	if s.conn, err = grpc.NewClient(o.ControlPlane, append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))...); err != nil {
		return nil, fmt.Errorf("control plane %s: %w", o.ControlPlane, err)
	}
	fail := func(err error) (*Session, error) { _ = s.conn.Close(); return nil, err }
	if s.Certs, err = identity.NewManager(identity.Config{TrustDomain: td, Fetcher: identity.NewCAClient(s.conn), Bundle: s.Bundle, Logger: o.Logger.With("component", "identity")}); err != nil {
		return fail(err)
	}
	if err := s.Certs.Install(o.ID, res.Certificate); err != nil {
		return fail(err)
	}
	if s.XDS, err = xdsclient.New(xdsclient.Config{
		Address:              o.ControlPlane,
		NodeID:               o.NodeID,
		TransportCredentials: credentials.NewTLS(tlsCfg),
		TypeURLs:             o.TypeURLs,
		Logger:               o.Logger,
		Backoff:              o.XDSBackoff,
		DialOptions:          dialOpts,
	}); err != nil {
		return fail(err)
	}
	return s, nil
}

// Close closes the connection to the control plane's CA.
func (s *Session) Close() error { return s.conn.Close() }

// RunBackground runs the certificate manager and the xDS client on wg
// until ctx ends.
func (s *Session) RunBackground(ctx context.Context, wg *sync.WaitGroup) {
	wg.Go(func() { _ = s.Certs.Run(ctx) })
	wg.Go(func() { _ = s.XDS.Run(ctx) })
}

// ApplyTrustBundle installs the snapshot's trust bundle for the session's
// trust domain, if it has one and it is newer.
func (s *Session) ApplyTrustBundle(snap *xdsclient.Snapshot) error {
	for _, tb := range xdsclient.All[*cav1.TrustBundle](snap) {
		if tb.GetTrustDomain() != s.Bundle.TrustDomain().Name() {
			continue
		}
		if _, err := s.Bundle.SetRootsPEM(tb.GetGeneration(), tb.GetRootsPem()); err != nil {
			return fmt.Errorf("trust bundle generation %d: %w", tb.GetGeneration(), err)
		}
	}
	return nil
}

// Registry is a Prometheus registry with the Go and process collectors,
// the TCP/HTTP telemetry and the identity metrics.
func Registry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := telemetry.Register(reg); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if err := identity.RegisterMetrics(reg); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return reg, nil
}

// Endpoint is one local HTTP endpoint (admin, metrics, readiness).
type Endpoint struct {
	Name, Address string // Address "-" disables it
	Handler       http.Handler
}

// ServeEndpoints binds every enabled endpoint, then serves them on wg
// until ctx ends. bound is told each bound address. A bind failure closes
// the listeners already bound and is returned.
func ServeEndpoints(ctx context.Context, wg *sync.WaitGroup, eps []Endpoint, bound func(name string, addr net.Addr)) error {
	type srv struct {
		ln net.Listener
		h  http.Handler
	}
	var srvs []srv
	for _, e := range eps {
		if e.Address == "-" || e.Address == "" {
			continue
		}
		ln, err := net.Listen("tcp", e.Address)
		if err != nil {
			for _, s := range srvs {
				_ = s.ln.Close()
			}
			return fmt.Errorf("%s listener %s: %w", e.Name, e.Address, err)
		}
		srvs = append(srvs, srv{ln, e.Handler})
		bound(e.Name, ln.Addr())
	}
	for _, s := range srvs {
		hs := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() { _ = hs.Serve(s.ln) })
		wg.Go(func() { <-ctx.Done(); _ = hs.Close() })
	}
	return nil
}

// Readiness answers /healthz/ready with 200 once synced is closed.
func Readiness(synced <-chan struct{}) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-synced:
			_, _ = w.Write([]byte("ready\n"))
		default:
			http.Error(w, "not ready: no complete configuration from the control plane yet", http.StatusServiceUnavailable)
		}
	})
	return mux
}

// CheckRequired names every empty required option.
func CheckRequired(component string, fields ...[2]string) error {
	var errs []error
	for _, f := range fields {
		if f[1] == "" {
			errs = append(errs, fmt.Errorf("%s: %s is empty", component, f[0]))
		}
	}
	return errors.Join(errs...)
}

// DumpResources renders every resource of snap as protojson, by type URL
// and name.
func DumpResources(snap *xdsclient.Snapshot) (map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]json.RawMessage{}
	for _, tu := range snap.TypeURLs() {
		m := map[string]json.RawMessage{}
		for _, name := range snap.Names(tu) {
			r, _ := snap.Get(tu, name)
			b, err := protojson.Marshal(r.Message)
			if err != nil {
				return nil, fmt.Errorf("config_dump: %s %s: %w", tu, name, err)
			}
			m[name] = b
		}
		out[tu] = m
	}
	return out, nil
}

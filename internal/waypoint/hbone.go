package waypoint

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/connset"
	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/waypoint/proxy"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// serviceKey is a service VIP and port, the authority node proxies send
// to the waypoint.
type serviceKey = netip.AddrPort

// serviceTarget is what a CONNECT authority names: a port of a bound
// service, or (workload set) a bound workload addressed directly.
type serviceTarget struct {
	service  string // "<namespace>/<name>"; "" for a workload
	hostname string
	port     uint32
	// tcp: the port declares a protocol other than HTTP; its streams are
	// passed through as bytes.
	tcp bool
	// workload is "<namespace>/<name>" of a workload addressed directly
	// at addr, and identity its SPIFFE ID; such streams are sniffed.
	workload, identity string
	addr               netip.Addr
}

// serviceIndex maps every VIP:port of the services bound to the waypoint
// namespace/name (Backend.waypoint) to the service. Route backends are in
// the snapshot too, but traffic addressed to them does not belong here.
func serviceIndex(s *xdsclient.Snapshot, namespace, name string) map[serviceKey]serviceTarget {
	m := map[serviceKey]serviceTarget{}
	for _, b := range xdsclient.All[*gatewayv1.Backend](s) {
		if w := b.GetWaypoint(); w.GetNamespace() != namespace || w.GetName() != name {
			continue
		}
		svc := b.GetNamespace() + "/" + b.GetName()
		for _, raw := range b.GetVips() {
			ip, ok := netip.AddrFromSlice(raw)
			if !ok {
				continue
			}
			for _, p := range b.GetPorts() {
				m[netip.AddrPortFrom(ip.Unmap(), uint16(p.GetPort()))] = serviceTarget{service: svc, hostname: b.GetHostname(), port: p.GetPort(), tcp: isTCPPort(p.GetName(), p.GetAppProtocol())}
			}
		}
	}
	return m
}

// workloadIndex maps the addresses of the workloads bound to the waypoint
// namespace/name (the control plane sends only those) to their target
// (port 0: the port is the CONNECT's).
func workloadIndex(s *xdsclient.Snapshot, namespace, name string) map[netip.Addr]serviceTarget {
	m := map[netip.Addr]serviceTarget{}
	for _, w := range xdsclient.All[*workloadv1.Workload](s) {
		if b := w.GetWaypoint(); b.GetNamespace() != namespace || b.GetName() != name {
			continue
		}
		for _, raw := range w.GetAddresses() {
			if ip, ok := netip.AddrFromSlice(raw); ok {
				m[ip.Unmap()] = serviceTarget{workload: w.GetNamespace() + "/" + w.GetName(), identity: w.GetIdentity(), addr: ip.Unmap()}
			}
		}
	}
	return m
}

// upstreamIdentities maps every backend endpoint and bound workload
// address with a valid SPIFFE identity to it: those are mesh workloads,
// reached through their node proxy over HBONE.
func upstreamIdentities(s *xdsclient.Snapshot) map[netip.Addr]spiffeid.ID {
	m := map[netip.Addr]spiffeid.ID{}
	for _, w := range xdsclient.All[*workloadv1.Workload](s) {
		id, err := spiffeid.FromString(w.GetIdentity())
		if err != nil {
			continue
		}
		for _, raw := range w.GetAddresses() {
			if ip, ok := netip.AddrFromSlice(raw); ok {
				m[ip.Unmap()] = id
			}
		}
	}
	for _, b := range xdsclient.All[*gatewayv1.Backend](s) {
		for _, ep := range b.GetEndpoints() {
			id, err := spiffeid.FromString(ep.GetIdentity())
			if err != nil {
				continue
			}
			for _, raw := range ep.GetAddresses() {
				if ip, ok := netip.AddrFromSlice(raw); ok {
					m[ip.Unmap()] = id
				}
			}
		}
	}
	return m
}

// downstream is what the waypoint keeps of a node proxy's CONNECT for the
// upstream hop (DESIGN.md §3): the client's original address, its
// baggage and its trace context.
type downstream struct {
	forwarded hbone.Forwarded
	baggage   hbone.Baggage
	trace     hbone.TraceParent
}

// reachedOverHBONE says whether upstreamDialer tunnels to ip (an endpoint
// with a mesh identity): a BackendTLSPolicy's TLS is not added inside the
// tunnel.
func (g *Gateway) reachedOverHBONE(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.upstreamIDs[ip.Unmap()]
	return ok
}

// upstreamDialer is the engine's upstream dialer of a waypoint: an
// endpoint with an identity gets an HBONE tunnel to its node proxy
// (authority = endpoint ip:port, the waypoint's identity as the source, the
// endpoint's as the only accepted peer), so the destination's policy sees
// the waypoint as the peer, and the client's address in forwarded for=;
// any other address is dialled as plain TCP. ds is the downstream whose
// requests the tunnels carry (nil: none, such as mirrors').
func (g *Gateway) upstreamDialer(d *hbone.Dialer, ds *downstream) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if ds == nil {
		ds = &downstream{}
	}
	plain := &net.Dialer{Timeout: proxy.DefaultDialTimeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return plain.DialContext(ctx, network, addr)
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		g.mu.Lock()
		id, ok := g.upstreamIDs[ap.Addr()]
		g.mu.Unlock()
		if !ok {
			return plain.DialContext(ctx, network, addr)
		}
		ctx, cancel := context.WithTimeout(ctx, proxy.DefaultDialTimeout)
		defer cancel()
		c, err := d.Dial(ctx, &hbone.DialRequest{
			Address:     netip.AddrPortFrom(ap.Addr(), g.opts.UpstreamHBONEPort),
			Authority:   ap.String(),
			Source:      g.sess.ID,
			Destination: []spiffeid.ID{id},
			Forwarded:   hbone.Forwarded{For: ds.forwarded.For},
			Baggage:     ds.baggage,
			TraceParent: ds.trace,
		})
		if err != nil {
			return nil, fmt.Errorf("waypoint: tunnel to %s (%s) via port %d: %w", ap, id, g.opts.UpstreamHBONEPort, err)
		}
		return c, nil
	}
}

// startHBONE binds the HBONE port and serves it: each CONNECT names a
// bound service's VIP:port; the tunnelled bytes are HTTP, served by the
// engine's handler for that service: HTTP/1.x by the engine's own loop,
// h2c (by its preface) by an http.Server through an in-memory listener.
func (g *Gateway) startHBONE(ctx context.Context, wg *sync.WaitGroup) error {
	addr := net.JoinHostPort(g.opts.HBONEAddress, strconv.FormatUint(uint64(g.opts.HBONEPort), 10))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("hbone listener %s: %w", addr, err)
	}
	g.mu.Lock()
	g.addrs["hbone"] = ln.Addr()
	g.mu.Unlock()

	tunnels := newConnListener(ln.Addr())
	var streams connset.Set
	srv := g.engine.Server(0)
	var h2only http.Protocols
	h2only.SetUnencryptedHTTP2(true)
	srv.Protocols = &h2only
	// The stream's handler is built once per connection (ConnContext), not
	// per request.
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := r.Context().Value(targetKey{}).(http.Handler)
		if !ok {
			h = g.targetHandler(serviceTarget{})
		}
		h.ServeHTTP(w, r)
	})
	base := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if base != nil {
			ctx = base(ctx, c)
		}
		tc, ok := c.(*tunnelConn)
		if !ok {
			return ctx
		}
		ctx = context.WithValue(ctx, targetKey{}, g.targetHandler(tc.target))
		ctx = proxy.WithPeer(ctx, tc.peer)
		if g.dialer != nil {
			ctx, tc.release = g.engine.WithUpstreams(ctx, g.upstreamDialer(g.dialer, &tc.ds))
		}
		return ctx
	}
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		if tc, ok := c.(*tunnelConn); ok && (s == http.StateClosed || s == http.StateHijacked) && tc.release != nil {
			tc.release()
		}
	}
	self := g.sess.ID
	gctx := ctx // the streams' HTTP outlives each CONNECT's handler call
	hs, err := hbone.NewServer(hbone.ServerConfig{
		Source:   g.sess.Certs,
		Bundle:   g.sess.Bundle,
		Identity: func(*tls.ClientHelloInfo) (spiffeid.ID, error) { return self, nil },
		Handler: hbone.HandlerFunc(func(ctx context.Context, req *hbone.Request) (io.ReadWriteCloser, error) {
			g.mu.Lock()
			t, ok := g.services[req.Authority]
			if !ok {
				t, ok = g.workloads[req.Authority.Addr().Unmap()]
				t.port = uint32(req.Authority.Port())
			}
			g.mu.Unlock()
			if !ok {
				return nil, fmt.Errorf("waypoint: authority %s: %w (no service or workload bound to this waypoint has that address)", req.Authority, hbone.ErrNotLocal)
			}
			remote := req.RemoteAddr
			if req.Forwarded.For.IsValid() {
				remote = req.Forwarded.For
			}
			ds := downstream{forwarded: hbone.Forwarded{For: remote}, baggage: req.Baggage, trace: req.TraceParent}
			peer := proxy.Peer{Identity: req.Peer.String(), Source: remote, Destination: req.Authority,
				Labels: telemetry.Peer{Principal: req.Peer.String(), Workload: req.Baggage.WorkloadName, Namespace: req.Baggage.Namespace,
					App: req.Baggage.ServiceName, Version: req.Baggage.ServiceVersion,
					CanonicalService: req.Baggage.ServiceName, CanonicalRevision: req.Baggage.ServiceVersion, Cluster: req.Baggage.ClusterName}}
			serveHTTP := func() (io.ReadWriteCloser, error) {
				// One end goes to the HTTP server, the other back to the
				// HBONE server, which copies the stream into it.
				a, b := net.Pipe()
				tc := &tunnelConn{Conn: b, target: t, ds: ds, remote: net.TCPAddrFromAddrPort(remote), local: net.TCPAddrFromAddrPort(req.Authority), peer: peer}
				done, ok := streams.Start(tc)
				if !ok {
					_ = a.Close()
					_ = b.Close()
					return nil, fmt.Errorf("waypoint: shutting down")
				}
				// The loop closes the stream itself, unless it hands it
				// to the h2c server.
				go func() {
					defer done()
					g.serveTunnel(gctx, tc, tunnels)
				}()
				return a, nil
			}
			switch {
			case t.workload != "":
				// Ports of a workload declare no protocol: its first bytes tell.
				return newSniffConn(func(isHTTP bool) (io.ReadWriteCloser, error) {
					if isHTTP {
						return serveHTTP()
					}
					return g.passTCP(ctx, t, &ds, peer)
				}), nil
			case t.tcp:
				return g.passTCP(ctx, t, &ds, peer)
			}
			return serveHTTP()
		}),
		Logger: g.log.With("component", "hbone"),
	})
	if err != nil {
		_ = ln.Close()
		return err
	}
	wg.Go(func() { _ = hs.Serve(ctx, ln) })
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	wg.Go(func() { _ = srv.Serve(tunnels) })
	wg.Go(func() {
		<-ctx.Done()
		_ = tunnels.Close()
		sctx, cancel := context.WithTimeout(context.Background(), g.opts.ShutdownGrace)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
		streams.Drain(sctx)
	})
	return nil
}

// serveTunnel serves the HTTP/1.x of one stream with the engine's loop,
// the stream's peer and upstream dialer in its requests' context; a
// stream starting with the HTTP/2 preface goes to the h2c server.
func (g *Gateway) serveTunnel(ctx context.Context, tc *tunnelConn, h2c *connListener) {
	ctx = proxy.WithPeer(ctx, tc.peer)
	if g.dialer != nil {
		var release func()
		ctx, release = g.engine.WithUpstreams(ctx, g.upstreamDialer(g.dialer, &tc.ds))
		defer release()
	}
	g.engine.ServeConn(ctx, tc, g.targetHandler(tc.target), func(c net.Conn) bool {
		h2 := &tunnelConn{Conn: c, target: tc.target, ds: tc.ds, peer: tc.peer, remote: tc.remote, local: tc.local}
		return h2c.push(h2)
	})
}

type targetKey struct{}

// targetHandler is the engine's handler for a stream's target.
func (g *Gateway) targetHandler(t serviceTarget) http.Handler {
	if t.workload != "" {
		return g.engine.WorkloadHandler(t.workload, netip.AddrPortFrom(t.addr, uint16(t.port)), t.identity)
	}
	return g.engine.ServiceHandler(t.service, t.port)
}

// tunnelConn is one HBONE stream as the HTTP server sees it.
type tunnelConn struct {
	net.Conn
	target        serviceTarget
	ds            downstream
	peer          proxy.Peer
	remote, local net.Addr
	// release closes the stream's upstream connections (set by
	// ConnContext, called on StateClosed).
	release func()
}

func (c *tunnelConn) RemoteAddr() net.Addr { return c.remote }
func (c *tunnelConn) LocalAddr() net.Addr  { return c.local }

// connListener is a net.Listener fed by push.
type connListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

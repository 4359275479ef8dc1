package waypoint

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/waypoint/proxy"
)

// isTCPPort applies Istio's explicit protocol selection: appProtocol, else
// the port name's "<protocol>[-<suffix>]" prefix. HTTP protocols and
// ports that declare none are served as HTTP; anything else declared
// (tcp, tls, https, mongo, mysql, redis, ...) is passed through.
func isTCPPort(name, appProtocol string) bool {
	proto := strings.ToLower(appProtocol)
	if proto == "" {
		proto, _, _ = strings.Cut(strings.ToLower(name), "-")
	}
	switch proto {
	case "", "http", "http2", "grpc", "grpc-web", "h2c", "kubernetes.io/h2c", "kubernetes.io/ws":
		return false
	case "tcp", "tls", "https", "mongo", "mysql", "redis", "kubernetes.io/wss":
		return true
	}
	// A name that is no protocol ("web", "api") declares nothing.
	return appProtocol != ""
}

// passTCP connects a stream for a non-HTTP port to an endpoint of the
// service (or for a workload addressed directly, to that workload), as
// Istio's waypoint passes TCP through, after the waypoint's policies with
// TCP semantics (the peer's identity and addresses; HTTP attributes
// cannot be seen). The HBONE server relays the bytes, and answers 401
// when denied and 503 when no endpoint can be reached.
func (g *Gateway) passTCP(ctx context.Context, t serviceTarget, ds *downstream, peer proxy.Peer) (io.ReadWriteCloser, error) {
	what := fmt.Sprintf("service %s port %d", t.service, t.port)
	if t.workload != "" {
		what = fmt.Sprintf("workload %s port %d", t.workload, t.port)
	}
	labels := telemetry.Labels{
		Reporter: "waypoint", SecurityPolicy: telemetry.SecurityMutualTLS,
		Source: peer.Labels, Service: telemetry.Service{Hostname: t.hostname},
	}
	labels.Service.Namespace, labels.Service.Name, _ = strings.Cut(t.service, "/")
	if ns, name, ok := strings.Cut(t.workload, "/"); ok {
		labels.Destination = telemetry.Peer{Workload: name, Namespace: ns, Principal: t.identity}
	}
	if d := g.engine.AuthorizeConn(t.service, peer); !d.Allowed {
		err := fmt.Errorf("waypoint: %s: %w: %s", what, hbone.ErrDenied, d)
		m := telemetry.Open(labels, telemetry.Endpoints{Src: peer.Source, Dst: peer.Destination})
		m.Finish(g.opts.AccessLog, telemetry.Result{Err: err, Flags: telemetry.FlagDenied, Policy: d.Policy.String()})
		return nil, err
	}
	ep, done := peer.Destination, func() {}
	if t.workload == "" {
		var ok bool
		if ep, labels.Destination, done, ok = g.engine.PickEndpoint(t.service, t.port, peer.Source.Addr()); !ok {
			err := fmt.Errorf("waypoint: %s has no endpoint", what)
			m := telemetry.Open(labels, telemetry.Endpoints{Src: peer.Source})
			m.Finish(g.opts.AccessLog, telemetry.Result{Err: err, Flags: proxy.FlagNoHealthy})
			return nil, err
		}
	}
	m := telemetry.Open(labels, telemetry.Endpoints{Src: peer.Source, Dst: ep})
	dial := g.upstreamDialer(g.dialer, ds)
	if g.dialer == nil {
		plain := &net.Dialer{Timeout: proxy.DefaultDialTimeout}
		dial = plain.DialContext
	}
	if g.opts.BeforeTCPDial != nil {
		g.opts.BeforeTCPDial()
	}
	c, err := dial(ctx, "tcp", ep.String())
	if err != nil {
		done()
		err = fmt.Errorf("waypoint: %s: %w", what, err)
		m.Finish(g.opts.AccessLog, telemetry.Result{Err: err, Flags: telemetry.FlagConnectFailure})
		return nil, err
	}
	st := &tcpStream{target: t, peer: peer, m: m}
	st.conn = &doneConn{Conn: telemetry.CountConn(c, m, telemetry.ReadsAreResponse), done: func() {
		done()
		g.mu.Lock()
		delete(g.streams, st)
		stopIdle := st.stopIdle
		g.mu.Unlock()
		if stopIdle != nil {
			stopIdle()
		}
		m.Finish(g.opts.AccessLog, telemetry.Result{})
	}}
	g.mu.Lock()
	g.streams[st] = true
	g.mu.Unlock()
	// The policies may have changed during the dial, before the stream
	// was registered for recheckStreams.
	if err := g.closeIfDenied(st); err != nil {
		return nil, err
	}
	if idle := g.opts.TCPIdleTimeout; idle > 0 {
		// The HBONE server copies the stream: the counters (per read
		// here, never spliced) tell the activity.
		stop := m.WatchIdle(idle, func() {
			m.Finish(g.opts.AccessLog, telemetry.Result{Flags: telemetry.FlagIdleTimeout,
				Err: fmt.Errorf("waypoint: %s: closed after %v without a byte either way", what, idle)})
			_ = st.conn.Close()
		})
		g.mu.Lock()
		_, live := g.streams[st]
		if live {
			st.stopIdle = stop
		}
		g.mu.Unlock()
		if !live { // closed meanwhile, before its done could stop the watch
			stop()
		}
	}
	return st.conn, nil
}

// tcpStream is a stream passTCP connected, kept so that a policy change
// can close it when it is no longer allowed (as node proxies do).
type tcpStream struct {
	target serviceTarget
	peer   proxy.Peer
	m      *telemetry.ConnMetrics
	conn   *doneConn
	// stopIdle ends the idle watch (nil: none); under Gateway.mu.
	stopIdle func()
}

// recheckStreams closes the TCP streams the current policies deny,
// each with an access log line naming the policy.
func (g *Gateway) recheckStreams() {
	g.mu.Lock()
	streams := slices.Collect(maps.Keys(g.streams))
	g.mu.Unlock()
	for _, st := range streams {
		_ = g.closeIfDenied(st)
	}
}

// closeIfDenied closes st with an access log line naming the policy when
// the current policies deny it, and returns why.
func (g *Gateway) closeIfDenied(st *tcpStream) error {
	d := g.engine.AuthorizeConn(st.target.service, st.peer)
	if d.Allowed {
		return nil
	}
	err := fmt.Errorf("waypoint: closed after a policy change: %w: %s", hbone.ErrDenied, d)
	st.m.Finish(g.opts.AccessLog, telemetry.Result{Err: err, Flags: telemetry.FlagDenied, Policy: d.Policy.String()})
	_ = st.conn.Close()
	return err
}

// doneConn calls done once when closed.
type doneConn struct {
	net.Conn
	done func()
	once sync.Once
}

// CloseWrite passes the client's end of stream on (the HBONE server
// half-closes an upstream that can).
func (c *doneConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *doneConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}

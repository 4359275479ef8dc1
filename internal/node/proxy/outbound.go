package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/telemetry"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// errUnknownSource refuses a connection no local workload can be blamed for:
// tunnelling it would lend it some workload's identity.
var errUnknownSource = errors.New("node proxy: unknown source")

// serveExplicit accepts on lis until ctx ends and forwards each connection to
// e.Target; it returns once every connection it accepted is closed.
func (p *Proxy) serveExplicit(ctx context.Context, lis net.Listener, e Explicit) {
	if err := acceptLoop(ctx, lis, func(c net.Conn) { p.Outbound(ctx, c, e.Target, e.Source) }); err != nil {
		p.log.Warn("explicit listener stopped", "addr", e.Listen, "err", err)
	}
}

// acceptLoop serves lis until ctx ends, one goroutine per connection, and
// returns once every connection it accepted is done. The error is why
// accepting stopped, or nil when ctx ended.
func acceptLoop(ctx context.Context, lis net.Listener, serve func(net.Conn)) error {
	// Close runs on the AfterFunc's goroutine and the socket is only
	// released when it returns, which may be after Accept has already
	// failed: wait for it, so that a stopped enrolment's ports are free
	// when its stop function returns (a re-enrolment binds them again).
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { _ = lis.Close(); close(closed) })
	defer func() {
		if !stop() {
			<-closed
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := lis.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() { serve(c) })
	}
}

// Outbound forwards client, an app's connection meant for dst, and returns
// when it is over (client is closed). source names the local workload
// "<namespace>/<name>" it comes from; empty: the local workload holding the
// client's address, else the node's only workload. A service VIP goes to one
// of its endpoints and a mesh workload directly, both over HBONE; any other
// address is passed through as plain TCP.
func (p *Proxy) Outbound(ctx context.Context, client net.Conn, dst netip.AddrPort, source string) {
	p.outbound(ctx, client, dst, source, nil)
}

// outbound is Outbound with answer, when not nil, called once the upstream
// is connected (nil) or could not be (the reason), before any byte is
// relayed; an error from answer abandons the connection.
func (p *Proxy) outbound(ctx context.Context, client net.Conn, dst netip.AddrPort, source string, answer func(error) error) {
	if answer == nil {
		answer = func(error) error { return nil }
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { _ = client.Close() })
	defer stop()

	cfg := p.cfg.Load()
	clientAddr := addrPortOf(client.RemoteAddr())
	src := p.sourceWorkload(cfg, clientAddr.Addr(), source)
	labels := telemetry.Labels{Reporter: telemetry.ReporterSource}
	if src != nil {
		labels.Source = telemetry.PeerFromWorkload(src.Proto, p.opts.Cluster)
	}

	var (
		target *Workload
		svc    *workloadv1.Service
		addr   = dst
	)
	if st := cfg.Service(dst); st != nil {
		svc = st.Service
		labels.Service = telemetry.ServiceFromProto(svc)
		if ep, ok := st.Pick(); ok {
			target, addr = ep.Workload, ep.Addr
		}
	} else if ws := cfg.Workloads(dst.Addr()); len(ws) > 0 {
		target = ws[0]
	}
	// A service bound to a waypoint is reached through it, and so is a
	// workload bound to one when addressed directly; except by the
	// waypoint's own pods (which forward the traffic to the endpoints).
	wp, bound := svc.GetWaypoint(), "service "+svc.GetNamespace()+"/"+svc.GetName()
	if svc == nil && target != nil {
		wp, bound = target.Proto.GetWaypoint(), "workload "+target.Key()
	}
	viaWaypoint := wp.GetName() != "" && src != nil && !isGatewayPod(src, wp.GetNamespace(), wp.GetName())
	// wpPods are the waypoint's pods to try, in round-robin order with
	// the ones that failed recently last.
	var wpPods []*Workload
	if viaWaypoint {
		wpPods = p.waypoints.order(cfg.GatewayPods(wp.GetNamespace() + "/" + wp.GetName()))
		target = nil
		if len(wpPods) > 0 {
			target = wpPods[0]
		}
	}
	if target != nil {
		labels.Destination = telemetry.PeerFromWorkload(target.Proto, p.opts.Cluster)
	}

	switch {
	case src == nil:
		err := fmt.Errorf("%w: %s is not a workload of node %s and no source was configured", errUnknownSource, clientAddr.Addr(), p.opts.Node)
		if source != "" {
			err = fmt.Errorf("%w: configured source %s is not a workload of node %s", errUnknownSource, source, p.opts.Node)
		}
		p.refuse(labels, clientAddr, dst, answer, err)
		return
	case viaWaypoint && target == nil:
		// Fail closed, as ztunnel: going around the waypoint would skip
		// the L7 policy and routing it is there for.
		err := fmt.Errorf("node proxy: %s is bound to waypoint %s/%s, which has no workload (want a Workload in namespace %s labelled %s=%s with an address and a valid identity); refusing rather than bypassing the waypoint",
			bound, wp.GetNamespace(), wp.GetName(), wp.GetNamespace(), LabelGatewayName, wp.GetName())
		p.log.Warn("connection refused: waypoint unavailable", "bound", bound, "waypoint", wp.GetNamespace()+"/"+wp.GetName(), "client", clientAddr, "destination", dst)
		p.refuse(labels, clientAddr, dst, answer, err)
		return
	case svc != nil && target == nil:
		p.refuse(labels, clientAddr, dst, answer, fmt.Errorf("node proxy: service %s/%s has no endpoint for port %d", svc.GetNamespace(), svc.GetName(), dst.Port()))
		return
	case target == nil:
		p.passthrough(ctx, client, clientAddr, dst, labels, answer)
		return
	}

	labels.SecurityPolicy = telemetry.SecurityMutualTLS
	hboneAddr := netip.AddrPortFrom(addr.Addr(), p.opts.HBONEPort)
	destID := target.Identity
	if viaWaypoint {
		// The waypoint maps the original destination (the service's
		// VIP:port, or the workload's ip:port) to what serves it, and
		// presents the identity it joined with (its Gateway's).
		addr = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
		hboneAddr = netip.AddrPortFrom(target.Addresses[0], p.opts.HBONEPort)
		id, err := identity.WorkloadID(src.Identity.TrustDomain(), wp.GetNamespace(), wp.GetName())
		if err != nil {
			p.refuse(labels, clientAddr, dst, answer, fmt.Errorf("node proxy: waypoint %s/%s of %s: %w", wp.GetNamespace(), wp.GetName(), bound, err))
			return
		}
		destID = id
	}
	m := telemetry.Open(labels, telemetry.Endpoints{Src: clientAddr, Dst: hboneAddr, HBONE: addr.String()})
	req := &hbone.DialRequest{
		Address:     hboneAddr,
		Authority:   addr.String(),
		Source:      src.Identity,
		Destination: []spiffeid.ID{destID},
		Forwarded:   hbone.Forwarded{For: p.forwardedFor(src, clientAddr)},
		Baggage: hbone.Baggage{
			ClusterName:    p.opts.Cluster,
			Namespace:      src.Proto.GetNamespace(),
			WorkloadName:   src.Proto.GetName(),
			ServiceName:    labels.Source.CanonicalService,
			ServiceVersion: labels.Source.CanonicalRevision,
			Region:         src.Proto.GetLocality().GetRegion(),
			Zone:           src.Proto.GetLocality().GetZone(),
		},
	}
	if svc != nil {
		req.Forwarded.Host = svc.GetHostname()
	}
	if p.podOf(src.Key()) != nil && src.has(clientAddr.Addr()) {
		// Captured in the workload's own namespace: the tunnel leaves from
		// its address, as ztunnel's in-pod mode does.
		req.SourceIP = clientAddr.Addr()
	}
	// The tunnel reads the client socket itself (no relay goroutine and
	// pipe hand-off per chunk on the request direction).
	counted := telemetry.CountConn(client, m, telemetry.ReadsAreRequest)
	req.Body = counted
	tunnel, err := p.dialer.Dial(ctx, req)
	for i := 1; err != nil && viaWaypoint && !answered(err) && i < len(wpPods) && ctx.Err() == nil; i++ {
		// Nothing was sent yet (the tunnel reads the client only after
		// its 200): the next waypoint pod can take the connection. This
		// attempt is accounted as the connect failure it was.
		p.waypoints.failed(target)
		err = fmt.Errorf("node proxy: tunnel to %s via %s: %w", addr, hboneAddr, err)
		p.log.Warn("waypoint pod unreachable, trying the next", "waypoint", wp.GetNamespace()+"/"+wp.GetName(), "pod", target.Key(), "error", err)
		m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagConnectFailure})
		target = wpPods[i]
		labels.Destination = telemetry.PeerFromWorkload(target.Proto, p.opts.Cluster)
		hboneAddr = netip.AddrPortFrom(target.Addresses[0], p.opts.HBONEPort)
		m = telemetry.Open(labels, telemetry.Endpoints{Src: clientAddr, Dst: hboneAddr, HBONE: addr.String()})
		counted = telemetry.CountConn(client, m, telemetry.ReadsAreRequest)
		req.Address, req.Body = hboneAddr, counted
		tunnel, err = p.dialer.Dial(ctx, req)
	}
	if err != nil {
		if viaWaypoint && !answered(err) {
			p.waypoints.failed(target)
		}
		err = fmt.Errorf("node proxy: tunnel to %s via %s: %w", addr, hboneAddr, err)
		_ = answer(err)
		m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagConnectFailure})
		return
	}
	defer tunnel.Close()
	stopT := context.AfterFunc(ctx, func() { _ = tunnel.Close() })
	defer stopT()
	if err := answer(nil); err != nil {
		m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagConnectFailure})
		return
	}
	_, _ = io.Copy(counted, tunnel)
	telemetry.CloseWrite(counted)
	<-tunnel.(*hbone.Conn).Sent()
	m.Finish(p.access, telemetry.Result{})
}

// isGatewayPod reports whether w runs Gateway namespace/name.
func isGatewayPod(w *Workload, namespace, name string) bool {
	return w.Proto.GetNamespace() == namespace && w.Proto.GetLabels()[LabelGatewayName] == name
}

// answered reports whether a failed tunnel got the pod's answer (a status
// below 500: a policy denial, an address it does not serve): that pod is
// healthy, and another pod of the same waypoint would answer the same.
func answered(err error) bool {
	var se *hbone.StatusError
	return errors.As(err, &se) && se.Code < 500
}

// waypointHealth remembers the waypoint pods a tunnel could not be opened
// to (passive health checking, as Envoy's outlier detection): they are
// tried last for waypointEjection.
type waypointHealth struct {
	mu   sync.Mutex
	down map[netip.Addr]time.Time // pod address -> failure time
}

// waypointEjection is how long a waypoint pod that failed is tried last.
const waypointEjection = 30 * time.Second

func (h *waypointHealth) failed(w *Workload) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down == nil {
		h.down = map[netip.Addr]time.Time{}
	}
	h.down[w.Addresses[0]] = time.Now()
}

// order puts the pods that failed within waypointEjection last, keeping
// the round-robin order otherwise; all of them stay candidates, so a
// waypoint whose every pod failed is still tried.
func (h *waypointHealth) order(pods []*Workload) []*Workload {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.down) == 0 {
		return pods
	}
	now := time.Now()
	healthy := make([]*Workload, 0, len(pods))
	var down []*Workload
	for _, w := range pods {
		t, ok := h.down[w.Addresses[0]]
		switch {
		case ok && now.Sub(t) < waypointEjection:
			down = append(down, w)
		case ok:
			delete(h.down, w.Addresses[0])
			healthy = append(healthy, w)
		default:
			healthy = append(healthy, w)
		}
	}
	return append(healthy, down...)
}

// passthrough connects to a destination outside the mesh as plain TCP.
func (p *Proxy) passthrough(ctx context.Context, client net.Conn, clientAddr, dst netip.AddrPort, labels telemetry.Labels, answer func(error) error) {
	labels.SecurityPolicy = telemetry.SecurityNone
	m := telemetry.Open(labels, telemetry.Endpoints{Src: clientAddr, Dst: dst})
	up, err := p.opts.DialPassthrough(ctx, dst)
	if err != nil {
		err = fmt.Errorf("node proxy: passthrough to %s: %w", dst, err)
		_ = answer(err)
		m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagConnectFailure})
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { _ = up.Close() })
	defer stop()
	if err := answer(nil); err != nil {
		m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagConnectFailure})
		return
	}
	telemetry.Relay(telemetry.CountConn(client, m, telemetry.ReadsAreRequest), up)
	m.Finish(p.access, telemetry.Result{})
}

// refuse accounts a connection refused before any upstream was tried.
func (p *Proxy) refuse(labels telemetry.Labels, clientAddr, dst netip.AddrPort, answer func(error) error, err error) {
	_ = answer(err)
	m := telemetry.Open(labels, telemetry.Endpoints{Src: clientAddr, Dst: dst})
	m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagConnectFailure})
}

// sourceWorkload finds the local workload a connection comes from.
// A configured source wins over the client's address: the operator said
// which workload the listener serves, and when that workload is not (or no
// longer) on this node the connection must not borrow another identity.
func (p *Proxy) sourceWorkload(cfg *Config, from netip.Addr, source string) *Workload {
	if source != "" {
		if w := cfg.WorkloadByKey(p.opts.Node, source); w != nil && !w.Identity.IsZero() {
			return w
		}
		return nil
	}
	if w := cfg.LocalWorkload(p.opts.Node, from); w != nil && !w.Identity.IsZero() {
		return w
	}
	if ws := cfg.NodeWorkloads(p.opts.Node); len(ws) == 1 && !ws[0].Identity.IsZero() {
		return ws[0]
	}
	return nil
}

// forwardedFor is the client address the destination sees: the app's own
// address when it is the workload's, else the workload's address (an app
// connecting over loopback in explicit mode), port unknown.
func (p *Proxy) forwardedFor(src *Workload, client netip.AddrPort) netip.AddrPort {
	for _, a := range src.Addresses {
		if a == client.Addr() {
			return client
		}
	}
	if len(src.Addresses) > 0 {
		return netip.AddrPortFrom(src.Addresses[0], 0)
	}
	return client
}

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/node/policy"
	"github.com/ambitmesh/ambit/internal/sockio"
	"github.com/ambitmesh/ambit/internal/telemetry"
)

// errRevoked is the access log's reason for a connection closed because a
// policy update denies it.
var errRevoked = errors.New("node proxy: connection closed: no longer allowed by policy")

// serverIdentity presents the identity of the local workload the client
// dialled (the listener's address is the workload's). When workloads of
// different identities share that address the choice would be a guess, so
// the handshake fails instead.
func (p *Proxy) serverIdentity(hello *tls.ClientHelloInfo) (spiffeid.ID, error) {
	la, err := netip.ParseAddrPort(hello.Conn.LocalAddr().String())
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("node proxy: local address %s: %w", hello.Conn.LocalAddr(), err)
	}
	var id spiffeid.ID
	for _, w := range p.cfg.Load().Workloads(la.Addr()) {
		if w.Proto.GetNode() != p.opts.Node || w.Identity.IsZero() {
			continue
		}
		if !id.IsZero() && id != w.Identity {
			return spiffeid.ID{}, fmt.Errorf("node proxy: address %s is shared by workloads of identities %s and %s; cannot choose a certificate", la.Addr(), id, w.Identity)
		}
		id = w.Identity
	}
	if id.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("node proxy: no workload of node %s has address %s", p.opts.Node, la.Addr())
	}
	return id, nil
}

// serveInbound decides one HBONE stream: local destination, policy, then the
// upstream connection to the workload.
func (p *Proxy) serveInbound(ctx context.Context, r *hbone.Request) (io.ReadWriteCloser, error) {
	cfg := p.cfg.Load()
	src := r.RemoteAddr
	if r.Forwarded.For.IsValid() {
		src = r.Forwarded.For
	}
	labels := telemetry.Labels{
		Reporter:       telemetry.ReporterDestination,
		SecurityPolicy: telemetry.SecurityMutualTLS,
	}
	if ws := cfg.Workloads(src.Addr()); len(ws) > 0 {
		labels.Source = telemetry.PeerFromWorkload(ws[0].Proto, p.opts.Cluster)
	}
	// The identity the peer proved, not the one the source workload declares.
	labels.Source.Principal = r.Peer.String()
	dst := cfg.LocalWorkload(p.opts.Node, r.Authority.Addr())
	if dst != nil {
		labels.Destination = telemetry.PeerFromWorkload(dst.Proto, p.opts.Cluster)
	}
	// The source named the service it targeted; report it only if the
	// destination really backs it.
	if svc := cfg.ServiceByHostname(r.Forwarded.Host); svc != nil && dst != nil {
		if _, ok := dst.Proto.GetServices()[svc.GetNamespace()+"/"+svc.GetName()]; ok {
			labels.Service = telemetry.ServiceFromProto(svc)
		}
	}
	m := telemetry.Open(labels, telemetry.Endpoints{Src: src, Dst: r.LocalAddr, HBONE: r.Authority.String()})
	if dst == nil {
		err := fmt.Errorf("%w: no workload of node %s has address %s", hbone.ErrNotLocal, p.opts.Node, r.Authority.Addr())
		m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagConnectFailure})
		return nil, err
	}

	up := &upstream{m: m, access: p.access}
	d, release := p.authz.Admit(policy.Conn{
		SrcIdentity:  r.Peer.String(),
		SrcIP:        src.Addr(),
		DstNamespace: dst.Proto.GetNamespace(),
		DstName:      dst.Proto.GetName(),
		DstIP:        r.Authority.Addr(),
		DstPort:      r.Authority.Port(),
	}, up.revoke)
	if !d.Allowed {
		err := fmt.Errorf("%w: %s", hbone.ErrDenied, d)
		m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagDenied, Policy: d.Policy.String()})
		return nil, err
	}
	up.release = release
	conn, err := p.opts.DialWorkload(ctx, dst, src, r.Authority)
	if err != nil {
		release()
		err = fmt.Errorf("node proxy: connect to workload %s at %s: %w", dst.Key(), r.Authority, err)
		m.Finish(p.access, telemetry.Result{Err: err, Flags: telemetry.FlagConnectFailure})
		return nil, err
	}
	if !up.set(telemetry.CountConn(conn, m, telemetry.ReadsAreResponse)) {
		// Revoked between Admit and the dial completing.
		return nil, fmt.Errorf("%w: %w", hbone.ErrDenied, errRevoked)
	}
	return up, nil
}

// upstream is the connection to the destination workload as handed to the
// HBONE server, which closes it when the stream ends; closing ends the
// connection's policy tracking and accounting.
type upstream struct {
	net.Conn // counted; nil until the dial succeeded
	m        *telemetry.ConnMetrics
	access   *slog.Logger
	release  func()

	mu      sync.Mutex
	revoked *policy.Decision
	closed  bool
}

// set installs the dialled connection; false when the connection was revoked
// meanwhile (it is then closed and accounted).
func (u *upstream) set(c net.Conn) bool {
	u.mu.Lock()
	if u.revoked == nil {
		u.Conn = c
		u.mu.Unlock()
		return true
	}
	u.mu.Unlock()
	u.Conn = c
	_ = u.Close()
	return false
}

// revoke is called by the Authorizer when a policy update denies the
// connection: closing the upstream makes the HBONE server end the stream.
func (u *upstream) revoke(d policy.Decision) {
	u.mu.Lock()
	u.revoked = &d
	c := u.Conn
	u.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// TryWrite lets the HBONE connection's reader write to the workload itself
// when the socket takes the bytes at once (no hand-off to the stream's
// writer goroutine).
func (u *upstream) TryWrite(p []byte) (int, error) {
	if tw, ok := u.Conn.(interface{ TryWrite([]byte) (int, error) }); ok {
		return tw.TryWrite(p)
	}
	return 0, errors.ErrUnsupported
}

// ReadInto keeps the counted connection's buffer release (see
// telemetry.CountConn) through this wrapper: an idle stream holds no relay
// buffer.
func (u *upstream) ReadInto(b sockio.Buffer) (int, error) {
	if br, ok := u.Conn.(interface {
		ReadInto(sockio.Buffer) (int, error)
	}); ok {
		return br.ReadInto(b)
	}
	return u.Conn.Read(b.Bytes())
}

// WriteBuffers keeps the counted connection's writev (see
// telemetry.CountConn) through this wrapper.
func (u *upstream) WriteBuffers(bufs *net.Buffers) (int64, error) {
	if bw, ok := u.Conn.(interface {
		WriteBuffers(*net.Buffers) (int64, error)
	}); ok {
		return bw.WriteBuffers(bufs)
	}
	return bufs.WriteTo(u.Conn)
}

func (u *upstream) CloseWrite() error {
	if cw, ok := u.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (u *upstream) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	revoked := u.revoked
	u.mu.Unlock()
	err := u.Conn.Close()
	if u.release != nil {
		u.release()
	}
	var res telemetry.Result
	if revoked != nil {
		res = telemetry.Result{Err: fmt.Errorf("%w: %s", errRevoked, revoked), Flags: telemetry.FlagDenied, Policy: revoked.Policy.String()}
	}
	u.m.Finish(u.access, res)
	return err
}

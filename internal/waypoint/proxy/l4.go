package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/ambitmesh/ambit/internal/connset"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/waypoint/route"
)

// serveTCP forwards a connection of a TCP listener to its TCPRoute.
func (e *Engine) serveTCP(ctx context.Context, c net.Conn, port uint32, conns *connset.Set) {
	tl := e.cur.Load().tcp[port]
	if tl == nil {
		e.log.Info("proxy: TCP connection refused: the port has no TCP listener any more", "port", port, "client", c.RemoteAddr().String())
		_ = c.Close()
		return
	}
	e.forward(ctx, c, port, tl.name, tl.table, "", conns)
}

// forward sends the bytes of down to a backend of the first route of table
// for host (the SNI of TLS listeners; TCP listeners have only "*"), picked
// by weight, and relays both ways until both sides are done or the
// connection is idle for TCPIdleTimeout. Failures
// close the connection with one access log line and the Envoy flag.
func (e *Engine) forward(ctx context.Context, down net.Conn, port uint32, listener string, table *route.Table, host string, conns *connset.Set) {
	defer down.Close()
	src, _ := netip.ParseAddrPort(down.RemoteAddr().String())
	labels := telemetry.Labels{Reporter: e.cfg.Reporter, Source: e.cfg.Self, RequestProtocol: telemetry.ProtocolTCP,
		SecurityPolicy: telemetry.SecurityUnknown}
	var rt *route.Route
	if table != nil {
		rt, _ = table.Match(&route.Request{Host: host})
	}
	if rt == nil {
		m := telemetry.Open(labels, telemetry.Endpoints{Src: src})
		m.Finish(e.cfg.AccessLog, telemetry.Result{Flags: FlagNoRoute,
			Err: errors.New("proxy: listener " + listener + ": no route for server name \"" + host + "\"")})
		return
	}
	br := route.PickBackend(rt, globalRand{})
	c := e.cur.Load()
	var up *upstream
	if br != nil && br.GetInvalid() == "" && br.GetService() != "" {
		up = c.backends[balKey{br.GetService(), br.GetPort()}]
	}
	if up == nil {
		why := "no such backend"
		if br != nil && br.GetInvalid() != "" {
			why = br.GetInvalid()
		}
		m := telemetry.Open(labels, telemetry.Endpoints{Src: src})
		m.Finish(e.cfg.AccessLog, telemetry.Result{Flags: FlagNoCluster, Err: errors.New("proxy: listener " + listener + ": " + why)})
		return
	}
	b := up.backend
	labels.Service = telemetry.Service{Hostname: b.GetHostname(), Namespace: b.GetNamespace(), Name: b.GetName()}
	ep, ok := up.bal.Pick(l4Request{src: src.Addr()})
	if !ok {
		m := telemetry.Open(labels, telemetry.Endpoints{Src: src})
		m.Finish(e.cfg.AccessLog, telemetry.Result{Flags: FlagNoHealthy, Err: errNoHealthy})
		return
	}
	defer up.bal.Done(ep)
	labels.Destination = endpointPeer(ep)
	m := telemetry.Open(labels, telemetry.Endpoints{Src: src, Dst: ep.Addr})
	dctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	upc, err := e.dial(dctx, "tcp", ep.Addr.String())
	cancel()
	if err != nil {
		m.Finish(e.cfg.AccessLog, telemetry.Result{Flags: FlagConnectFailure, Err: err})
		return
	}
	untrackUp := conns.Track(upc)
	defer untrackUp()
	defer upc.Close()
	if telemetry.RelayIdle(telemetry.CountConn(down, m, telemetry.ReadsAreRequest), upc, max(e.cfg.TCPIdleTimeout, 0)) {
		m.Finish(e.cfg.AccessLog, telemetry.Result{Flags: telemetry.FlagIdleTimeout,
			Err: fmt.Errorf("proxy: listener %s: closed after %v without a byte either way", listener, e.cfg.TCPIdleTimeout)})
		return
	}
	m.Finish(e.cfg.AccessLog, telemetry.Result{})
}

// l4Request is what hash policies see of a connection: its source only.
type l4Request struct{ src netip.Addr }

func (l4Request) Header(string) (string, bool) { return "", false }
func (l4Request) Cookie(string) (string, bool) { return "", false }
func (r l4Request) SourceAddr() netip.Addr     { return r.src }
func (l4Request) SetCookie(*http.Cookie)       {}

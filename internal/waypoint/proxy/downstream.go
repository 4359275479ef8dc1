package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ambitmesh/ambit/internal/telemetry"
)

// FlagDownstreamProtocolError is Envoy's DPE: the client sent a request
// the proxy could not parse (a malformed head, a broken chunked body).
const FlagDownstreamProtocolError = "DPE"

// net/http answers a malformed request head itself (400, 431, 501, 505)
// before any handler runs, and tells nobody. It writes that answer to the
// connection in one piece with exactly these headers and no Date, which
// no handler response lacks; guardConn recognises it there so each
// refusal gets its access log line and metric like any other request.
var (
	refusalPrefix  = []byte("HTTP/1.1 ")
	refusalHeaders = []byte("\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")
	dateHeader     = []byte("\r\nDate: ")
)

// guardListener wraps each plaintext connection in a guardConn. TLS
// connections are left alone: net/http serves a *tls.Conn only as such.
type guardListener struct {
	net.Listener
	e    *Engine
	port uint32
}

func (l *guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if _, ok := c.(*tls.Conn); ok {
		return c, nil
	}
	return &guardConn{Conn: c, e: l.e, port: l.port}, nil
}

// guardConn reports what net/http does silently on a connection: the
// refusal of a malformed request head, and a request head that did not
// arrive within the read header timeout (slowloris).
type guardConn struct {
	net.Conn
	e    *Engine
	port uint32
	// active counts handlers running on the connection (several for
	// HTTP/2); while one runs, the bytes are a request's, not a head's.
	active atomic.Int32
	// headBytes counts bytes read since the last request head was
	// complete: non-zero at a read timeout means a partial head.
	headBytes atomic.Int64
	reported  atomic.Bool
}

type guardKey struct{}

// connContext lets the handler find its guardConn.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*guardConn); ok {
		return context.WithValue(ctx, guardKey{}, gc)
	}
	return ctx
}

// enter marks a handler running on r's connection, and returns the
// connection (nil when it is not guarded) for leave to mark it done.
func enter(r *http.Request) *guardConn {
	gc, _ := r.Context().Value(guardKey{}).(*guardConn)
	if gc == nil {
		return nil
	}
	gc.active.Add(1)
	gc.headBytes.Store(0)
	return gc
}

// leave marks the handler entered on c done.
func (c *guardConn) leave() {
	c.headBytes.Store(0)
	c.active.Add(-1)
}

func (c *guardConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.active.Load() == 0 {
		c.headBytes.Add(int64(n))
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.headBytes.Load() > 0 && !c.reported.Swap(true) {
			c.e.log.Info("proxy: request head not received within the read header timeout; connection closed",
				"port", c.port, "client", c.RemoteAddr().String(), "head_bytes", c.headBytes.Load(),
				"read_header_timeout", c.e.cfg.ReadHeaderTimeout)
			downstreamRejected.WithLabelValues("header_timeout").Inc()
		}
	}
	return n, err
}

func (c *guardConn) Write(p []byte) (int, error) {
	if c.active.Load() == 0 && bytes.HasPrefix(p, refusalPrefix) && !c.reported.Load() {
		if head, body, ok := bytes.Cut(p, refusalHeaders); ok && !bytes.Contains(head, dateHeader) && len(head) >= len(refusalPrefix)+3 {
			c.reported.Store(true)
			status, _ := strconv.Atoi(string(head[len(refusalPrefix) : len(refusalPrefix)+3]))
			c.e.refused(c, status, string(body), len(p))
		}
	}
	return c.Conn.Write(p)
}

// refused records a request net/http refused: an access log line and the
// request metrics with the DPE flag, as Envoy does for a codec error.
func (e *Engine) refused(c net.Conn, status int, reason string, sent int) {
	reasonLabel := "bad_request"
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		reasonLabel = "header_too_large"
	case http.StatusNotImplemented:
		reasonLabel = "unsupported_transfer_encoding"
	case http.StatusHTTPVersionNotSupported:
		reasonLabel = "unsupported_version"
	}
	downstreamRejected.WithLabelValues(reasonLabel).Inc()
	telemetry.ObserveRequest(&telemetry.Labels{Reporter: e.cfg.Reporter, Source: e.cfg.Self,
		RequestProtocol: "http", SecurityPolicy: telemetry.SecurityUnknown},
		telemetry.Request{ResponseCode: status, Flags: FlagDownstreamProtocolError, ResponseBytes: int64(sent)})
	if e.cfg.AccessLog == nil {
		return
	}
	e.cfg.AccessLog.LogAttrs(context.Background(), slog.LevelInfo, "access",
		slog.String("method", "-"),
		slog.String("authority", "-"),
		slog.String("path", "-"),
		slog.String("protocol", "HTTP/1.1"),
		slog.Int("status", status),
		slog.String("flags", FlagDownstreamProtocolError),
		slog.Int("bytes_sent", sent),
		slog.Duration("duration", time.Duration(0)),
		slog.String("client", c.RemoteAddr().String()),
		slog.String("error", reason),
	)
}

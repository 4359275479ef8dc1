package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ambitmesh/ambit/internal/telemetry"
)

// FlagDownstreamProtocolError is Envoy's DPE: the client sent a request
// the proxy could not parse (a malformed head, a broken chunked body).
const FlagDownstreamProtocolError = "DPE"

// refused records a request the downstream server refused: an access log
// line and the request metrics with the DPE flag, as Envoy does for a
// codec error.
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

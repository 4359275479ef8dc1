package telemetry

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// bound is the counters of one label set (response_flags "-"), shared by
// every connection with those labels.
type bound struct {
	opened, sent, received prometheus.Counter
	closedNone             prometheus.Counter
}

// boundCache maps a label set (ResponseFlags cleared) to its counters, so
// opening a connection with labels seen before does not hash 23 label
// values again. It grows like the series themselves, which Prometheus
// keeps for the life of the process anyway.
var boundCache sync.Map // Labels -> *bound

func bind(l Labels) *bound {
	l.ResponseFlags = ""
	if b, ok := boundCache.Load(l); ok {
		return b.(*bound)
	}
	vals := l.values(FlagNone)
	b := &bound{
		opened:     tcpConnectionsOpened.WithLabelValues(vals...),
		sent:       tcpSentBytes.WithLabelValues(vals...),
		received:   tcpReceivedBytes.WithLabelValues(vals...),
		closedNone: tcpConnectionsClosed.WithLabelValues(vals...),
	}
	actual, _ := boundCache.LoadOrStore(l, b)
	return actual.(*bound)
}

// ConnMetrics accounts one connection: it counts the connection opened on
// Open, bytes as they flow, and the connection closed plus one access log
// line on Finish. Safe for concurrent use (the two copy directions run in
// separate goroutines).
type ConnMetrics struct {
	labels   Labels
	b        *bound
	src, dst netip.AddrPort
	hbone    string
	start    time.Time

	request, response atomic.Uint64
	finished          atomic.Bool
}

// Endpoints are the addresses an access log line shows.
type Endpoints struct {
	Src, Dst netip.AddrPort
	// HBONE is the tunnel's :authority ("ip:port") when the connection is
	// carried over HBONE; Dst is then the tunnel's own address.
	HBONE string
}

// Open counts a new connection and returns its handle.
func Open(l Labels, ep Endpoints) *ConnMetrics {
	m := &ConnMetrics{labels: l, b: bind(l), src: ep.Src, dst: ep.Dst, hbone: ep.HBONE, start: time.Now()}
	m.b.opened.Inc()
	return m
}

// AddRequest accounts n bytes from the source to the destination
// (istio_tcp_received_bytes_total). No allocation, no lookup.
func (m *ConnMetrics) AddRequest(n int) {
	if n > 0 {
		m.request.Add(uint64(n))
		m.b.received.Add(float64(n))
	}
}

// AddResponse accounts n bytes from the destination to the source
// (istio_tcp_sent_bytes_total).
func (m *ConnMetrics) AddResponse(n int) {
	if n > 0 {
		m.response.Add(uint64(n))
		m.b.sent.Add(float64(n))
	}
}

// Bytes returns the bytes accounted so far in each direction.
func (m *ConnMetrics) Bytes() (request, response uint64) {
	return m.request.Load(), m.response.Load()
}

// Labels returns the connection's labels as given to Open.
func (m *ConnMetrics) Labels() Labels { return m.labels }

// Result is how a connection ended.
type Result struct {
	// Err is why the connection failed or was refused; nil for a clean
	// close.
	Err error
	// Flags is the response_flags value (FlagDenied, FlagConnectFailure);
	// "" means FlagNone.
	Flags string
	// Policy is the authorization policy ("<namespace>/<name>") that
	// denied the connection, for the access log.
	Policy string
}

// Finish counts the connection closed and writes its access log line to
// log (nil: no line). Only the first call counts; later ones are ignored,
// so every exit path may call it.
func (m *ConnMetrics) Finish(log *slog.Logger, r Result) {
	if !m.finished.CompareAndSwap(false, true) {
		return
	}
	closed := m.b.closedNone
	if r.Flags != "" && r.Flags != FlagNone {
		closed = tcpConnectionsClosed.WithLabelValues(m.labels.values(r.Flags)...)
	}
	closed.Inc()
	if log != nil {
		m.accessLog(log, r)
	}
}

// accessLog writes ztunnel's "connection complete" line: addresses,
// workloads, identities (only when proved by mTLS), direction, bytes from
// the source's point of view, duration, and the outcome.
func (m *ConnMetrics) accessLog(log *slog.Logger, r Result) {
	level := slog.LevelInfo
	if r.Err != nil {
		level = slog.LevelWarn
	}
	ctx := context.Background()
	if !log.Enabled(ctx, level) {
		return
	}
	l := &m.labels
	mtls := l.SecurityPolicy == SecurityMutualTLS
	src := []any{slog.String("addr", addrString(m.src))}
	src = appendNonEmpty(src, "workload", l.Source.Workload)
	src = appendNonEmpty(src, "namespace", l.Source.Namespace)
	if mtls {
		src = appendNonEmpty(src, "identity", l.Source.Principal)
	}
	dst := []any{slog.String("addr", addrString(m.dst))}
	dst = appendNonEmpty(dst, "hbone_addr", m.hbone)
	dst = appendNonEmpty(dst, "service", l.Service.Hostname)
	dst = appendNonEmpty(dst, "workload", l.Destination.Workload)
	dst = appendNonEmpty(dst, "namespace", l.Destination.Namespace)
	if mtls {
		dst = appendNonEmpty(dst, "identity", l.Destination.Principal)
	}
	direction := "inbound"
	if l.Reporter == ReporterSource {
		direction = "outbound"
	}
	flags := r.Flags
	if flags == "" {
		flags = FlagNone
	}
	req, resp := m.Bytes()
	attrs := []slog.Attr{
		slog.Group("src", src...),
		slog.Group("dst", dst...),
		slog.String("direction", direction),
		slog.Uint64("bytes_sent", req),
		slog.Uint64("bytes_recv", resp),
		slog.Duration("duration", time.Since(m.start)),
		slog.String("response_flags", flags),
	}
	if r.Policy != "" {
		attrs = append(attrs, slog.String("policy", r.Policy))
	}
	if r.Err != nil {
		attrs = append(attrs, slog.String("error", r.Err.Error()))
	}
	log.LogAttrs(ctx, level, "connection complete", attrs...)
}

func appendNonEmpty(attrs []any, key, v string) []any {
	if v == "" {
		return attrs
	}
	return append(attrs, slog.String(key, v))
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

package proxy

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/waypoint/lb"
	"github.com/ambitmesh/ambit/internal/waypoint/route"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// downstreamRejected counts what never became a request: heads net/http
// refused (by reason) and heads that did not arrive in time.
var downstreamRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "ambit_proxy_downstream_rejected_total",
	Help: "Downstream requests refused before routing: malformed or oversized heads, unsupported transfer encodings or versions, heads not complete within the read header timeout",
}, []string{"reason"})

// Register registers the request collectors (they live in telemetry, with
// the node proxy's, so every proxy reports one label set) and the
// engine's own. Registering again with the same registry is harmless.
func Register(reg prometheus.Registerer) error {
	if err := reg.Register(downstreamRejected); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return fmt.Errorf("proxy: register metrics: %w", err)
		}
	}
	return telemetry.Register(reg)
}

// headSize is the HTTP/1.1 wire size of a message head: the start line
// (start bytes long) and the header lines, each with its CRLF, and the
// blank line. HTTP/2 sends
// the same fields compressed; Istio reports their uncompressed size too.
func headSize(start int, h http.Header) int64 {
	n := start + 4
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n)
}

// endpointPeer describes a picked endpoint in the metrics: its workload,
// identity and labels.
func endpointPeer(ep lb.Endpoint) telemetry.Peer {
	xe, ok := ep.Value.(*gatewayv1.Endpoint)
	if !ok {
		return telemetry.Peer{}
	}
	w := xe.GetWorkload()
	return telemetry.PeerFromLabels(w.GetName(), w.GetNamespace(), xe.GetIdentity(), xe.GetLabels(), "")
}

// finish records the metrics and the access log line of a request.
func (e *Engine) finish(rw *respWriter, r *http.Request, st *reqState) {
	status := rw.status
	if st.upstreamStatus == http.StatusSwitchingProtocols {
		status = st.upstreamStatus
	}
	if status == 0 {
		status = http.StatusOK
	}
	dur := time.Since(st.start)
	proto := "http"
	grpcStatus := ""
	if route.IsGRPC(r.Header) { // Istio's request_protocol: by content type, routed or not
		proto = "grpc"
		// A trailer, which ReverseProxy adds under http.TrailerPrefix when
		// the upstream did not announce it (gRPC servers do not), or a
		// header in a trailers-only answer.
		grpcStatus = cmp.Or(rw.Header().Get("Grpc-Status"), rw.Header().Get(http.TrailerPrefix+"Grpc-Status"))
	}
	// A waypoint knows its client from the HBONE stream; an ingress
	// gateway reports itself as the source, as Istio's does.
	src := e.cfg.Self
	peer, hasPeer := r.Context().Value(peerKey{}).(Peer)
	if hasPeer {
		src = peer.Labels
	}
	var dstNS, dstName, dstHost string
	if st.up != nil {
		b := st.up.backend
		dstHost, dstNS, dstName = b.GetHostname(), b.GetNamespace(), b.GetName()
	}
	var dst telemetry.Peer
	if st.picked {
		dst = endpointPeer(st.endpoint)
	}
	telemetry.ObserveRequest(&telemetry.Labels{
		Reporter:        e.cfg.Reporter,
		Source:          src,
		Destination:     dst,
		Service:         telemetry.Service{Hostname: dstHost, Namespace: dstNS, Name: dstName},
		RequestProtocol: proto,
		SecurityPolicy:  telemetry.SecurityUnknown,
	}, telemetry.Request{ResponseCode: status, GRPCStatus: grpcStatus, Flags: st.flag, Duration: dur,
		RequestBytes:  st.reqHead + st.reqBody.n.Load(),
		ResponseBytes: headSize(len(r.Proto)+1+3+1+len(http.StatusText(status)), rw.Header()) + rw.bytes,
	})

	if e.cfg.AccessLog == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("authority", r.Host),
		slog.String("path", r.URL.RequestURI()),
		slog.String("protocol", r.Proto),
		slog.Int("status", status),
		slog.String("flags", st.flag),
		slog.Int64("bytes_sent", rw.bytes),
		slog.Duration("duration", dur),
		slog.String("client", r.RemoteAddr),
	}
	if hasPeer && peer.Identity != "" {
		// The identity the HBONE client's certificate proved (Envoy's
		// %DOWNSTREAM_PEER_URI_SAN%).
		attrs = append(attrs, slog.String("peer_identity", peer.Identity))
	}
	if st.fr != nil {
		attrs = append(attrs, slog.String("request_id", st.fr.Header.Get("X-Request-Id")))
		if tp, err := hbone.ParseTraceParent(st.fr.Header.Get("Traceparent")); err == nil {
			attrs = append(attrs, slog.String("trace_id", hex.EncodeToString(tp.TraceID[:])))
		}
	}
	if st.route != nil {
		s := st.route.Source()
		attrs = append(attrs, slog.String("route", s.GetKind()+"/"+s.GetNamespace()+"/"+s.GetName()+"#"+strconv.Itoa(int(s.GetRule()))))
		if n := s.GetRuleName(); n != "" { // the rule's name (Gateway API rules[].name)
			attrs = append(attrs, slog.String("rule", n))
		}
	}
	if !st.policy.Policy.IsZero() || st.flag == FlagRBAC {
		// The deciding policy (a DENY that matched, the ALLOW that did) or
		// why none did.
		attrs = append(attrs, slog.String("authz", st.policy.String()))
	}
	if !st.policy.Audit.IsZero() {
		// An AUDIT policy matched (Istio's AUDIT: logged, never decides).
		attrs = append(attrs, slog.String("audit", st.policy.Audit.String()))
	}
	if st.picked {
		attrs = append(attrs, slog.String("upstream", st.endpoint.Addr.String()), slog.Int("attempts", st.attempts))
	}
	if st.upstreamErr != nil {
		attrs = append(attrs, slog.String("upstream_error", st.upstreamErr.Error()))
	}
	e.cfg.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "access", attrs...)
}

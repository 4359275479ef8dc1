package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambitmesh/ambit/internal/telemetry"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// labelNames are Istio's standard HTTP metric labels, in Istio's order.
var labelNames = []string{
	"reporter",
	"source_workload",
	"source_canonical_service",
	"source_canonical_revision",
	"source_workload_namespace",
	"source_principal",
	"source_app",
	"source_version",
	"source_cluster",
	"destination_service",
	"destination_service_namespace",
	"destination_service_name",
	"destination_workload",
	"destination_canonical_service",
	"destination_canonical_revision",
	"destination_workload_namespace",
	"destination_principal",
	"destination_app",
	"destination_version",
	"destination_cluster",
	"request_protocol",
	"response_code",
	"grpc_response_status",
	"response_flags",
	"connection_security_policy",
}

var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_requests_total",
		Help: "The total number of requests",
	}, labelNames)
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "istio_request_duration_milliseconds",
		Help: "Duration in milliseconds",
		// Istio's default buckets.
		Buckets: []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000},
	}, labelNames)
)

// Register registers the request collectors with reg. Registering again
// with the same registry is harmless.
func Register(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{requestsTotal, requestDuration} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				errs = append(errs, fmt.Errorf("proxy: register metrics: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

func orUnknown(s string) string {
	if s == "" {
		return telemetry.Unknown
	}
	return s
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
	if st.route != nil && st.route.GRPC {
		proto = "grpc"
		grpcStatus = rw.Header().Get("Grpc-Status")
	}
	src := e.cfg.Self
	var dstNS, dstName, dstHost, dstWL, dstWLNS, dstPrincipal string
	if st.up != nil {
		b := st.up.backend
		dstHost, dstNS, dstName = b.GetHostname(), b.GetNamespace(), b.GetName()
	}
	if st.picked {
		if ep, ok := st.endpoint.Value.(*gatewayv1.Endpoint); ok {
			dstPrincipal = ep.GetIdentity()
			dstWL, dstWLNS = ep.GetWorkload().GetName(), ep.GetWorkload().GetNamespace()
		}
	}
	values := []string{
		e.cfg.Reporter,
		orUnknown(src.Workload), orUnknown(src.CanonicalService), orUnknown(src.CanonicalRevision),
		orUnknown(src.Namespace), orUnknown(src.Principal), orUnknown(src.App), orUnknown(src.Version), orUnknown(src.Cluster),
		orUnknown(dstHost), orUnknown(dstNS), orUnknown(dstName),
		orUnknown(dstWL), orUnknown(dstWL), telemetry.Unknown, orUnknown(dstWLNS), orUnknown(dstPrincipal),
		orUnknown(dstWL), telemetry.Unknown, telemetry.Unknown,
		proto, strconv.Itoa(status), orUnknown(grpcStatus), st.flag, telemetry.SecurityUnknown,
	}
	requestsTotal.WithLabelValues(values...).Inc()
	requestDuration.WithLabelValues(values...).Observe(float64(dur) / float64(time.Millisecond))

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
	if st.fr != nil {
		attrs = append(attrs, slog.String("request_id", st.fr.Header.Get("X-Request-Id")))
	}
	if st.route != nil {
		s := st.route.Source()
		attrs = append(attrs, slog.String("route", s.GetKind()+"/"+s.GetNamespace()+"/"+s.GetName()+"#"+strconv.Itoa(int(s.GetRule()))))
	}
	if st.picked {
		attrs = append(attrs, slog.String("upstream", st.endpoint.Addr.String()), slog.Int("attempts", st.attempts))
	}
	if st.upstreamErr != nil {
		attrs = append(attrs, slog.String("upstream_error", st.upstreamErr.Error()))
	}
	e.cfg.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "access", attrs...)
}

// Package telemetry records the node proxy's traffic telemetry: Istio's
// TCP metrics with Istio's names and labels, so existing Istio dashboards
// and alerts work unchanged, and one access log line per connection.
//
// Per connection, Open binds the label set to its counters once; after
// that, accounting a read or a write is an atomic add.
package telemetry

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// labelNames are ztunnel's CommonTrafficLabels (Istio's standard metric
// labels, including the canonical service ones its dashboards group by),
// in ztunnel's order.
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
	"response_flags",
	"connection_security_policy",
}

// httpLabelNames are Istio's HTTP request metric labels: the traffic labels
// with response_code and grpc_response_status before response_flags.
var httpLabelNames = func() []string {
	n := len(labelNames)
	out := append([]string{}, labelNames[:n-2]...)
	return append(out, "response_code", "grpc_response_status", labelNames[n-2], labelNames[n-1])
}()

// Package-level collectors (DESIGN.md §5); Register adds them to the node
// proxy's registry.
var (
	tcpConnectionsOpened = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_tcp_connections_opened_total",
		Help: "The total number of TCP connections opened",
	}, labelNames)
	tcpConnectionsClosed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_tcp_connections_closed_total",
		Help: "The total number of TCP connections closed",
	}, labelNames)
	// Istio's definitions: sent is the response direction (destination to
	// source), received the request direction, whichever side reports.
	tcpSentBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_tcp_sent_bytes_total",
		Help: "The size of total bytes sent during response in case of a TCP connection",
	}, labelNames)
	tcpReceivedBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_tcp_received_bytes_total",
		Help: "The size of total bytes received during request in case of a TCP connection",
	}, labelNames)
)

// HTTP request collectors, reported by waypoints and gateways.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_requests_total",
		Help: "The total number of requests",
	}, httpLabelNames)
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "istio_request_duration_milliseconds",
		Help: "Duration in milliseconds",
		// Istio's default buckets.
		Buckets: []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000},
	}, httpLabelNames)
	// Sizes are headers plus body, as Istio's request.total_size and
	// response.total_size.
	requestBytes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "istio_request_bytes",
		Help:    "Request size in bytes (headers and body)",
		Buckets: byteBuckets,
	}, httpLabelNames)
	responseBytes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "istio_response_bytes",
		Help:    "Response size in bytes (headers and body)",
		Buckets: byteBuckets,
	}, httpLabelNames)
)

// byteBuckets are Istio's size buckets: powers of ten from 1 B to 1 GB.
var byteBuckets = prometheus.ExponentialBuckets(1, 10, 10)

// Request is the outcome of one HTTP request.
type Request struct {
	ResponseCode int
	GRPCStatus   string // "" when not gRPC
	Flags        string
	Duration     time.Duration
	// RequestBytes and ResponseBytes are the sizes of the request and
	// response as sent, headers and body.
	RequestBytes, ResponseBytes int64
}

// ObserveRequest records one HTTP request with l's labels:
// istio_requests_total, istio_request_duration_milliseconds,
// istio_request_bytes and istio_response_bytes.
func ObserveRequest(l *Labels, r Request) {
	// httpLabelNames: the traffic labels, with response_code and
	// grpc_response_status before the last two.
	var k requestKey
	n := len(labelNames)
	l.fill(k[:n], r.Flags)
	k[n+1], k[n] = k[n-1], k[n-2]
	k[n-2], k[n-1] = statusCode(r.ResponseCode), orUnknown(r.GRPCStatus)
	requestSeriesMu.RLock()
	s := requestSeriesByKey[k]
	requestSeriesMu.RUnlock()
	if s == nil {
		requestSeriesMu.Lock()
		if s = requestSeriesByKey[k]; s == nil {
			s = &requestSeries{
				total:     requestsTotal.WithLabelValues(k[:]...),
				duration:  requestDuration.WithLabelValues(k[:]...),
				reqBytes:  requestBytes.WithLabelValues(k[:]...),
				respBytes: responseBytes.WithLabelValues(k[:]...),
			}
			requestSeriesByKey[k] = s
		}
		requestSeriesMu.Unlock()
	}
	s.total.Inc()
	s.duration.Observe(float64(r.Duration) / float64(time.Millisecond))
	s.reqBytes.Observe(float64(r.RequestBytes))
	s.respBytes.Observe(float64(r.ResponseBytes))
}

// requestSeries are the four request series of one label set, looked up
// once: WithLabelValues validates and hashes every label value on each
// call, four times per request, which was the largest cost of a request's
// telemetry (bench/gateway). Series are never deleted, so neither are
// the map's entries; both grow with the label sets seen.
type requestSeries struct {
	total                         prometheus.Counter
	duration, reqBytes, respBytes prometheus.Observer
}

// requestKey is a label set in httpLabelNames order; an array, so a
// lookup allocates nothing.
type requestKey [25]string

var (
	requestSeriesMu    sync.RWMutex
	requestSeriesByKey = map[requestKey]*requestSeries{}
)

// statusCodes are the response codes' label values, so a request does
// not format one.
var statusCodes = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func statusCode(c int) string {
	if c >= 0 && c < len(statusCodes) {
		return statusCodes[c]
	}
	return strconv.Itoa(c)
}

// Register registers the traffic collectors with reg. Registering again
// with the same registry is harmless.
func Register(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{tcpConnectionsOpened, tcpConnectionsClosed, tcpSentBytes, tcpReceivedBytes, requestsTotal, requestDuration, requestBytes, responseBytes} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				errs = append(errs, fmt.Errorf("telemetry: register metrics: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

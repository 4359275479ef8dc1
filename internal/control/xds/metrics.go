package xds

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Package-level collectors (DESIGN.md §5); RegisterMetrics adds them to
// the control plane's registry.
var (
	connectedProxies = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ambit_xds_connected_proxies",
		Help: "Proxies with an open, authenticated delta ADS stream, by kind (node, gateway).",
	}, []string{"kind"})
	pushesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_xds_pushes_total",
		Help: "Delta discovery responses sent, by type URL.",
	}, []string{"type"})
	resourcesSentTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_xds_resources_sent_total",
		Help: "Resources sent (added or updated) in delta responses, by type URL.",
	}, []string{"type"})
	resourcesRemovedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_xds_resources_removed_total",
		Help: "Resource names sent in removed_resources, by type URL.",
	}, []string{"type"})
	responseBytesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_xds_response_bytes_total",
		Help: "Encoded size of delta responses sent, by type URL.",
	}, []string{"type"})
	nacksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_xds_nacks_total",
		Help: "Responses a proxy rejected (NACK with error_detail), by type URL.",
	}, []string{"type"})
	rejectedStreamsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_xds_rejected_streams_total",
		Help: "Streams refused, by reason (unauthenticated, permission_denied, invalid_argument).",
	}, []string{"reason"})
	viewComputeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ambit_xds_view_compute_seconds",
		Help:    "Time to compute every proxy view from a mesh model.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
)

// RegisterMetrics registers the xDS server's collectors with reg. Calling
// it again with the same registry is harmless.
func RegisterMetrics(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{
		connectedProxies, pushesTotal, resourcesSentTotal, resourcesRemovedTotal,
		responseBytesTotal, nacksTotal, rejectedStreamsTotal, viewComputeSeconds,
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("xds: register metrics: %w", err)
	}
	return nil
}

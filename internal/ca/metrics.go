package ca

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Package-level collectors (DESIGN.md §5); RegisterMetrics adds them to the
// control plane's registry.
var (
	issuedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_ca_certificates_issued_total",
		Help: "Certificates the CA issued, by kind (node, gateway, workload, control).",
	}, []string{"kind"})
	refusedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_ca_certificates_refused_total",
		Help: "Certificate requests refused, by reason (unauthenticated, foreign_trust_domain, untrusted_peer, bad_token, permission_denied, invalid_csr, identity_mismatch, invalid_argument, internal).",
	}, []string{"reason"})
	signSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ambit_ca_sign_seconds",
		Help:    "Time to check a CSR and sign its certificate.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
	})
	bundleGeneration = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ambit_ca_bundle_generation",
		Help: "Generation of the trust bundle the CA distributes.",
	})
	signerExpiry = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ambit_ca_signer_expiry_timestamp_seconds",
		Help: "When the certificate the CA signs with expires (Unix time).",
	})
)

// RegisterMetrics registers the CA's collectors with reg. Calling it again
// with the same registry is harmless.
func RegisterMetrics(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{issuedTotal, refusedTotal, signSeconds, bundleGeneration, signerExpiry} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ca: register metrics: %w", err)
	}
	return nil
}

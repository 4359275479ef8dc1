package identity

import (
	"errors"
	"sync"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
)

// Package-level collectors (DESIGN.md §5); RegisterMetrics adds them to a
// proxy's registry.
var (
	issuedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_identity_certificates_issued_total",
		Help: "Certificates obtained from the CA, by reason (initial: first use of an identity or after expiry; renewal).",
	}, []string{"reason"})
	fetchFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambit_identity_certificate_fetch_failures_total",
		Help: "Failed certificate requests to the CA, by reason (initial, renewal).",
	}, []string{"reason"})
	expiry = &expiryCollector{managers: map[weak.Pointer[Manager]]struct{}{}}
)

var expiryDesc = prometheus.NewDesc(
	"ambit_identity_certificate_expiry_seconds",
	"Seconds until the certificate held for an identity expires (negative once expired).",
	[]string{"identity"}, nil)

// expiryCollector computes seconds-until-expiry at scrape time from the
// live managers, so the value never goes stale between renewals. It holds
// them weakly: a manager that is dropped without Run ever ending (tests,
// a failed start) must not be kept alive or reported forever.
type expiryCollector struct {
	mu       sync.Mutex
	managers map[weak.Pointer[Manager]]struct{}
}

func registerManager(m *Manager) {
	expiry.mu.Lock()
	expiry.managers[weak.Make(m)] = struct{}{}
	expiry.mu.Unlock()
}

func unregisterManager(m *Manager) {
	expiry.mu.Lock()
	delete(expiry.managers, weak.Make(m))
	expiry.mu.Unlock()
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	// Several managers in one process (tests, the demo) may hold the same
	// identity; one series each, the soonest expiry.
	soonest := map[string]time.Time{}
	c.mu.Lock()
	for wp := range c.managers {
		m := wp.Value()
		if m == nil {
			delete(c.managers, wp)
			continue
		}
		m.mu.RLock()
		for id, e := range m.entries {
			cert := e.cert.Load()
			if cert == nil {
				continue
			}
			k := id.String()
			if t, ok := soonest[k]; !ok || cert.Leaf.NotAfter.Before(t) {
				soonest[k] = cert.Leaf.NotAfter
			}
		}
		m.mu.RUnlock()
	}
	c.mu.Unlock()
	now := time.Now()
	for id, t := range soonest {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, t.Sub(now).Seconds(), id)
	}
}

// RegisterMetrics registers the package's collectors with reg. Calling it
// again with the same registry is harmless.
func RegisterMetrics(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{issuedTotal, fetchFailures, expiry} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

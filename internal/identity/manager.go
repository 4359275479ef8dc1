package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/singleflight"
)

// Fetcher asks a CA to sign a CSR. CAClient implements it over the CA's gRPC
// service.
type Fetcher interface {
	// CreateCertificate sends csrPEM (whose only URI SAN is id) and returns
	// the chain, leaf first, and the roots the CA reports the mesh trusts
	// (possibly none).
	CreateCertificate(ctx context.Context, id spiffeid.ID, csrPEM []byte, validity time.Duration) (*Issued, error)
}

// Issued is a CA's answer.
type Issued struct {
	Chain      []*x509.Certificate // leaf first, then intermediates
	Roots      []*x509.Certificate // the mesh's roots now (two during a root rotation); may be empty
	Generation uint64              // the roots' generation; 0 if the CA does not version them
}

// Source supplies the local certificate for an identity; the TLS configs call
// it on every handshake. *Manager is a Source.
type Source interface {
	Get(ctx context.Context, id spiffeid.ID) (*tls.Certificate, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, id spiffeid.ID) (*tls.Certificate, error)

// Get implements Source.
func (f SourceFunc) Get(ctx context.Context, id spiffeid.ID) (*tls.Certificate, error) {
	return f(ctx, id)
}

// Config configures a Manager. Zero durations and fractions take the defaults
// documented on each field.
type Config struct {
	// TrustDomain is the only trust domain the manager issues for. Required.
	TrustDomain spiffeid.TrustDomain
	// Fetcher signs CSRs. Required.
	Fetcher Fetcher
	// Bundle, when set, receives the roots of every CA answer and verifies
	// issued chains when the CA sends no roots.
	Bundle *Bundle
	// Validity is the lifetime asked of the CA (which may cap it). Default 24h.
	Validity time.Duration
	// RenewFraction is the point of a certificate's lifetime at which it is
	// renewed. Default 0.5.
	RenewFraction float64
	// RenewJitter spreads renewals of many identities (and many nodes) by up
	// to ± this fraction of the lifetime. Default 0.1.
	RenewJitter float64
	// RetryInitial and RetryMax bound the exponential backoff after a failed
	// renewal. Defaults 1s and 5m.
	RetryInitial, RetryMax time.Duration
	// FetchTimeout bounds one CA call. Default 30s.
	FetchTimeout time.Duration
	// Logger is the component's scoped logger. Default slog.Default().
	Logger *slog.Logger
}

const (
	defaultValidity      = 24 * time.Hour
	defaultRenewFraction = 0.5
	defaultRenewJitter   = 0.1
	defaultRetryInitial  = time.Second
	defaultRetryMax      = 5 * time.Minute
	defaultFetchTimeout  = 30 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Validity == 0 {
		c.Validity = defaultValidity
	}
	if c.RenewFraction == 0 {
		c.RenewFraction = defaultRenewFraction
	}
	if c.RenewJitter == 0 {
		c.RenewJitter = defaultRenewJitter
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = defaultRetryInitial
	}
	if c.RetryMax == 0 {
		c.RetryMax = defaultRetryMax
	}
	if c.FetchTimeout == 0 {
		c.FetchTimeout = defaultFetchTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.TrustDomain.IsZero() {
		errs = append(errs, errors.New("Config.TrustDomain is empty: set the mesh trust domain, e.g. cluster.local"))
	}
	if c.Fetcher == nil {
		errs = append(errs, errors.New("Config.Fetcher is nil: set a CA client (NewCAClient)"))
	}
	if c.Validity < 0 {
		errs = append(errs, fmt.Errorf("Config.Validity is %v: must be positive (or 0 for %v)", c.Validity, defaultValidity))
	}
	if c.RenewFraction < 0 || c.RenewFraction >= 1 {
		errs = append(errs, fmt.Errorf("Config.RenewFraction is %v: must be in (0, 1) (or 0 for %v)", c.RenewFraction, defaultRenewFraction))
	}
	if c.RenewJitter < 0 || c.RenewJitter >= 0.5 {
		errs = append(errs, fmt.Errorf("Config.RenewJitter is %v: must be in [0, 0.5) (or 0 for %v)", c.RenewJitter, defaultRenewJitter))
	}
	if c.RetryInitial < 0 || c.RetryMax < 0 || c.FetchTimeout < 0 {
		errs = append(errs, errors.New("Config.RetryInitial, RetryMax and FetchTimeout must not be negative"))
	}
	d := c.withDefaults()
	if d.RenewJitter >= d.RenewFraction || d.RenewFraction+d.RenewJitter >= 1 {
		errs = append(errs, fmt.Errorf("Config.RenewFraction %v ± Config.RenewJitter %v leaves (0, 1): the renewal point must stay inside the lifetime", d.RenewFraction, d.RenewJitter))
	}
	if d.RetryMax < d.RetryInitial {
		errs = append(errs, fmt.Errorf("Config.RetryMax (%v) is below Config.RetryInitial (%v): RetryMax must be >= RetryInitial", d.RetryMax, d.RetryInitial))
	}
	return errors.Join(errs...)
}

// Manager holds one certificate per identity served by this proxy. Get is
// safe for concurrent use and cheap when the certificate is cached; Run
// renews certificates in the background.
type Manager struct {
	cfg Config
	log *slog.Logger
	sf  singleflight.Group

	mu      sync.RWMutex
	entries map[spiffeid.ID]*entry

	wake   chan struct{}
	runCtx atomic.Pointer[context.Context]
}

// entry is one identity. cert is read lock-free by handshakes; the
// scheduling fields are guarded by Manager.mu.
type entry struct {
	id   spiffeid.ID
	cert atomic.Pointer[tls.Certificate]

	next     time.Time // when Run should renew (or retry); zero: nothing scheduled
	attempt  int       // failed renewals in a row
	renewing bool
}

// NewManager validates cfg. It does no I/O.
func NewManager(cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	cfg = cfg.withDefaults()
	m := &Manager{
		cfg:     cfg,
		log:     cfg.Logger,
		entries: make(map[spiffeid.ID]*entry),
		wake:    make(chan struct{}, 1),
	}
	registerManager(m)
	return m, nil
}

// Get returns a valid certificate for id, fetching one from the CA on first
// use (concurrent callers share one fetch) and from then on serving it from
// the cache. The caller's ctx bounds only its own wait: a fetch that other
// callers share keeps running (up to FetchTimeout).
func (m *Manager) Get(ctx context.Context, id spiffeid.ID) (*tls.Certificate, error) {
	if c := m.cached(id); c != nil {
		return c, nil
	}
	if !id.MemberOf(m.cfg.TrustDomain) {
		return nil, fmt.Errorf("identity: certificate for %q: not in trust domain %q", id, m.cfg.TrustDomain)
	}
	m.mu.Lock()
	if _, ok := m.entries[id]; !ok {
		m.entries[id] = &entry{id: id}
	}
	m.mu.Unlock()
	return m.fetchShared(ctx, id, reasonInitial, nil)
}

// Current returns the cached certificate for id without ever asking the CA,
// or an error when there is none or it has expired. The CA channel uses it
// for the node's own certificate: fetching there would need the very
// connection being set up.
func (m *Manager) Current(id spiffeid.ID) (*tls.Certificate, error) {
	m.mu.RLock()
	e := m.entries[id]
	m.mu.RUnlock()
	if e == nil || e.cert.Load() == nil {
		return nil, fmt.Errorf("identity: no certificate for %q on this proxy", id)
	}
	c := e.cert.Load()
	if !time.Now().Before(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("identity: certificate for %q expired at %s; renewal failed until then (a node must join again)", id, c.Leaf.NotAfter.Format(time.RFC3339))
	}
	return c, nil
}

// Install adds a certificate just obtained elsewhere (the node certificate
// from Join) and manages it like the others: it is renewed through the
// Fetcher. cert.Leaf must be set.
func (m *Manager) Install(id spiffeid.ID, cert *tls.Certificate) error {
	if cert == nil || cert.Leaf == nil {
		return fmt.Errorf("identity: install certificate for %q: the certificate or its Leaf is nil", id)
	}
	if !id.MemberOf(m.cfg.TrustDomain) {
		return fmt.Errorf("identity: install certificate for %q: not in trust domain %q", id, m.cfg.TrustDomain)
	}
	m.mu.Lock()
	e, ok := m.entries[id]
	if !ok {
		e = &entry{id: id}
		m.entries[id] = e
	}
	m.storeLocked(e, cert, time.Now())
	m.mu.Unlock()
	m.poke()
	return nil
}

// Forget drops id (when its last workload left the node): no more renewals,
// the next Get fetches afresh. A fetch in flight finishes but is not cached.
func (m *Manager) Forget(id spiffeid.ID) {
	m.mu.Lock()
	delete(m.entries, id)
	m.mu.Unlock()
	m.poke()
}

// Identities lists the identities the manager holds an entry for.
func (m *Manager) Identities() []spiffeid.ID {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]spiffeid.ID, 0, len(m.entries))
	for id := range m.entries {
		out = append(out, id)
	}
	return out
}

func (m *Manager) cached(id spiffeid.ID) *tls.Certificate {
	m.mu.RLock()
	e := m.entries[id]
	m.mu.RUnlock()
	if e == nil {
		return nil
	}
	c := e.cert.Load()
	if c == nil || !time.Now().Before(c.Leaf.NotAfter) {
		return nil
	}
	return c
}

const (
	reasonInitial = "initial"
	reasonRenewal = "renewal"
)

// fetchShared runs (or joins) the one fetch in flight for id. A caller can
// miss the cache just before a fetch stores its result and reach the
// singleflight just after it finished, so the cache is checked again
// inside: a valid certificate other than stale (the one a renewal
// replaces) is the answer.
func (m *Manager) fetchShared(ctx context.Context, id spiffeid.ID, reason string, stale *tls.Certificate) (*tls.Certificate, error) {
	ch := m.sf.DoChan(id.String(), func() (any, error) {
		if c := m.cached(id); c != nil && c != stale {
			return c, nil
		}
		return m.fetch(ctx, id, reason)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*tls.Certificate), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("identity: certificate for %q: %w", id, ctx.Err())
	}
}

// fetch makes a key and CSR, asks the CA and caches the result if id is still
// wanted. Its context is detached from the first caller (others may share
// the result) but ends with FetchTimeout and with Run's context.
func (m *Manager) fetch(callerCtx context.Context, id spiffeid.ID, reason string) (*tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(callerCtx), m.cfg.FetchTimeout)
	defer cancel()
	if rc := m.runCtx.Load(); rc != nil {
		defer context.AfterFunc(*rc, cancel)()
	}
	asked := time.Now()
	cert, err := m.issue(ctx, id)
	if err != nil {
		fetchFailures.WithLabelValues(reason).Inc()
		return nil, fmt.Errorf("identity: certificate for %q: %w", id, err)
	}
	issuedTotal.WithLabelValues(reason).Inc()
	m.mu.Lock()
	if e := m.entries[id]; e != nil {
		m.storeLocked(e, cert, asked)
	}
	m.mu.Unlock()
	m.poke()
	m.log.Debug("certificate issued", "identity", id.String(), "reason", reason, "not_after", cert.Leaf.NotAfter)
	return cert, nil
}

func (m *Manager) issue(ctx context.Context, id spiffeid.ID) (*tls.Certificate, error) {
	key, csr, err := newKeyAndCSR(id)
	if err != nil {
		return nil, err
	}
	iss, err := m.cfg.Fetcher.CreateCertificate(ctx, id, csr, m.cfg.Validity)
	if err != nil {
		return nil, err
	}
	// A nil *Bundle must not become a non-nil interface.
	var fallback x509bundle.Source
	if m.cfg.Bundle != nil {
		fallback = m.cfg.Bundle
	}
	cert, err := assemble(id, key, iss.Chain, iss.Roots, fallback)
	if err != nil {
		return nil, err
	}
	if len(iss.Roots) > 0 && m.cfg.Bundle != nil {
		if iss.Generation == 0 {
			err = m.cfg.Bundle.SetRoots(iss.Roots)
		} else {
			_, err = m.cfg.Bundle.SetRootsAt(iss.Generation, iss.Roots)
		}
		if err != nil {
			return nil, err
		}
	}
	return cert, nil
}

// storeLocked caches cert and schedules its renewal at RenewFraction ±
// RenewJitter of its lifetime. The lifetime counts from when the certificate
// was asked for, or from NotBefore if later: CAs back-date NotBefore for
// clock skew (ambit's by 5 minutes), which would otherwise pull renewals of
// short-lived certificates into the past.
func (m *Manager) storeLocked(e *entry, cert *tls.Certificate, obtained time.Time) {
	e.cert.Store(cert)
	e.attempt = 0
	start, end := cert.Leaf.NotBefore, cert.Leaf.NotAfter
	if obtained.After(start) {
		start = obtained
	}
	frac := m.cfg.RenewFraction + (rand.Float64()*2-1)*m.cfg.RenewJitter
	next := start.Add(time.Duration(frac * float64(end.Sub(start))))
	// A certificate already past its renewal point (e.g. installed late)
	// is renewed soon, but never in a tight loop.
	if now := time.Now(); next.Before(now) {
		next = now.Add(min(m.cfg.RetryInitial, end.Sub(now)/2))
	}
	e.next = next
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// retryDelay is exponential backoff with "equal jitter": uniformly in
// [c/2, c] for c = min(RetryMax, RetryInitial·2^attempt), so retries spread
// out but still grow.
func (m *Manager) retryDelay(attempt int) time.Duration {
	c := m.cfg.RetryInitial
	for i := 0; i < attempt && c < m.cfg.RetryMax; i++ {
		c *= 2
	}
	c = min(c, m.cfg.RetryMax)
	half := c / 2
	return half + time.Duration(rand.Int64N(int64(c-half)+1))
}

// Run renews certificates until ctx ends and returns nil then; it waits for
// the renewals it started. Call it once.
func (m *Manager) Run(ctx context.Context) error {
	if !m.runCtx.CompareAndSwap(nil, &ctx) {
		return errors.New("identity: Manager.Run called twice")
	}
	// A stopped manager's certificates are no longer looked after: stop
	// reporting them.
	defer unregisterManager(m)
	var wg sync.WaitGroup
	defer wg.Wait()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		var due []*entry
		var earliest time.Time
		m.mu.Lock()
		for _, e := range m.entries {
			switch {
			case e.renewing || e.next.IsZero():
			case !e.next.After(now):
				e.renewing = true
				due = append(due, e)
			case earliest.IsZero() || e.next.Before(earliest):
				earliest = e.next
			}
		}
		m.mu.Unlock()
		for _, e := range due {
			wg.Go(func() { m.renew(ctx, e) })
		}
		wait := time.Hour
		if !earliest.IsZero() {
			wait = time.Until(earliest)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
		case <-timer.C:
		}
	}
}

func (m *Manager) renew(ctx context.Context, e *entry) {
	_, err := m.fetchShared(ctx, e.id, reasonRenewal, e.cert.Load())
	m.mu.Lock()
	e.renewing = false
	if err != nil && m.entries[e.id] == e {
		delay := m.retryDelay(e.attempt)
		e.attempt++
		e.next = time.Now().Add(delay)
		attempt := e.attempt
		var notAfter time.Time
		if c := e.cert.Load(); c != nil {
			notAfter = c.Leaf.NotAfter
		}
		m.mu.Unlock()
		if ctx.Err() == nil {
			m.log.Warn("certificate renewal failed; serving the current certificate and retrying",
				"identity", e.id.String(), "attempt", attempt, "retry_in", delay, "not_after", notAfter, "error", err)
		}
	} else {
		m.mu.Unlock()
	}
	m.poke()
}

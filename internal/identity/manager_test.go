package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/identity/identitytest"
	"github.com/ambitmesh/ambit/internal/testkit"
)

// metric reads one series from the package's collectors; ok is false when
// the series does not exist.
func metric(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := identity.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func counter(t *testing.T, name, reason string) float64 {
	v, _ := metric(t, name, map[string]string{"reason": reason})
	return v
}

func TestGetSharesOneFetchAndCaches(t *testing.T) {
	ca := identitytest.MustNewCA(t, td.Name(), time.Hour)
	f := newFetcher(ca)
	gate := make(chan struct{})
	f.gate = gate
	m := startManager(t, identity.Config{TrustDomain: td, Fetcher: f})

	a, b := wid("shop", "reviews"), wid("shop", "ratings")
	const callers = 50
	type result struct {
		id   spiffeid.ID
		leaf *x509.Certificate
		err  error
	}
	results := make(chan result, 2*callers)
	var started sync.WaitGroup
	for i := range 2 * callers {
		id := a
		if i%2 == 1 {
			id = b
		}
		started.Add(1)
		go func() {
			started.Done()
			c, err := m.Get(context.Background(), id)
			r := result{id: id, err: err}
			if err == nil {
				r.leaf = c.Leaf
			}
			results <- r
		}()
	}
	started.Wait()
	// Both identities' fetches are in the CA (held at the gate) before any
	// is released, so every later caller either joins them or hits the cache.
	deadline := time.Now().Add(5 * time.Second)
	for f.calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	leaves := map[spiffeid.ID]*x509.Certificate{}
	for range 2 * callers {
		r := <-results
		if r.err != nil {
			t.Fatalf("Get(%s): %v", r.id, r.err)
		}
		if got, _ := identity.PeerID(tlsStateOf(r.leaf)); got != r.id {
			t.Errorf("Get(%s) returned a certificate for %s", r.id, got)
		}
		if prev, ok := leaves[r.id]; ok && !prev.Equal(r.leaf) {
			t.Errorf("Get(%s) returned two different certificates to concurrent callers", r.id)
		}
		leaves[r.id] = r.leaf
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("CA calls = %d for %d callers of 2 identities, want 2 (one per identity)", n, 2*callers)
	}
	// Cached from now on.
	c, err := m.Get(context.Background(), a)
	if err != nil || !c.Leaf.Equal(leaves[a]) {
		t.Errorf("Get after fetch = %v, %v; want the cached certificate", c, err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("CA calls = %d after a cached Get, want 2", n)
	}
	got, err := m.Current(a)
	if err != nil || !got.Leaf.Equal(leaves[a]) {
		t.Errorf("Current(%s) = %v, %v; want the cached certificate", a, got, err)
	}
	if v, ok := metric(t, "ambit_identity_certificate_expiry_seconds", map[string]string{"identity": a.String()}); !ok || v < 3500 || v > 3600 {
		t.Errorf("expiry gauge for %s = %v (present %v), want about 3600", a, v, ok)
	}
}

// tlsStateOf lets PeerID read a bare leaf.
func tlsStateOf(leaf *x509.Certificate) tls.ConnectionState {
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
}

func TestGetRefusals(t *testing.T) {
	ca := identitytest.MustNewCA(t, td.Name(), time.Hour)
	other := identitytest.MustNewCA(t, td.Name(), time.Hour)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	tests := []struct {
		name    string
		id      spiffeid.ID
		fetcher identity.Fetcher
		want    string
	}{
		{"foreign trust domain asked", spiffeid.RequireFromString("spiffe://evil.org/ns/a/sa/b"), ca, "not in trust domain"},
		{"CA down", wid("a", "b"), failing{}, "CA unavailable"},
		{"CA signs another identity", wid("a", "b"), liar{ca: ca, swapID: wid("a", "other")}, "asked for"},
		{"CA signs another key", wid("a", "b"), liar{ca: ca, swapKey: key}, "different key"},
		{"CA chain from a root it does not return", wid("a", "b"), liar{ca: ca, roots: []*x509.Certificate{other.Root}}, "does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := startManager(t, identity.Config{TrustDomain: td, Fetcher: tt.fetcher})
			before := counter(t, "ambit_identity_certificate_fetch_failures_total", "initial")
			_, err := m.Get(context.Background(), tt.id)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Get(%s) error = %v, want one containing %q", tt.id, err, tt.want)
			}
			if _, err := m.Current(tt.id); err == nil {
				t.Errorf("Current(%s) has a certificate after a refused fetch", tt.id)
			}
			if tt.name != "foreign trust domain asked" {
				if after := counter(t, "ambit_identity_certificate_fetch_failures_total", "initial"); after != before+1 {
					t.Errorf("fetch failures went %v -> %v, want +1", before, after)
				}
			}
		})
	}
}

type failing struct{}

func (failing) CreateCertificate(context.Context, spiffeid.ID, []byte, time.Duration) (*identity.Issued, error) {
	return nil, errors.New("CA unavailable")
}

// liar is a CA that answers wrongly in one of several ways.
type liar struct {
	ca      *identitytest.CA
	swapID  spiffeid.ID
	swapKey *ecdsa.PrivateKey
	roots   []*x509.Certificate
}

func (l liar) CreateCertificate(ctx context.Context, id spiffeid.ID, csr []byte, v time.Duration) (*identity.Issued, error) {
	iss, err := l.ca.CreateCertificate(ctx, id, csr, v)
	if err != nil {
		return nil, err
	}
	leaf := iss.Chain[0]
	switch {
	case !l.swapID.IsZero():
		leaf, err = l.ca.Sign(leaf.PublicKey, l.swapID, leaf.NotBefore, leaf.NotAfter)
	case l.swapKey != nil:
		leaf, err = l.ca.Sign(l.swapKey.Public(), id, leaf.NotBefore, leaf.NotAfter)
	case l.roots != nil:
		iss.Roots = l.roots
	}
	iss.Chain[0] = leaf
	return iss, err
}

func TestRenewalAtHalfLife(t *testing.T) {
	const ttl = 4 * time.Second
	ca := identitytest.MustNewCA(t, td.Name(), ttl)
	f := newFetcher(ca)
	m := startManager(t, identity.Config{TrustDomain: td, Fetcher: f, Validity: time.Hour})
	id := wid("shop", "reviews")
	before := counter(t, "ambit_identity_certificates_issued_total", "renewal")

	first, err := m.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	ev0 := f.next(t, time.Second, okFor(id))
	if life := first.Leaf.NotAfter.Sub(first.Leaf.NotBefore); life > ttl {
		t.Fatalf("CA capped validity: lifetime %v, want <= %v (the CA's TTL)", life, ttl)
	}
	ev1 := f.next(t, ttl, okFor(id))

	// Renewal is due at 50% ± 10% of the lifetime counted from the request.
	life := first.Leaf.NotAfter.Sub(ev0.at)
	lo := ev0.at.Add(time.Duration(0.4*float64(life)) - 100*time.Millisecond)
	hi := ev0.at.Add(time.Duration(0.6*float64(life)) + 500*time.Millisecond)
	if ev1.at.Before(lo) || ev1.at.After(hi) {
		t.Errorf("renewal at +%v after the first request, want within [+%v, +%v] of a %v lifetime",
			ev1.at.Sub(ev0.at), lo.Sub(ev0.at), hi.Sub(ev0.at), life)
	}
	if !ev1.at.Before(first.Leaf.NotAfter) {
		t.Errorf("renewal at %v, after the old certificate expired at %v", ev1.at, first.Leaf.NotAfter)
	}
	// The next handshake gets the new leaf.
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := m.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if c.Leaf.Equal(ev1.leaf) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get still returns serial %v after renewal to %v", serialOf(c), ev1.leaf.SerialNumber)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if after := counter(t, "ambit_identity_certificates_issued_total", "renewal"); after < before+1 {
		t.Errorf("renewals counter went %v -> %v, want +1 or more", before, after)
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("CA calls = %d, want 2 (first fetch and one renewal)", n)
	}
}

func TestRenewalFailureKeepsCertificateAndBacksOff(t *testing.T) {
	const ttl = 4 * time.Second
	ca := identitytest.MustNewCA(t, td.Name(), ttl)
	f := newFetcher(ca)
	m := startManager(t, identity.Config{
		TrustDomain: td, Fetcher: f,
		RetryInitial: 40 * time.Millisecond, RetryMax: 320 * time.Millisecond,
	})
	id := wid("shop", "reviews")
	first, err := m.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	f.next(t, time.Second, okFor(id))
	f.fail.Store(true)
	before := counter(t, "ambit_identity_certificate_fetch_failures_total", "renewal")

	const failures = 6
	var at []time.Time
	for len(at) < failures {
		ev := f.next(t, ttl, func(ev event) bool { return ev.id == id })
		if ev.err == nil {
			t.Fatalf("renewal succeeded while the CA fails")
		}
		at = append(at, ev.at)
		// Meanwhile the still-valid certificate keeps being served, from
		// the cache (no extra CA call).
		c, err := m.Get(context.Background(), id)
		if err != nil || !c.Leaf.Equal(first.Leaf) {
			t.Fatalf("Get during failing renewals = %v, %v; want the still-valid certificate", c, err)
		}
	}
	// Equal jitter: the delay before retry k is at least half of
	// min(320ms, 40ms·2^k), so the 4th and 5th gaps are >= 160ms whatever
	// the scheduler does.
	for k := 3; k < failures-1; k++ {
		if gap := at[k+1].Sub(at[k]); gap < 160*time.Millisecond {
			t.Errorf("gap between failed renewals %d and %d = %v, want >= 160ms (backoff)", k, k+1, gap)
		}
	}
	if last := at[failures-1]; !last.Before(first.Leaf.NotAfter) {
		t.Fatalf("test too slow: failures reached expiry")
	}
	// The fetcher reports a failure before the manager counts it.
	testkit.Eventually(t, 2*time.Second, fmt.Sprintf("the renewal failures counter to grow by %d from %v", failures, before), func() bool {
		return counter(t, "ambit_identity_certificate_fetch_failures_total", "renewal") >= before+failures
	})

	f.fail.Store(false)
	ev := f.next(t, 2*time.Second, okFor(id))
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := m.Get(context.Background(), id)
		if err == nil && c.Leaf.Equal(ev.leaf) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the CA recovered, Get = %v, %v; want the renewed certificate", c, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestForgetStopsRenewals(t *testing.T) {
	ca := identitytest.MustNewCA(t, td.Name(), 2*time.Second)
	f := newFetcher(ca)
	m := startManager(t, identity.Config{TrustDomain: td, Fetcher: f})
	gone, kept := wid("shop", "gone"), wid("shop", "kept")
	for _, id := range []spiffeid.ID{gone, kept} {
		if _, err := m.Get(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	m.Forget(gone)
	if _, err := m.Current(gone); err == nil {
		t.Errorf("Current(%s) after Forget still has a certificate", gone)
	}
	if _, ok := metric(t, "ambit_identity_certificate_expiry_seconds", map[string]string{"identity": gone.String()}); ok {
		t.Errorf("expiry gauge still reports %s after Forget", gone)
	}
	f.next(t, time.Second, okFor(gone))
	f.next(t, time.Second, okFor(kept))
	// kept is renewed twice (about 2s); gone, due at the same time, never.
	deadline := time.After(10 * time.Second)
	for renewals := 0; renewals < 2; {
		select {
		case ev := <-f.events:
			if ev.id == gone {
				t.Fatalf("forgotten identity %s was fetched again at %v", gone, ev.at)
			}
			if ev.err == nil {
				renewals++
			}
		case <-deadline:
			t.Fatalf("kept identity renewed %d times in 10s, want 2", renewals)
		}
	}
	if got := m.Identities(); len(got) != 1 || got[0] != kept {
		t.Errorf("Identities() = %v, want [%s]", got, kept)
	}
	// A forgotten identity can come back: fetched afresh.
	c, err := m.Get(context.Background(), gone)
	if err != nil || c.Leaf.URIs[0].String() != gone.String() {
		t.Errorf("Get(%s) after Forget = %v, %v", gone, c, err)
	}
}

func TestInstallRenewsThroughFetcher(t *testing.T) {
	ca := identitytest.MustNewCA(t, td.Name(), 2*time.Second)
	f := newFetcher(ca)
	bundle := identity.NewBundle(td, nil)
	m := startManager(t, identity.Config{TrustDomain: td, Fetcher: f, Bundle: bundle})
	node, _ := identity.NodeID(td, "n1")
	joined := ca.MustIssue(t, node, 2*time.Second)
	changed := bundle.Changed()
	if err := m.Install(node, joined); err != nil {
		t.Fatal(err)
	}
	if c, err := m.Current(node); err != nil || c != joined {
		t.Fatalf("Current(node) = %v, %v; want the installed certificate", c, err)
	}
	ev := f.next(t, 3*time.Second, okFor(node))
	if ev.leaf.Equal(joined.Leaf) {
		t.Fatal("renewal returned the installed certificate")
	}
	// The CA's answer fills the bundle.
	select {
	case <-changed:
	case <-time.After(2 * time.Second):
		t.Fatal("bundle not updated after the CA answered")
	}
	if roots := bundle.Roots(); len(roots) != 1 || !roots[0].Equal(ca.Root) {
		t.Errorf("bundle roots after a CA answer = %d roots, want the CA's root", len(roots))
	}
	if err := m.Install(wid("a", "b"), nil); err == nil {
		t.Error("Install(nil) succeeded")
	}
}

func TestConfigValidation(t *testing.T) {
	ca := identitytest.MustNewCA(t, td.Name(), time.Hour)
	tests := []struct {
		name string
		cfg  identity.Config
		want string
	}{
		{"no trust domain", identity.Config{Fetcher: ca}, "TrustDomain"},
		{"no fetcher", identity.Config{TrustDomain: td}, "Fetcher"},
		{"renew fraction", identity.Config{TrustDomain: td, Fetcher: ca, RenewFraction: 1.5}, "RenewFraction"},
		{"jitter", identity.Config{TrustDomain: td, Fetcher: ca, RenewJitter: 0.7}, "RenewJitter"},
		{"retry max below initial", identity.Config{TrustDomain: td, Fetcher: ca, RetryInitial: time.Minute, RetryMax: time.Second}, "RetryMax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := identity.NewManager(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewManager error = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func TestRunTwice(t *testing.T) {
	ca := identitytest.MustNewCA(t, td.Name(), time.Hour)
	m, err := identity.NewManager(identity.Config{TrustDomain: td, Fetcher: ca})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("first Run with a cancelled context = %v, want nil", err)
	}
	if err := m.Run(ctx); err == nil {
		t.Error("second Run was accepted")
	}
}

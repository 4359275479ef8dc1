package identity_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/identity/identitytest"
)

func TestIDs(t *testing.T) {
	node, err := identity.NodeID(td, "worker-1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		got  spiffeid.ID
		want string
	}{
		{wid("shop", "reviews"), "spiffe://example.org/ns/shop/sa/reviews"},
		{node, "spiffe://example.org/ambit/node/worker-1"},
		{identity.ControlID(td), "spiffe://example.org/ambit/control"},
	}
	for _, tt := range tests {
		if tt.got.String() != tt.want {
			t.Errorf("got %s, want %s", tt.got, tt.want)
		}
	}
	for _, bad := range [][2]string{{"", "sa"}, {"ns", "a/b"}, {"ns", "Upper Case"}} {
		if _, err := identity.WorkloadID(td, bad[0], bad[1]); err == nil || !strings.Contains(err.Error(), "identity: workload identity") {
			t.Errorf("WorkloadID(%q, %q) error = %v, want a refusal", bad[0], bad[1], err)
		}
	}
	if _, err := identity.NodeID(td, "a/b"); err == nil {
		t.Error("NodeID with a slash succeeded")
	}
}

func TestBundle(t *testing.T) {
	a := identitytest.MustNewCA(t, td.Name(), time.Hour)
	b := identitytest.MustNewCA(t, td.Name(), time.Hour)
	bundle := identity.NewBundle(td, nil)
	if _, err := bundle.GetX509BundleForTrustDomain(td); err == nil {
		t.Error("an empty bundle answered")
	}
	changed := bundle.Changed()
	if err := bundle.SetRoots([]*x509.Certificate{a.Root, b.Root}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed not closed by SetRoots")
	}
	// Same roots again: no change notification.
	same := bundle.Changed()
	if err := bundle.SetRoots([]*x509.Certificate{a.Root, b.Root}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-same:
		t.Error("Changed closed for an identical root set")
	default:
	}
	leaf := a.MustIssue(t, wid("x", "y"), time.Hour)
	tests := []struct {
		name string
		set  func() error
		want string
	}{
		{"no roots", func() error { return bundle.SetRoots(nil) }, "no roots"},
		{"leaf as root", func() error { return bundle.SetRoots([]*x509.Certificate{leaf.Leaf}) }, "not a CA"},
		{"garbage PEM", func() error { _, err := bundle.SetRootsPEM(9, [][]byte{[]byte("nope")}); return err }, "no CERTIFICATE block"},
	}
	for _, tt := range tests {
		if err := tt.set(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error = %v, want %q", tt.name, err, tt.want)
		}
	}
	if n := len(bundle.Roots()); n != 2 {
		t.Errorf("refused updates changed the bundle: %d roots, want 2", n)
	}
	// Versioned updates never go back in time.
	if ok, err := bundle.SetRootsAt(5, []*x509.Certificate{b.Root}); !ok || err != nil {
		t.Fatalf("SetRootsAt(5) = %v, %v", ok, err)
	}
	if ok, err := bundle.SetRootsAt(4, []*x509.Certificate{a.Root, b.Root}); ok || err != nil {
		t.Errorf("SetRootsAt(4) after 5 = %v, %v; want ignored", ok, err)
	}
	if r := bundle.Roots(); len(r) != 1 || !r[0].Equal(b.Root) || bundle.Generation() != 5 {
		t.Errorf("after a stale update: %d roots, generation %d; want generation 5's single root", len(r), bundle.Generation())
	}
	if _, err := bundle.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("evil.org")); err == nil {
		t.Error("bundle answered for a foreign trust domain")
	}
}

package identity

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Bundle is the set of roots a proxy trusts for its trust domain. It is read
// on every handshake and replaced atomically (from xDS and from CA
// responses); during a root rotation it holds both the old and the new root,
// so leaves of either verify until the old root is dropped.
//
// Bundle implements x509bundle.Source and only answers for its own trust
// domain, which is what confines peers to the mesh's trust domain.
type Bundle struct {
	td    spiffeid.TrustDomain
	cur   atomic.Pointer[x509bundle.Bundle]
	notif atomic.Pointer[chan struct{}]

	mu  sync.Mutex // serialises writers
	gen uint64     // generation of the roots held (0: unversioned)
}

// NewBundle returns a bundle for td holding roots (possibly none yet).
func NewBundle(td spiffeid.TrustDomain, roots []*x509.Certificate) *Bundle {
	b := &Bundle{td: td}
	b.cur.Store(x509bundle.FromX509Authorities(td, roots))
	ch := make(chan struct{})
	b.notif.Store(&ch)
	return b
}

// TrustDomain is the trust domain the bundle answers for.
func (b *Bundle) TrustDomain() spiffeid.TrustDomain { return b.td }

// Roots returns the current roots (a copy).
func (b *Bundle) Roots() []*x509.Certificate { return b.cur.Load().X509Authorities() }

// SetRoots replaces the roots, whatever their generation. An empty set is
// refused: it would make every peer fail verification, which is never what
// a config update means.
func (b *Bundle) SetRoots(roots []*x509.Certificate) error {
	_, err := b.set(0, roots, false)
	return err
}

// SetRootsAt replaces the roots with those of generation gen (the CA's
// trust_bundle_generation, xDS TrustBundle.generation), unless the bundle
// already holds a later generation: a CA answer signed just before the old
// root was dropped must not bring it back after xDS delivered the
// one-root bundle. It reports whether the roots were applied.
func (b *Bundle) SetRootsAt(gen uint64, roots []*x509.Certificate) (bool, error) {
	return b.set(gen, roots, true)
}

// Generation is the generation of the roots held (0 if never versioned).
func (b *Bundle) Generation() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gen
}

func (b *Bundle) set(gen uint64, roots []*x509.Certificate, versioned bool) (bool, error) {
	if len(roots) == 0 {
		return false, fmt.Errorf("identity: trust bundle for %q: no roots given; want at least one CA certificate", b.td)
	}
	for i, r := range roots {
		if !r.IsCA {
			return false, fmt.Errorf("identity: trust bundle for %q: root %d (subject %q) is not a CA certificate", b.td, i, r.Subject)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if versioned {
		if gen < b.gen {
			return false, nil
		}
		b.gen = gen
	}
	next := x509bundle.FromX509Authorities(b.td, roots)
	if b.cur.Load().Equal(next) {
		return true, nil
	}
	b.cur.Store(next)
	ch := make(chan struct{})
	close(*b.notif.Swap(&ch))
	return true, nil
}

// SetRootsPEM is SetRootsAt for PEM blocks (as carried by xDS
// TrustBundle); each element may hold one or more CERTIFICATE blocks.
func (b *Bundle) SetRootsPEM(gen uint64, pems [][]byte) (bool, error) {
	roots, err := parseCertsPEM(pems)
	if err != nil {
		return false, fmt.Errorf("identity: trust bundle for %q: %w", b.td, err)
	}
	return b.SetRootsAt(gen, roots)
}

// Changed returns a channel closed at the next change of the roots.
func (b *Bundle) Changed() <-chan struct{} { return *b.notif.Load() }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (b *Bundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != b.td {
		return nil, fmt.Errorf("identity: no trust bundle for trust domain %q (this mesh trusts only %q)", td, b.td)
	}
	cur := b.cur.Load()
	if cur.Empty() {
		return nil, fmt.Errorf("identity: trust bundle for %q has no roots yet", td)
	}
	return cur, nil
}

// parseCertsPEM parses every CERTIFICATE block of every element.
func parseCertsPEM(pems [][]byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for i, p := range pems {
		n := 0
		for {
			var blk *pem.Block
			blk, p = pem.Decode(p)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("PEM element %d holds a %q block; want CERTIFICATE", i, blk.Type)
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM element %d: %w", i, err)
			}
			out = append(out, c)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("PEM element %d holds no CERTIFICATE block", i)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no certificates")
	}
	return out, nil
}

// Package ca is ambit's built-in SPIFFE certificate authority. It runs in
// the control plane, signs CSRs from node proxies and waypoints (keys are
// generated where the proxy runs; the CA only sees CSRs), keeps its root in
// the control plane's state directory so restarts keep the same trust, and
// rotates that root without breaking a single handshake.
//
// # Roots
//
// On first start Open generates a self-signed ECDSA P-256 root (10 years)
// in <state>/ca/ (key files 0600). With Options.PluginCertsDir the CA
// instead signs with user-supplied "plug-in" certificates laid out like
// Istio's: ca-cert.pem + ca-key.pem (the CA that signs; usually an
// intermediate issued by a company root), cert-chain.pem (its chain) and
// root-cert.pem (the root(s) the mesh trusts). Then the bundle is the
// company root and every issued chain carries the intermediates.
//
// # Root rotation
//
// Rotation of the built-in root is three explicit, persisted steps, so that
// at no moment does a proxy hold a certificate its peers cannot verify:
//
//  1. PrepareRotation generates the new root. The bundle becomes
//     {old, new} (its Generation grows; xDS pushes it to every proxy), and
//     the CA still signs with the old root.
//  2. ActivateRotation, once every proxy has the two-root bundle (check
//     `ambit status`): the CA signs with the new root; the bundle stays
//     {old, new}. Proxies pick up new-root leaves at their next renewal
//     (half life, 12 h by default) and the control plane's serving
//     certificate is re-issued at once.
//  3. FinishRotation, once every leaf signed by the old root has expired
//     or been renewed: the bundle becomes {new} and the old root's files are
//     deleted. It refuses to run before ActivatedAt + LeafTTL (when the
//     last old-root leaf expires) unless forced.
//
// AbortRotation undoes a PrepareRotation that was not activated. Rotation
// of plug-in certificates is done by the operator: replace the files (new
// root first added to root-cert.pem, then a new ca-cert) and restart.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/identity"
	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
)

// Defaults.
const (
	DefaultLeafTTL = 24 * time.Hour
	DefaultRootTTL = 10 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so a peer whose clock is a little
	// behind does not reject a certificate issued a moment ago.
	clockSkew = 5 * time.Minute
)

// Errors callers can test for with errors.Is; the service maps them to
// gRPC codes and metric reasons.
var (
	ErrInvalidCSR         = errors.New("invalid CSR")
	ErrIdentityMismatch   = errors.New("CSR identity does not match the requested identity")
	ErrForeignTrustDomain = errors.New("identity is not in the mesh's trust domain")
	ErrRotation           = errors.New("root rotation not possible in this state")
)

// Options configure a CA.
type Options struct {
	// StateDir is the control plane's state directory (required). The
	// built-in root and rotation state live in <StateDir>/ca/.
	StateDir string
	// TrustDomain of the mesh, e.g. "cluster.local" (required).
	TrustDomain string
	// LeafTTL is the validity of issued certificates and the cap on a
	// requested validity. Default 24h.
	LeafTTL time.Duration
	// RootTTL is the validity of generated roots. Default 10 years.
	RootTTL time.Duration
	// PluginCertsDir, when set, holds user-supplied CA material (see the
	// package comment); no root is generated.
	PluginCertsDir string
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Now is the CA's clock; time.Now when nil. Tests move it.
	Now func() time.Time
}

// authority is a CA certificate with its key.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// Bundle is the set of roots the mesh trusts.
type Bundle struct {
	TrustDomain spiffeid.TrustDomain
	// Generation grows whenever Roots change (persisted across restarts).
	Generation uint64
	// Roots, oldest first; two during a root rotation.
	Roots []*x509.Certificate
	// PEM holds one PEM block per root, in the order of Roots.
	PEM [][]byte

	x509 *x509bundle.Bundle
}

// X509Bundle is the bundle as a go-spiffe x509bundle (also an
// x509bundle.Source for x509svid.Verify).
func (b Bundle) X509Bundle() *x509bundle.Bundle { return b.x509 }

// Proto is the bundle as the xDS resource ambit.ca.v1.TrustBundle.
func (b Bundle) Proto() *cav1.TrustBundle {
	return &cav1.TrustBundle{TrustDomain: b.TrustDomain.Name(), RootsPem: b.PEM, Generation: b.Generation}
}

// Pool is a fresh CertPool of the roots.
func (b Bundle) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range b.Roots {
		p.AddCert(r)
	}
	return p
}

func newBundle(td spiffeid.TrustDomain, gen uint64, roots []*x509.Certificate) Bundle {
	b := Bundle{TrustDomain: td, Generation: gen, Roots: slices.Clone(roots), x509: x509bundle.FromX509Authorities(td, roots)}
	for _, r := range roots {
		b.PEM = append(b.PEM, encodeCert(r))
	}
	return b
}

func bundleDigest(roots []*x509.Certificate) string {
	h := sha256.New()
	for _, r := range roots {
		h.Write(r.Raw)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RotationPhase is where a root rotation stands.
type RotationPhase string

const (
	PhaseIdle      RotationPhase = "idle"      // one root, signing
	PhasePrepared  RotationPhase = "prepared"  // bundle {old, new}, signing with old
	PhaseActivated RotationPhase = "activated" // bundle {old, new}, signing with new
)

// RotationStatus describes the roots and the rotation phase.
type RotationStatus struct {
	Phase RotationPhase
	// Plugin is true when the CA signs with plug-in certificates (no
	// rotation through this API).
	Plugin bool
	// Signing is the certificate that signs leaves; Roots the bundle.
	Signing *x509.Certificate
	Roots   []*x509.Certificate
	// ActivatedAt and FinishableAt are set in PhaseActivated: the last
	// leaf signed by the old root expires at FinishableAt.
	ActivatedAt, FinishableAt time.Time
}

// snapshot is the CA's immutable signing state, swapped atomically so the
// signing path takes no lock.
type snapshot struct {
	signer *authority
	chain  []*x509.Certificate // after the leaf, before the root
	anchor *x509.Certificate   // the root the signer chains to
	bundle Bundle
	status RotationStatus
	// changed is closed when this snapshot is replaced.
	changed chan struct{}
}

// CA signs certificates for the mesh. Its methods are safe for concurrent
// use.
type CA struct {
	opts Options
	td   spiffeid.TrustDomain
	log  *slog.Logger

	mu    sync.Mutex // serialises state changes (rotation)
	state diskState
	snap  atomic.Pointer[snapshot]

	serving servingCache
}

// Open validates opts, then loads the CA's state from disk, generating and
// persisting a root on first start (or loading plug-in certificates).
func Open(opts Options) (*CA, error) {
	if opts.StateDir == "" {
		return nil, errors.New("ca: Options.StateDir is empty; want the control plane's state directory")
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w; want a DNS-like name such as cluster.local", opts.TrustDomain, err)
	}
	if opts.LeafTTL == 0 {
		opts.LeafTTL = DefaultLeafTTL
	}
	if opts.RootTTL == 0 {
		opts.RootTTL = DefaultRootTTL
	}
	if opts.LeafTTL < time.Minute || opts.RootTTL < opts.LeafTTL {
		return nil, fmt.Errorf("ca: leaf TTL %s / root TTL %s: want leaf TTL >= 1m and root TTL >= leaf TTL", opts.LeafTTL, opts.RootTTL)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &CA{opts: opts, td: td, log: opts.Logger}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := os.MkdirAll(c.dir(), 0o700); err != nil {
		return nil, fmt.Errorf("ca: state directory: %w", err)
	}
	st, err := c.loadState()
	if err != nil {
		return nil, err
	}
	if opts.PluginCertsDir != "" {
		m, err := loadPlugin(opts.PluginCertsDir, c.now())
		if err != nil {
			return nil, err
		}
		if err := c.commit(st, m.signer, m.chain, m.anchor, m.roots, RotationStatus{Phase: PhaseIdle, Plugin: true}); err != nil {
			return nil, err
		}
		c.log.Info("CA signing with plug-in certificates", "dir", opts.PluginCertsDir,
			"signer", m.signer.cert.Subject.String(), "roots", len(m.roots), "expires", m.signer.cert.NotAfter)
		return c, nil
	}
	if st.Signing == "" {
		st.NextSerial = 1
		name, a, err := c.newRoot(&st)
		if err != nil {
			return nil, err
		}
		st.Trusted, st.Signing = []string{name}, name
		c.log.Info("generated a new mesh root CA", "file", c.dir()+"/"+name+".pem", "expires", a.cert.NotAfter)
	}
	if err := c.apply(st); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *CA) now() time.Time { return c.opts.Now() }

// TrustDomain of the mesh.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// LeafTTL is the configured leaf validity.
func (c *CA) LeafTTL() time.Duration { return c.opts.LeafTTL }

// newRoot generates, persists and names a root (not yet in any state).
func (c *CA) newRoot(st *diskState) (string, *authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	n := st.NextSerial
	st.NextSerial++
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{"ambit"}, CommonName: "ambit mesh root " + strconv.Itoa(n)},
		URIs:                  []*url.URL{c.td.ID().URL()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(c.opts.RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return "", nil, fmt.Errorf("ca: self-sign root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", nil, fmt.Errorf("ca: parse new root: %w", err)
	}
	name := "root-" + strconv.Itoa(n)
	a := &authority{cert: cert, key: key}
	if err := c.writeRoot(name, a); err != nil {
		return "", nil, err
	}
	return name, a, nil
}

// apply loads the built-in roots named by st and makes st current.
func (c *CA) apply(st diskState) error {
	var (
		roots  []*x509.Certificate
		signer *authority
	)
	for _, name := range st.Trusted {
		a, err := c.readRoot(name)
		if err != nil {
			return err
		}
		roots = append(roots, a.cert)
		if name == st.Signing {
			signer = a
		}
	}
	if signer == nil {
		return fmt.Errorf("ca: %s/state.json: signing root %q is not among the trusted roots %v", c.dir(), st.Signing, st.Trusted)
	}
	rs := RotationStatus{Phase: PhaseIdle}
	if len(st.Trusted) > 1 {
		rs.Phase = PhasePrepared
		if st.Signing == st.Trusted[len(st.Trusted)-1] {
			rs.Phase = PhaseActivated
			rs.ActivatedAt = st.ActivatedAt
			rs.FinishableAt = st.ActivatedAt.Add(c.opts.LeafTTL + clockSkew)
		}
	}
	if left := signer.cert.NotAfter.Sub(c.now()); left < 365*24*time.Hour {
		c.log.Warn("the signing root expires soon; rotate it with `ambit ca rotate`", "expires", signer.cert.NotAfter)
	}
	return c.commit(st, signer, nil, signer.cert, roots, rs)
}

// commit persists st (bumping the bundle generation when the roots
// changed) and publishes a new snapshot.
func (c *CA) commit(st diskState, signer *authority, chain []*x509.Certificate, anchor *x509.Certificate, roots []*x509.Certificate, rs RotationStatus) error {
	if d := bundleDigest(roots); d != st.BundleDigest || st.Generation == 0 {
		st.BundleDigest = d
		st.Generation++
	}
	if err := c.saveState(st); err != nil {
		return err
	}
	c.state = st
	rs.Signing, rs.Roots = signer.cert, slices.Clone(roots)
	next := &snapshot{
		signer: signer, chain: chain, anchor: anchor,
		bundle:  newBundle(c.td, st.Generation, roots),
		status:  rs,
		changed: make(chan struct{}),
	}
	if prev := c.snap.Swap(next); prev != nil {
		close(prev.changed)
	}
	bundleGeneration.Set(float64(st.Generation))
	signerExpiry.Set(float64(signer.cert.NotAfter.Unix()))
	return nil
}

// Bundle is the current trust bundle.
func (c *CA) Bundle() Bundle { return c.snap.Load().bundle }

// WatchBundle returns the current bundle and a channel closed when the CA's
// state next changes (the bundle, or the signer), so the integrator can
// push the new bundle over xDS.
func (c *CA) WatchBundle() (Bundle, <-chan struct{}) {
	s := c.snap.Load()
	return s.bundle, s.changed
}

// Rotation reports the rotation phase and the roots.
func (c *CA) Rotation() RotationStatus { return c.snap.Load().status }

// RootPin is the Pin of the root the current signer chains to. The control
// plane's serving chain ends with that root, so a joining proxy that has
// only the join string can check the pin during the TLS handshake, before
// it sends its token.
func (c *CA) RootPin() string { return identity.SPKIPin(c.snap.Load().anchor) }

func (c *CA) requireBuiltin(op string) error {
	if c.opts.PluginCertsDir != "" {
		return fmt.Errorf("ca: %s: %w: the CA signs with plug-in certificates from %s; rotate those by replacing the files and restarting", op, ErrRotation, c.opts.PluginCertsDir)
	}
	return nil
}

// PrepareRotation generates a new root and adds it to the bundle; the old
// root keeps signing. See the package comment for the whole flow.
func (c *CA) PrepareRotation() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.requireBuiltin("prepare rotation"); err != nil {
		return err
	}
	st := c.state
	if len(st.Trusted) != 1 {
		return fmt.Errorf("ca: prepare rotation: %w: a rotation is already in phase %q; activate/finish or abort it first", ErrRotation, c.Rotation().Phase)
	}
	st.Trusted = slices.Clone(st.Trusted)
	name, _, err := c.newRoot(&st)
	if err != nil {
		return err
	}
	st.Trusted = append(st.Trusted, name)
	if err := c.apply(st); err != nil {
		return err
	}
	c.log.Info("root rotation prepared: bundle now holds the old and the new root; activate once every proxy has it", "newRoot", name, "generation", st.Generation)
	return nil
}

// ActivateRotation makes the new root sign.
func (c *CA) ActivateRotation() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.requireBuiltin("activate rotation"); err != nil {
		return err
	}
	if p := c.Rotation().Phase; p != PhasePrepared {
		return fmt.Errorf("ca: activate rotation: %w: phase is %q, want %q (run prepare first)", ErrRotation, p, PhasePrepared)
	}
	st := c.state
	st.Signing = st.Trusted[len(st.Trusted)-1]
	st.ActivatedAt = c.now()
	if err := c.apply(st); err != nil {
		return err
	}
	c.log.Info("root rotation activated: new certificates are signed by the new root", "root", st.Signing,
		"finishableAt", c.Rotation().FinishableAt)
	return nil
}

// FinishRotation drops the old root from the bundle and deletes its files.
// Unless force is set it refuses while leaves signed by the old root may
// still be valid.
func (c *CA) FinishRotation(force bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.requireBuiltin("finish rotation"); err != nil {
		return err
	}
	rs := c.Rotation()
	if rs.Phase != PhaseActivated {
		return fmt.Errorf("ca: finish rotation: %w: phase is %q, want %q (run activate first)", ErrRotation, rs.Phase, PhaseActivated)
	}
	if now := c.now(); !force && now.Before(rs.FinishableAt) {
		return fmt.Errorf("ca: finish rotation: %w: certificates signed by the old root may be valid until %s (activated %s + leaf TTL %s); wait, or force it if every proxy has renewed",
			ErrRotation, rs.FinishableAt.UTC().Format(time.RFC3339), rs.ActivatedAt.UTC().Format(time.RFC3339), c.opts.LeafTTL)
	}
	st := c.state
	old := st.Trusted[:len(st.Trusted)-1]
	st.Trusted = []string{st.Signing}
	st.ActivatedAt = time.Time{}
	if err := c.apply(st); err != nil {
		return err
	}
	for _, name := range old {
		c.removeRoot(name)
	}
	c.log.Info("root rotation finished: the old root is no longer trusted", "root", st.Signing, "removed", old)
	return nil
}

// AbortRotation drops a prepared (not activated) new root.
func (c *CA) AbortRotation() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.requireBuiltin("abort rotation"); err != nil {
		return err
	}
	if p := c.Rotation().Phase; p != PhasePrepared {
		return fmt.Errorf("ca: abort rotation: %w: phase is %q; only a %q rotation can be aborted", ErrRotation, p, PhasePrepared)
	}
	st := c.state
	dropped := st.Trusted[len(st.Trusted)-1]
	st.Trusted = []string{st.Signing}
	if err := c.apply(st); err != nil {
		return err
	}
	c.removeRoot(dropped)
	c.log.Info("root rotation aborted", "removed", dropped)
	return nil
}

// Issued is a signed certificate.
type Issued struct {
	// Chain is the leaf, then the intermediates (never the root).
	Chain []*x509.Certificate
	// Bundle is the trust bundle at signing time.
	Bundle Bundle
}

// ChainPEM is Chain with one PEM block per certificate.
func (i *Issued) ChainPEM() [][]byte {
	out := make([][]byte, len(i.Chain))
	for j, c := range i.Chain {
		out[j] = encodeCert(c)
	}
	return out
}

// ParseCSR decodes a PEM (or DER) PKCS#10 CSR and checks its signature and
// that its only URI SAN is id.
func ParseCSR(csr []byte, id spiffeid.ID) (*x509.CertificateRequest, error) {
	der := csr
	if blk, _ := pem.Decode(csr); blk != nil {
		if blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("ca: CSR: %w: PEM block is %q, want \"CERTIFICATE REQUEST\"", ErrInvalidCSR, blk.Type)
		}
		der = blk.Bytes
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("ca: CSR: %w: %w; want a PEM-encoded PKCS#10 certificate request", ErrInvalidCSR, err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ca: CSR: %w: signature does not verify (%w); the CSR must be signed by the key it certifies", ErrInvalidCSR, err)
	}
	switch k := req.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("ca: CSR: %w: ECDSA curve %s, want P-256 or P-384", ErrInvalidCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("ca: CSR: %w: RSA key of %d bits, want at least 2048 (ECDSA P-256 preferred)", ErrInvalidCSR, k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("ca: CSR: %w: key type %T, want ECDSA P-256", ErrInvalidCSR, req.PublicKey)
	}
	if len(req.URIs) != 1 || req.URIs[0].String() != id.String() {
		got := make([]string, len(req.URIs))
		for i, u := range req.URIs {
			got[i] = u.String()
		}
		return nil, fmt.Errorf("ca: CSR: %w: URI SANs %q, want exactly [%q]", ErrIdentityMismatch, got, id.String())
	}
	return req, nil
}

// SignCSR signs csr (PEM or DER PKCS#10) for id, valid for ttl (capped at
// the leaf TTL; 0 means the leaf TTL). It checks the CSR (ParseCSR) and
// the trust domain, not whether the caller may have id: that is the
// service's job.
func (c *CA) SignCSR(csr []byte, id spiffeid.ID, ttl time.Duration) (*Issued, error) {
	start := time.Now()
	defer func() { signSeconds.Observe(time.Since(start).Seconds()) }()
	if !id.MemberOf(c.td) {
		return nil, fmt.Errorf("ca: identity %q: %w %q", id, ErrForeignTrustDomain, c.td)
	}
	req, err := ParseCSR(csr, id)
	if err != nil {
		return nil, err
	}
	return c.issue(req.PublicKey, id, ttl, nil)
}

// issue signs a leaf for pub. extra adds SANs (the serving certificate).
func (c *CA) issue(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration, extra func(*x509.Certificate)) (*Issued, error) {
	if ttl <= 0 || ttl > c.opts.LeafTTL {
		ttl = c.opts.LeafTTL
	}
	s := c.snap.Load()
	now := c.now()
	notBefore, notAfter := now.Add(-clockSkew), now.Add(ttl)
	// A leaf never outlives (or predates) its issuer: verifiers reject it.
	if nb := s.signer.cert.NotBefore; notBefore.Before(nb) {
		notBefore = nb
	}
	if na := s.signer.cert.NotAfter; notAfter.After(na) {
		notAfter = na
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment // TLS 1.2 RSA key exchange
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{"ambit"}},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	if extra != nil {
		extra(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.signer.cert, pub, s.signer.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse certificate for %s: %w", id, err)
	}
	return &Issued{Chain: append([]*x509.Certificate{leaf}, s.chain...), Bundle: s.bundle}, nil
}

// randomSerial is a random positive 128-bit serial number.
func randomSerial() *big.Int {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[0] &= 0x7f           // keep it positive in DER
	if b[0] == 0 {
		b[0] = 1 // and 128 bits long, never zero
	}
	return new(big.Int).SetBytes(b[:])
}

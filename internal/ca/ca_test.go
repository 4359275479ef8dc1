package ca

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/identity"
)

func TestRestartKeepsRoot(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	first := openCA(t, dir, clk)
	second := openCA(t, dir, clk)
	if !first.Bundle().Roots[0].Equal(second.Bundle().Roots[0]) || len(second.Bundle().Roots) != 1 {
		t.Fatal("restart generated a different root")
	}
	if first.RootPin() != second.RootPin() {
		t.Errorf("pin changed across restart: %s -> %s", first.RootPin(), second.RootPin())
	}
	if g1, g2 := first.Bundle().Generation, second.Bundle().Generation; g1 != g2 {
		t.Errorf("bundle generation %d -> %d across a restart with the same roots", g1, g2)
	}
	bp := second.Bundle().Proto()
	if bp.TrustDomain != testTD || bp.Generation != second.Bundle().Generation || len(bp.RootsPem) != 1 ||
		!bytes.Equal(bp.RootsPem[0], encodeCert(second.Bundle().Roots[0])) {
		t.Errorf("Bundle().Proto() = %v, want the trust domain, generation and the root's PEM", bp)
	}
	// A leaf issued before the restart verifies against the bundle after it.
	csr, _ := newCSR(t, idReviews)
	iss, err := first.SignCSR(csr, mustID(t, idReviews), 0)
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, iss.Chain, second.Bundle().Roots, mustID(t, idReviews))

	fi, err := os.Stat(filepath.Join(dir, "ca", "root-1.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("root key mode %v, want 0600", fi.Mode().Perm())
	}
	root := first.Bundle().Roots[0]
	if !root.IsCA || root.NotAfter.Sub(root.NotBefore) < DefaultRootTTL {
		t.Errorf("root IsCA %v validity %s, want a CA valid for 10 years", root.IsCA, root.NotAfter.Sub(root.NotBefore))
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no state dir", Options{TrustDomain: testTD}, "StateDir"},
		{"bad trust domain", Options{StateDir: t.TempDir(), TrustDomain: "Not A Domain"}, "trust domain"},
		{"leaf TTL too short", Options{StateDir: t.TempDir(), TrustDomain: testTD, LeafTTL: time.Second}, "leaf TTL"},
		{"missing plug-in files", Options{StateDir: t.TempDir(), TrustDomain: testTD, PluginCertsDir: t.TempDir()}, PluginCACert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestSignCSRChecks(t *testing.T) {
	c := openCA(t, t.TempDir(), newClock())
	good, _ := newCSR(t, idReviews)
	tests := []struct {
		name string
		csr  []byte
		id   string
		want error
	}{
		{"valid", good, idReviews, nil},
		{"DER accepted too", pemBody(t, good), idReviews, nil},
		{"wrong PEM type", bytes.Replace(good, []byte("CERTIFICATE REQUEST"), []byte("CERTIFICATE"), 2), idReviews, ErrInvalidCSR},
		{"SAN mismatch", good, idRatings, ErrIdentityMismatch},
		{"foreign trust domain", good, "spiffe://other.example/ns/shop/sa/reviews", ErrForeignTrustDomain},
		{"empty", nil, idReviews, ErrInvalidCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := c.SignCSR(tt.csr, mustID(t, tt.id), 0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("SignCSR: %v, want %v", err, tt.want)
			}
			if err == nil {
				checkLeaf(t, iss.Chain, c.Bundle().Roots, mustID(t, tt.id))
			} else if iss != nil {
				t.Error("a certificate came back with an error")
			}
		})
	}
}

func pemBody(t *testing.T, p []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(p)
	if blk == nil {
		t.Fatal("not PEM")
	}
	return blk.Bytes
}

func TestPluginCerts(t *testing.T) {
	company := newPKI(t, "Example Corp Root", nil, nil)
	inter := newPKI(t, "ambit intermediate", company, nil)
	dir := pluginDir(t, company, inter)
	clk := newClock()
	c := openCA(t, t.TempDir(), clk, func(o *Options) { o.PluginCertsDir = dir })

	b := c.Bundle()
	if len(b.Roots) != 1 || !b.Roots[0].Equal(company.cert) {
		t.Fatalf("bundle %v, want the company root only", subjects(b.Roots))
	}
	csr, _ := newCSR(t, idReviews)
	iss, err := c.SignCSR(csr, mustID(t, idReviews), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(iss.Chain) != 2 || !iss.Chain[1].Equal(inter.cert) {
		t.Errorf("chain %v, want the leaf then the intermediate", subjects(iss.Chain))
	}
	checkLeaf(t, iss.Chain, b.Roots, mustID(t, idReviews))
	if c.RootPin() != identity.SPKIPin(company.cert) {
		t.Errorf("RootPin %s, want the company root's %s", c.RootPin(), identity.SPKIPin(company.cert))
	}
	if err := c.PrepareRotation(); !errors.Is(err, ErrRotation) {
		t.Errorf("PrepareRotation with plug-in certs: %v, want ErrRotation", err)
	}

	// A second mesh under the same company root, other trust domain: its
	// certificates chain to our bundle but are refused.
	other := newPKI(t, "other mesh intermediate", company, nil)
	oc := openCA(t, t.TempDir(), clk, func(o *Options) { o.PluginCertsDir = pluginDir(t, company, other); o.TrustDomain = "other.example" })
	ocsr, _ := newCSR(t, "spiffe://other.example/ambit/node/node-a")
	oiss, err := oc.SignCSR(ocsr, mustID(t, "spiffe://other.example/ambit/node/node-a"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.VerifyPeer(oiss.Chain); !errors.Is(err, ErrForeignTrustDomain) {
		t.Errorf("VerifyPeer(other trust domain): %v, want ErrForeignTrustDomain", err)
	}
	// The same company root with our trust domain but another intermediate
	// is trusted: that is what sharing a root means.
	if _, err := c.VerifyPeer(iss.Chain); err != nil {
		t.Errorf("VerifyPeer(own leaf): %v", err)
	}

	// Only ca-cert.pem and ca-key.pem, self-signed: the user's own root.
	rootOnly := t.TempDir()
	writePEM(t, filepath.Join(rootOnly, PluginCACert), company.cert)
	writePEM(t, filepath.Join(rootOnly, PluginCAKey), company.key)
	rc := openCA(t, t.TempDir(), clk, func(o *Options) { o.PluginCertsDir = rootOnly })
	riss, err := rc.SignCSR(csr, mustID(t, idReviews), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(riss.Chain) != 1 {
		t.Errorf("chain under a self-signed plug-in root has %d certificates, want the leaf only", len(riss.Chain))
	}
	checkLeaf(t, riss.Chain, rc.Bundle().Roots, mustID(t, idReviews))
}

func subjects(cs []*x509.Certificate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Subject.String())
	}
	return out
}

func TestPluginCertsInvalid(t *testing.T) {
	company := newPKI(t, "Example Corp Root", nil, nil)
	inter := newPKI(t, "ambit intermediate", company, nil)
	stranger := newPKI(t, "Stranger Root", nil, nil)
	notCA := newPKI(t, "not a CA", company, func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature })
	expired := newPKI(t, "expired", company, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Minute) })
	noSign := newPKI(t, "no certSign", company, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })

	tests := []struct {
		name  string
		files map[string][]any
		want  []string // substrings: the file and the problem
	}{
		{"key does not match", map[string][]any{PluginCACert: {inter.cert}, PluginCAKey: {company.key}, PluginRootCert: {company.cert}},
			[]string{PluginCAKey, "does not hold the private key"}},
		{"not a CA", map[string][]any{PluginCACert: {notCA.cert}, PluginCAKey: {notCA.key}, PluginRootCert: {company.cert}},
			[]string{PluginCACert, "not a CA"}},
		{"expired", map[string][]any{PluginCACert: {expired.cert}, PluginCAKey: {expired.key}, PluginRootCert: {company.cert}},
			[]string{PluginCACert, "expired"}},
		{"may not sign", map[string][]any{PluginCACert: {noSign.cert}, PluginCAKey: {noSign.key}, PluginRootCert: {company.cert}},
			[]string{PluginCACert, "keyCertSign"}},
		{"wrong root", map[string][]any{PluginCACert: {inter.cert}, PluginCAKey: {inter.key}, PluginRootCert: {stranger.cert}},
			[]string{PluginCACert, "does not chain"}},
		{"intermediate without a root", map[string][]any{PluginCACert: {inter.cert}, PluginCAKey: {inter.key}},
			[]string{PluginRootCert, "missing"}},
		{"garbage certificate", map[string][]any{PluginCACert: {[]byte("hello")}, PluginCAKey: {inter.key}},
			[]string{PluginCACert, "no PEM"}},
		{"garbage key", map[string][]any{PluginCACert: {inter.cert}, PluginCAKey: {[]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}},
			[]string{PluginCAKey}},
		{"missing key", map[string][]any{PluginCACert: {inter.cert}},
			[]string{PluginCAKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, blocks := range tt.files {
				writePEM(t, filepath.Join(dir, name), blocks...)
			}
			_, err := Open(Options{StateDir: t.TempDir(), TrustDomain: testTD, PluginCertsDir: dir, Logger: quietLogger()})
			if err == nil {
				t.Fatal("Open accepted bad plug-in material")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestRootRotation walks prepare -> activate -> finish: both roots are in
// the bundle while leaves from either exist, a TLS handshake between an
// old-root leaf and a new-root leaf succeeds mid-rotation, and restarts
// keep the phase.
func TestRootRotation(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	c := openCA(t, dir, clk)
	oldRoot := c.Bundle().Roots[0]
	gen0 := c.Bundle().Generation
	sign := func(c *CA, id string) *tls.Certificate {
		t.Helper()
		csr, key := newCSR(t, id)
		iss, err := c.SignCSR(csr, mustID(t, id), 0)
		if err != nil {
			t.Fatal(err)
		}
		return tlsCert(iss.Chain, key)
	}
	oldLeaf := sign(c, idReviews)

	if err := c.ActivateRotation(); !errors.Is(err, ErrRotation) {
		t.Errorf("activate before prepare: %v, want ErrRotation", err)
	}
	_, changed := c.WatchBundle()
	if err := c.PrepareRotation(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("WatchBundle channel not closed by PrepareRotation")
	}
	if err := c.PrepareRotation(); !errors.Is(err, ErrRotation) {
		t.Errorf("second prepare: %v, want ErrRotation", err)
	}
	b := c.Bundle()
	if len(b.Roots) != 2 || !b.Roots[0].Equal(oldRoot) || b.Generation != gen0+1 {
		t.Fatalf("prepared bundle %v gen %d, want old+new, gen %d", subjects(b.Roots), b.Generation, gen0+1)
	}
	newRoot := b.Roots[1]
	if r := c.Rotation(); r.Phase != PhasePrepared || !r.Signing.Equal(oldRoot) {
		t.Errorf("prepared: phase %s signing %s, want prepared, old root", r.Phase, r.Signing.Subject)
	}
	if got := sign(c, idReviews).Leaf; got.CheckSignatureFrom(oldRoot) != nil {
		t.Error("prepared: leaf not signed by the old root")
	}
	// Restart mid-rotation keeps the phase and the bundle.
	c = openCA(t, dir, clk)
	if r := c.Rotation(); r.Phase != PhasePrepared || len(r.Roots) != 2 || c.Bundle().Generation != gen0+1 {
		t.Fatalf("after restart: phase %s roots %d gen %d", r.Phase, len(r.Roots), c.Bundle().Generation)
	}

	if err := c.ActivateRotation(); err != nil {
		t.Fatal(err)
	}
	newLeaf := sign(c, idRatings)
	if newLeaf.Leaf.CheckSignatureFrom(newRoot) != nil {
		t.Fatal("activated: leaf not signed by the new root")
	}
	if c.Bundle().Generation != gen0+1 {
		t.Errorf("activate changed the bundle generation to %d; the roots did not change", c.Bundle().Generation)
	}
	serving, err := c.ServerTLSConfig(nil, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if sc, _ := serving.GetCertificate(nil); sc.Leaf.CheckSignatureFrom(newRoot) != nil {
		t.Error("activated: serving certificate not signed by the new root")
	}
	checkLeaf(t, []*x509.Certificate{oldLeaf.Leaf}, c.Bundle().Roots, mustID(t, idReviews))
	checkLeaf(t, []*x509.Certificate{newLeaf.Leaf}, c.Bundle().Roots, mustID(t, idRatings))
	handshake(t, c.Bundle().Pool(), oldLeaf, newLeaf)
	handshake(t, c.Bundle().Pool(), newLeaf, oldLeaf)

	// Finish refuses while old-root leaves may be valid, unless forced.
	if err := c.FinishRotation(false); !errors.Is(err, ErrRotation) {
		t.Fatalf("early finish: %v, want ErrRotation", err)
	}
	clk.Advance(DefaultLeafTTL + clockSkew)
	c = openCA(t, dir, clk) // the activation time survives restarts
	if err := c.FinishRotation(false); err != nil {
		t.Fatal(err)
	}
	b = c.Bundle()
	if len(b.Roots) != 1 || !b.Roots[0].Equal(newRoot) || b.Generation != gen0+2 {
		t.Fatalf("finished bundle %v gen %d, want the new root, gen %d", subjects(b.Roots), b.Generation, gen0+2)
	}
	if _, err := newLeaf.Leaf.Verify(x509.VerifyOptions{Roots: b.Pool(), CurrentTime: newLeaf.Leaf.NotBefore.Add(time.Hour)}); err != nil {
		t.Errorf("new-root leaf after finish: %v", err)
	}
	if _, err := oldLeaf.Leaf.Verify(x509.VerifyOptions{Roots: b.Pool(), CurrentTime: oldLeaf.Leaf.NotBefore.Add(time.Hour)}); err == nil {
		t.Error("old-root leaf still verifies after finish")
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", "root-1.key")); !os.IsNotExist(err) {
		t.Errorf("old root key still on disk: %v", err)
	}
	if r := c.Rotation(); r.Phase != PhaseIdle {
		t.Errorf("phase %s after finish, want idle", r.Phase)
	}
}

func TestAbortRotation(t *testing.T) {
	dir := t.TempDir()
	c := openCA(t, dir, newClock())
	root := c.Bundle().Roots[0]
	if err := c.PrepareRotation(); err != nil {
		t.Fatal(err)
	}
	if err := c.AbortRotation(); err != nil {
		t.Fatal(err)
	}
	if b := c.Bundle(); len(b.Roots) != 1 || !b.Roots[0].Equal(root) {
		t.Fatalf("after abort bundle %v, want the original root", subjects(b.Roots))
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", "root-2.key")); !os.IsNotExist(err) {
		t.Errorf("aborted root's key still on disk: %v", err)
	}
	if err := c.FinishRotation(true); !errors.Is(err, ErrRotation) {
		t.Errorf("finish without a rotation: %v, want ErrRotation", err)
	}
}

// handshake runs mTLS between a server holding srv and a client holding
// cli, both trusting pool.
func handshake(t *testing.T, pool *x509.CertPool, srv, cli *tls.Certificate) {
	t.Helper()
	a, b := net.Pipe()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{*srv}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS13})
		err := s.Handshake()
		if err == nil {
			_, err = io.Copy(io.Discard, s)
		}
		s.Close()
		errc <- err
	}()
	cl := tls.Client(b, &tls.Config{Certificates: []tls.Certificate{*cli}, RootCAs: pool, MinVersion: tls.VersionTLS13,
		InsecureSkipVerify: true, // URI-SAN peers have no host name; verify the chain ourselves
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = leaf.Verify(x509.VerifyOptions{Roots: pool})
			return err
		}})
	if err := cl.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	cl.Close()
	if err := <-errc; err != nil {
		t.Fatalf("server: %v", err)
	}
}

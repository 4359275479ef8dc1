package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/identity/identitytest"
)

func static(c *tls.Certificate) identity.Source {
	return identity.SourceFunc(func(context.Context, spiffeid.ID) (*tls.Certificate, error) { return c, nil })
}

func mustServer(t *testing.T, src identity.Source, b *identity.Bundle, opts identity.ServerOptions) *tls.Config {
	t.Helper()
	cfg, err := identity.ServerConfig(src, b, opts)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustClient(t *testing.T, src identity.Source, b *identity.Bundle, local spiffeid.ID, expected []spiffeid.ID, alpn ...string) *tls.Config {
	t.Helper()
	cfg, err := identity.ClientConfig(src, b, local, expected, alpn...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestHandshakes(t *testing.T) {
	ca := identitytest.MustNewCA(t, td.Name(), time.Hour)
	foreignCA := identitytest.MustNewCA(t, td.Name(), time.Hour) // same trust domain name, other key
	evil := identitytest.MustNewCA(t, "evil.org", time.Hour)
	bundle := identity.NewBundle(td, []*x509.Certificate{ca.Root})

	serverID, clientID := wid("shop", "reviews"), wid("shop", "frontend")
	good := ca.MustIssue(t, serverID, time.Hour)
	client := ca.MustIssue(t, clientID, time.Hour)
	now := time.Now()
	expired, err := ca.Issue(clientID, now.Add(-2*time.Hour), now.Add(-time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	expiredServer, err := ca.Issue(serverID, now.Add(-2*time.Hour), now.Add(-time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	foreign := foreignCA.MustIssue(t, clientID, time.Hour)
	foreignServer := foreignCA.MustIssue(t, serverID, time.Hour)
	evilID := spiffeid.RequireFromString("spiffe://evil.org/ns/shop/sa/frontend")
	evilCert := evil.MustIssue(t, evilID, time.Hour)
	// A bundle that also trusts evil.org's root still must not admit
	// identities of evil.org: the bundle answers only for its own domain.
	lenient := identity.NewBundle(td, []*x509.Certificate{ca.Root, evil.Root})

	tests := []struct {
		name       string
		serverCert *tls.Certificate
		serverB    *identity.Bundle
		authorize  func(spiffeid.ID) error
		client     func() *tls.Config
		wantErr    string // substring of the client- or server-side error; "" = success
	}{
		{
			name: "mutual TLS with expected identity", serverCert: good, serverB: bundle,
			client: func() *tls.Config {
				return mustClient(t, static(client), bundle, clientID, []spiffeid.ID{serverID}, "h2")
			},
		},
		{
			name: "server not the expected identity", serverCert: good, serverB: bundle,
			client: func() *tls.Config {
				return mustClient(t, static(client), bundle, clientID, []spiffeid.ID{wid("shop", "ratings"), wid("db", "pg")})
			},
			wantErr: "want one of",
		},
		{
			name: "client from a foreign CA", serverCert: good, serverB: bundle,
			client:  func() *tls.Config { return mustClient(t, static(foreign), bundle, clientID, []spiffeid.ID{serverID}) },
			wantErr: "client certificate refused",
		},
		{
			name: "server from a foreign CA", serverCert: foreignServer, serverB: bundle,
			client:  func() *tls.Config { return mustClient(t, static(client), bundle, clientID, []spiffeid.ID{serverID}) },
			wantErr: "server certificate refused",
		},
		{
			name: "client from a foreign trust domain", serverCert: good, serverB: lenient,
			client:  func() *tls.Config { return mustClient(t, static(evilCert), bundle, evilID, []spiffeid.ID{serverID}) },
			wantErr: "no trust bundle for trust domain",
		},
		{
			name: "expired client certificate", serverCert: good, serverB: bundle,
			client:  func() *tls.Config { return mustClient(t, static(expired), bundle, clientID, []spiffeid.ID{serverID}) },
			wantErr: "expired",
		},
		{
			name: "expired server certificate", serverCert: expiredServer, serverB: bundle,
			client:  func() *tls.Config { return mustClient(t, static(client), bundle, clientID, []spiffeid.ID{serverID}) },
			wantErr: "expired",
		},
		{
			name: "no client certificate", serverCert: good, serverB: bundle,
			client: func() *tls.Config {
				return mustClient(t, identity.SourceFunc(func(context.Context, spiffeid.ID) (*tls.Certificate, error) {
					return &tls.Certificate{}, nil // crypto/tls sends an empty Certificate message
				}), bundle, clientID, []spiffeid.ID{serverID})
			},
			wantErr: "certificate",
		},
		{
			name: "TLS 1.2 client", serverCert: good, serverB: bundle,
			client: func() *tls.Config {
				c := mustClient(t, static(client), bundle, clientID, []spiffeid.ID{serverID})
				c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
				return c
			},
			wantErr: "protocol version",
		},
		{
			name: "peer refused by Authorize", serverCert: good, serverB: bundle,
			authorize: func(id spiffeid.ID) error { return errors.New("only nodes may connect") },
			client:    func() *tls.Config { return mustClient(t, static(client), bundle, clientID, []spiffeid.ID{serverID}) },
			wantErr:   "only nodes may connect",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTLSServer(t, mustServer(t, static(tt.serverCert), tt.serverB, identity.ServerOptions{
				Identity: identity.FixedIdentity(serverID), NextProtos: []string{"h2"}, Authorize: tt.authorize,
			}))
			c, err := tls.Dial("tcp", srv.addr, tt.client())
			if err == nil {
				defer c.Close()
				_, err = c.Write([]byte{1})
				if err == nil {
					var b [1]byte
					_, err = c.Read(b[:])
				}
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("exchange failed: %v", err)
				}
				cs := c.ConnectionState()
				if cs.NegotiatedProtocol != "h2" || cs.Version != tls.VersionTLS13 {
					t.Errorf("negotiated %q over %x, want h2 over TLS 1.3", cs.NegotiatedProtocol, cs.Version)
				}
				if peer, err := identity.PeerID(cs); err != nil || peer != serverID {
					t.Errorf("client sees server %v (%v), want %s", peer, err, serverID)
				}
				srv.mu.Lock()
				seen := srv.peers[clientID.String()]
				srv.mu.Unlock()
				if seen != 1 {
					t.Errorf("server saw client %s %d times, want 1", clientID, seen)
				}
				return
			}
			if err == nil {
				t.Fatalf("exchange succeeded, want a refusal (%s)", tt.wantErr)
			}
			// The refusal reason is in whichever side detected it.
			if c != nil {
				c.Close()
			}
			deadline := time.Now().Add(5 * time.Second)
			for srv.fails.Load()+srv.ok.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			msgs := err.Error()
			if se := srv.err(); se != nil {
				msgs += " | server: " + se.Error()
			}
			if !strings.Contains(msgs, tt.wantErr) {
				t.Errorf("errors %q do not mention %q", msgs, tt.wantErr)
			}
			srv.mu.Lock()
			n := len(srv.peers)
			srv.mu.Unlock()
			if n != 0 {
				t.Errorf("server accepted a peer: %v", srv.peers)
			}
		})
	}
}

func TestClientConfigNeedsExpectedIdentities(t *testing.T) {
	ca := identitytest.MustNewCA(t, td.Name(), time.Hour)
	b := identity.NewBundle(td, []*x509.Certificate{ca.Root})
	if _, err := identity.ClientConfig(static(ca.MustIssue(t, wid("a", "b"), time.Hour)), b, wid("a", "b"), nil); err == nil {
		t.Error("ClientConfig without expected identities succeeded")
	}
}

// TestLeafRotationUnderLoad renews the server's and the client's leaves
// several times while clients handshake continuously and long-lived
// connections keep exchanging data: not one exchange may fail.
func TestLeafRotationUnderLoad(t *testing.T) {
	const ttl = 3 * time.Second
	ca := identitytest.MustNewCA(t, td.Name(), ttl)
	bundle := identity.NewBundle(td, []*x509.Certificate{ca.Root})
	fs, fc := newFetcher(ca), newFetcher(ca)
	serverM := startManager(t, identity.Config{TrustDomain: td, Fetcher: fs, Bundle: bundle})
	clientM := startManager(t, identity.Config{TrustDomain: td, Fetcher: fc, Bundle: bundle})
	serverID, clientID := wid("shop", "reviews"), wid("shop", "frontend")

	srv := startTLSServer(t, mustServer(t, serverM, bundle, identity.ServerOptions{Identity: identity.FixedIdentity(serverID), NextProtos: []string{"h2"}}))
	cfg := mustClient(t, clientM, bundle, clientID, []spiffeid.ID{serverID}, "h2")
	stop := make(chan struct{})
	l := runLoad(t, srv.addr, cfg, 8, 4, stop)

	const renewals = 3
	f := func(fe *fetcher, id spiffeid.ID) {
		fe.next(t, 5*time.Second, okFor(id)) // first fetch, by the first handshake
		for range renewals {
			fe.next(t, 2*ttl, okFor(id))
		}
	}
	f(fs, serverID)
	f(fc, clientID)
	// Handshakes after the last renewal use it.
	deadline := time.Now().Add(5 * time.Second)
	for (l.distinctServerSerials() < renewals+1 || srv.distinctClientSerials() < renewals+1) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	l.check(t)
	if n := l.distinctServerSerials(); n < renewals+1 {
		t.Errorf("clients saw %d server leaves, want >= %d (initial + renewals)", n, renewals+1)
	}
	if n := srv.distinctClientSerials(); n < renewals+1 {
		t.Errorf("server saw %d client leaves, want >= %d", n, renewals+1)
	}
	if n := srv.fails.Load(); n != 0 {
		t.Errorf("server: %d failed handshakes, last: %v", n, srv.err())
	}
	t.Logf("%d exchanges, %d server handshakes, %d server leaves, %d client leaves",
		l.ok.Load(), srv.ok.Load(), l.distinctServerSerials(), srv.distinctClientSerials())
}

// TestRootRotation walks a root rotation: both roots distributed (by the
// CA's answers), the server side moves to the new root while the client
// still holds an old-root leaf, then the client moves, then the old root is
// dropped. Handshakes run throughout without a failure; afterwards an
// old-root leaf is refused by the same, never rebuilt, configs.
func TestRootRotation(t *testing.T) {
	const ttl = 2 * time.Second
	oldCA := identitytest.MustNewCA(t, td.Name(), ttl)
	newCA := identitytest.MustNewCA(t, td.Name(), ttl)
	serverB := identity.NewBundle(td, []*x509.Certificate{oldCA.Root})
	clientB := identity.NewBundle(td, []*x509.Certificate{oldCA.Root})
	fs, fc := newFetcher(oldCA), newFetcher(oldCA)
	serverM := startManager(t, identity.Config{TrustDomain: td, Fetcher: fs, Bundle: serverB})
	clientM := startManager(t, identity.Config{TrustDomain: td, Fetcher: fc, Bundle: clientB})
	serverID, clientID := wid("shop", "reviews"), wid("shop", "frontend")

	srvCfg := mustServer(t, serverM, serverB, identity.ServerOptions{Identity: identity.FixedIdentity(serverID)})
	srv := startTLSServer(t, srvCfg)
	cfg := mustClient(t, clientM, clientB, clientID, []spiffeid.ID{serverID})
	stop := make(chan struct{})
	l := runLoad(t, srv.addr, cfg, 4, 2, stop)

	issuedBy := func(m *identity.Manager, id spiffeid.ID, root *x509.Certificate) func() bool {
		return func() bool {
			c, err := m.Current(id)
			return err == nil && c.Leaf.CheckSignatureFrom(root) == nil
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	oldLeafClient := oldCA.MustIssue(t, clientID, time.Hour)
	oldLeafServer := oldCA.MustIssue(t, serverID, time.Hour)
	probe := func(clientCert *tls.Certificate, b *identity.Bundle) error {
		_, err := exchange(srv.addr, mustClient(t, static(clientCert), b, clientID, []spiffeid.ID{serverID}))
		return err
	}

	// 1. Prepare: both CAs hand out {old, new}; the next renewals spread it.
	oldCA.SetBundle(oldCA.Root, newCA.Root)
	newCA.SetBundle(oldCA.Root, newCA.Root)
	waitFor("both roots in both bundles", func() bool { return len(serverB.Roots()) == 2 && len(clientB.Roots()) == 2 })
	// 2. Activate on the server side only: mixed roots must interoperate.
	fs.use(newCA)
	waitFor("server leaf from the new root", issuedBy(serverM, serverID, newCA.Root))
	waitFor("a handshake with a new-root server leaf", func() bool {
		_, err := exchange(srv.addr, cfg)
		return err == nil
	})
	if !issuedBy(clientM, clientID, oldCA.Root)() {
		t.Log("client leaf already renewed from the new root (fast renewals); mixed case covered by the probe below")
	}
	if err := probe(oldLeafClient, clientB); err != nil {
		t.Errorf("old-root client leaf refused during the rotation: %v", err)
	}
	// 3. Activate on the client side.
	fc.use(newCA)
	waitFor("client leaf from the new root", issuedBy(clientM, clientID, newCA.Root))
	waitFor("server saw a new-root client leaf", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		_, ok := srv.issuers[string(newCA.Root.RawSubject)]
		return ok
	})
	// 4. Finish: drop the old root everywhere.
	newCA.SetBundle(newCA.Root)
	if err := serverB.SetRoots([]*x509.Certificate{newCA.Root}); err != nil {
		t.Fatal(err)
	}
	if err := clientB.SetRoots([]*x509.Certificate{newCA.Root}); err != nil {
		t.Fatal(err)
	}
	// Let renewals happen after the drop, too.
	fs.next(t, 2*ttl, okFor(serverID))
	fc.next(t, 2*ttl, okFor(clientID))
	close(stop)
	l.check(t)
	if n := srv.fails.Load(); n != 0 {
		t.Errorf("server: %d failed handshakes during the rotation, last: %v", n, srv.err())
	}
	srv.mu.Lock()
	issuers := len(srv.issuers)
	srv.mu.Unlock()
	if issuers != 2 {
		t.Errorf("server saw client leaves from %d roots, want 2", issuers)
	}

	// Old leaves are now refused, by the same live configs.
	if err := probe(oldLeafClient, clientB); err == nil {
		t.Error("old-root client leaf accepted after the old root was dropped")
	}
	old := startTLSServer(t, mustServer(t, static(oldLeafServer), serverB, identity.ServerOptions{Identity: identity.FixedIdentity(serverID)}))
	if _, err := exchange(old.addr, cfg); err == nil || !strings.Contains(err.Error(), "server certificate refused") {
		t.Errorf("client accepted an old-root server leaf after the drop: %v", err)
	}
}

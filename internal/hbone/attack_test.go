package hbone_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/identity/identitytest"
)

// TestAttacksRefused throws bad clients at the server while a good stream
// is open: each connection is closed with exactly one log line naming it,
// the handler is never called, and the good stream and new dials keep
// working.
func TestAttacksRefused(t *testing.T) {
	e := newEnv(t, envOpts{server: func(c *hbone.ServerConfig) { c.HandshakeTimeout = 300 * time.Millisecond }})
	echo := echoServer(t)
	good := e.dial(echo)
	defer good.Close()
	handledBefore := e.handled.Load()

	now := time.Now()
	foreignCA := identitytest.MustNewCA(t, td.Name(), time.Hour)
	foreignTDCA := identitytest.MustNewCA(t, "evil.example", time.Hour)
	mustIssue := func(ca *identitytest.CA, id spiffeid.ID, nb, na time.Time) *tls.Certificate {
		c, err := ca.Issue(id, nb, na, false)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	evilID := spiffeid.RequireFromString("spiffe://evil.example/ns/default/sa/client")
	tlsWith := func(cert *tls.Certificate, alpn ...string) *tls.Config {
		cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: alpn, MinVersion: tls.VersionTLS13}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return cfg
	}

	cases := []struct {
		name   string
		attack func(c net.Conn) // speaks on a raw TCP connection to the server
		reason string           // substring of the log line's reason
	}{
		{"plaintext HTTP", func(c net.Conn) {
			_, _ = io.WriteString(c, "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n")
		}, "does not look like a TLS handshake"},
		{"plaintext HTTP/2 preface", func(c net.Conn) {
			_, _ = io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
		}, "does not look like a TLS handshake"},
		{"no client certificate", tlsAttack(tlsWith(nil, "h2")), "client didn't provide a certificate"},
		{"foreign CA", tlsAttack(tlsWith(mustIssue(foreignCA, clientID, now.Add(-time.Hour), now.Add(time.Hour)), "h2")), "client certificate refused"},
		{"foreign trust domain, our CA", tlsAttack(tlsWith(mustIssue(e.ca, evilID, now.Add(-time.Hour), now.Add(time.Hour)), "h2")), "client certificate refused"},
		{"foreign trust domain, its own CA", tlsAttack(tlsWith(mustIssue(foreignTDCA, evilID, now.Add(-time.Hour), now.Add(time.Hour)), "h2")), "client certificate refused"},
		{"expired certificate", tlsAttack(tlsWith(mustIssue(e.ca, clientID, now.Add(-2*time.Hour), now.Add(-time.Hour)), "h2")), "expired"},
		{"ALPN http/1.1 only", tlsAttack(tlsWith(mustIssue(e.ca, clientID, now.Add(-time.Hour), now.Add(time.Hour)), "http/1.1")), "ALPN: client negotiated"},
		{"no ALPN", tlsAttack(tlsWith(mustIssue(e.ca, clientID, now.Add(-time.Hour), now.Add(time.Hour)))), "ALPN: client negotiated"},
		{"stall before ClientHello", func(net.Conn) {}, "TLS handshake timeout"},
		{"stall mid-ClientHello", func(c net.Conn) {
			// A TLS record header announcing 512 bytes, then silence.
			_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
		}, "TLS handshake timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tc.attack(c)
			// The server must close the connection (within the handshake
			// timeout for the stalls).
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Fatal("server kept the connection open")
					}
					break
				}
			}
			me := c.LocalAddr().String()
			var lines []string
			eventually(t, 5*time.Second, "the refusal log line", func() bool {
				lines = e.logs.lines("remote=" + me + " ")
				return len(lines) > 0
			})
			if len(lines) != 1 {
				t.Fatalf("%d log lines for %s, want 1:\n%s", len(lines), me, strings.Join(lines, "\n"))
			}
			if !strings.Contains(lines[0], "connection refused") || !strings.Contains(lines[0], tc.reason) {
				t.Fatalf("log line %q: want \"connection refused\" with reason containing %q", lines[0], tc.reason)
			}
		})
	}

	if n := e.handled.Load() - handledBefore; n != 0 {
		t.Fatalf("handler called %d times by refused connections", n)
	}
	// Nothing else harmed: the open stream and a new dial still work.
	for _, c := range []net.Conn{good, e.dial(echo)} {
		if _, err := c.Write([]byte("still here")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len("still here"))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "still here" {
			t.Fatalf("echo after attacks: %q, %v", got, err)
		}
		if c != good {
			c.Close()
		}
	}
}

func tlsAttack(cfg *tls.Config) func(net.Conn) {
	return func(c net.Conn) {
		tc := tls.Client(c, cfg)
		// In TLS 1.3 the client may finish before the server checks its
		// certificate; the refusal then shows as the connection closing.
		_ = tc.Handshake()
		_, _ = tc.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	}
}

// TestServerIdentityChecked: the Dialer refuses a server whose URI SAN is
// not one of the expected destination identities, or that chains to
// another CA; nothing reaches the handler.
func TestServerIdentityChecked(t *testing.T) {
	e := newEnv(t, envOpts{})
	echo := echoServer(t)

	req := e.req(echo)
	req.Destination = []spiffeid.ID{wid("default", "someone-else")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := e.dialer.Dial(ctx, req); err == nil {
		c.Close()
		t.Fatal("Dial accepted a server with an unexpected identity")
	} else if !strings.Contains(err.Error(), "want one of") {
		t.Fatalf("Dial error %q does not name the identity mismatch", err)
	}

	// A dialer trusting only another CA refuses the server's chain.
	other := identitytest.MustNewCA(t, td.Name(), time.Hour)
	d, err := hbone.NewDialer(hbone.DialerConfig{Source: &certs{ca: other}, Bundle: identityBundle(other)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if c, err := d.Dial(ctx, e.req(echo)); err == nil {
		c.Close()
		t.Fatal("Dial accepted a server from a foreign CA")
	}
	if n := e.handled.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
}

func identityBundle(ca *identitytest.CA) *identity.Bundle {
	return identity.NewBundle(td, []*x509.Certificate{ca.Root})
}

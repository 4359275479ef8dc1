//go:build linux

package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/node/netns"
)

const ghostIP = "10.2.3.2" // shop/ghost on node 2, whose HBONE address an impostor answers

const ghostYAML = `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: ghost, namespace: shop, labels: {app: ghost}}
spec: {addresses: ["` + ghostIP + `"], node: node-2, serviceAccount: ghost}
`

// TestLabHandshakeAttacks: the rest of the attack list against the
// real binaries — a server whose certificate, though issued by the mesh CA,
// names another identity than the destination's; client certificates from
// the mesh CA that are expired or of a foreign trust domain; peers that
// stall mid-handshake. Each is refused, logged once, leaves no goroutine
// behind and does not disturb other traffic.
func TestLabHandshakeAttacks(t *testing.T) {
	l := newLab(t)

	t.Run("ServerWithAnotherIdentity", func(t *testing.T) {
		// An impostor holding web's genuine certificate answers ghost's HBONE
		// address: client-a's proxy expects ghost's identity and must refuse.
		ghost := l.extraPod(t, "ghost", ghostIP, l.node2)
		ln, err := netns.Listen(l.ctx, ghost.Path, "tcp", ghostIP+":15008", netns.ListenOptions{Unmarked: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		var appBytes atomic.Int64
		cfg := &tls.Config{Certificates: []tls.Certificate{l.meshCert(t, webID)}, NextProtos: []string{"h2"}, ClientAuth: tls.RequestClientCert}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					tc := tls.Server(c, cfg)
					if tc.Handshake() != nil {
						return
					}
					n, _ := io.Copy(io.Discard, tc)
					appBytes.Add(n)
				}()
			}
		}()
		l.writeConfig(t, "ghost.yaml", ghostYAML)
		mismatch := `server is \"` + webID + `\", want one of [spiffe://cluster.local/ns/shop/sa/ghost]`
		var line string
		eventually(t, 10*time.Second, "node-1 to refuse ghost's impostor", func() error {
			d := netns.Dialer{NetNS: l.pods["client-a"].Path, Unmarked: true, Timeout: 3 * time.Second}
			c, err := d.DialContext(l.ctx, "tcp", ghostIP+":"+echoPort)
			if err != nil {
				return err
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, "GET /secret HTTP/1.1\r\nHost: ghost\r\n\r\n")
			b, _ := io.ReadAll(c)
			c.Close()
			if len(b) > 0 {
				t.Fatalf("client-a got %q from ghost's impostor", b)
			}
			lines := l.accessLines(t, "node-1", "src.addr="+c.LocalAddr().String()+" ")
			if len(lines) != 1 || !strings.Contains(lines[0], mismatch) {
				return fmt.Errorf("node-1 logged %q for this attempt; want one line refusing the impostor (node-1 may not know ghost yet)", lines)
			}
			line = lines[0]
			return nil
		})
		if !strings.Contains(line, "dst.hbone_addr="+ghostIP+":"+echoPort) || !strings.Contains(line, "response_flags=CONNECT") {
			t.Errorf("node-1's line %q is not a failed tunnel to ghost", line)
		}
		if n := appBytes.Load(); n != 0 {
			t.Errorf("the impostor received %d bytes of application data", n)
		}
		if _, err := l.appGet("client-a", webB1IP+":"+echoPort, "/after-impostor"); err != nil {
			t.Errorf("client-a -> web-b1 after the impostor: %v", err)
		}
	})

	for _, tc := range []struct {
		name, id, reason string
		notAfter         time.Duration
	}{
		{"ExpiredClientCertificate", clientID, "expired", -time.Minute},
		{"ForeignTrustDomainFromTheMeshCA", "spiffe://evil.example/ns/shop/sa/client", "client certificate refused", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := l.meshCertValid(t, tc.id, time.Now().Add(-2*time.Hour), time.Now().Add(tc.notAfter))
			d := netns.Dialer{NetNS: l.node1.Path, Timeout: 3 * time.Second}
			c, err := d.DialContext(l.ctx, "tcp", webB1IP+":15008")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			tlsc := tls.Client(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
			_ = tlsc.Handshake()
			_, _ = io.WriteString(tlsc, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
			b, err := io.ReadAll(tlsc)
			var ne net.Error
			if len(b) > 0 || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("with the %s certificate: got %d bytes, %v; want the connection closed", tc.name, len(b), err)
			}
			l.refusedOnce(t, "remote="+c.LocalAddr().String()+" ", tc.reason)
			if _, err := l.appGet("client-a", webB1IP+":"+echoPort, "/after-"+tc.name); err != nil {
				t.Errorf("client-a -> web-b1 after the attack: %v", err)
			}
		})
	}

	t.Run("StalledHandshakes", func(t *testing.T) {
		if _, err := l.appGet("client-a", webB1IP+":"+echoPort, "/warm"); err != nil {
			t.Fatal(err)
		}
		before := l.goroutines(t)
		d := netns.Dialer{NetNS: l.node1.Path, Timeout: 3 * time.Second}
		type stalled struct {
			c    net.Conn
			done chan error
		}
		var conns []stalled
		for i := range 4 {
			c, err := d.DialContext(l.ctx, "tcp", webB1IP+":15008")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if i%2 == 1 {
				// A TLS record header announcing 512 bytes, then silence.
				_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
			}
			s := stalled{c, make(chan error, 1)}
			go func() {
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, err := io.Copy(io.Discard, c)
				s.done <- err
			}()
			conns = append(conns, s)
		}
		// Meanwhile the proxy serves everyone else.
		if _, err := l.appGet("client-a", webB1IP+":"+echoPort, "/during-stall"); err != nil {
			t.Errorf("client-a -> web-b1 during the stall: %v", err)
		}
		for _, s := range conns {
			select {
			case err := <-s.done:
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("stalled connection %s was never closed by node-2", s.c.LocalAddr())
				}
			case <-time.After(25 * time.Second):
				t.Fatalf("stalled connection %s still open after 25 s", s.c.LocalAddr())
			}
			l.refusedOnce(t, "remote="+s.c.LocalAddr().String()+" ", "TLS handshake timeout")
		}
		eventually(t, 10*time.Second, "node-2's goroutines to return to their number before the stall", func() error {
			if n := l.goroutines(t); n > before {
				return fmt.Errorf("go_goroutines = %d; was %d before", n, before)
			}
			return nil
		})
	})
}

// refusedOnce waits for node-2 to log exactly one line containing peer,
// and checks it gives reason.
func (l *lab) refusedOnce(t *testing.T, peer, reason string) {
	t.Helper()
	var lines []string
	eventually(t, 5*time.Second, "node-2 to log the refusal once", func() error {
		lines = lines[:0]
		for _, line := range strings.Split(l.nodeProcs["node-2"].log(t), "\n") {
			if strings.Contains(line, peer) {
				lines = append(lines, line)
			}
		}
		if len(lines) != 1 {
			return fmt.Errorf("%d lines with %q; want 1", len(lines), peer)
		}
		return nil
	})
	if !strings.Contains(lines[0], reason) {
		t.Errorf("node-2's line %q does not give the reason %q", lines[0], reason)
	}
}

// goroutines reads node-2's go_goroutines gauge.
func (l *lab) goroutines(t *testing.T) int {
	t.Helper()
	body, err := l.httpGet(l.node2.Path, false, "http://127.0.0.1:15020/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("go_goroutines line %q: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatal("node-2 exports no go_goroutines")
	return 0
}

//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/identity/identitytest"
	"github.com/ambitmesh/ambit/internal/node/netns"
)

const (
	clientID = "spiffe://cluster.local/ns/shop/sa/client"
	otherID  = "spiffe://cluster.local/ns/shop/sa/other"
	webID    = "spiffe://cluster.local/ns/shop/sa/web"
)

const denyClient = `
apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/shop/sa/client"]}
`

// TestLab runs one topology and checks the data path end to end. The
// subtests share it and run in order.
func TestLab(t *testing.T) {
	l := newLab(t)

	// An unchanged app in pod client-a (node 1) reaches the echo in node 2's
	// pods by the service VIP (both endpoints, round robin) and by pod IP,
	// and the echo sees the client pod's own address.
	t.Run("CapturedAppReachesServiceAndPod", func(t *testing.T) {
		pods := map[string]int{}
		for i := range 4 {
			r, err := l.appGet("client-a", webVIP+":80", fmt.Sprintf("/vip-%d", i))
			if err != nil {
				t.Fatalf("client-a -> %s:80: %v", webVIP, err)
			}
			if hostOf(r.RemoteAddr) != clientIP || r.Path != fmt.Sprintf("/vip-%d", i) {
				t.Errorf("via the VIP the echo in %s saw %q from %s; want /vip-%d from client-a's %s", r.Pod, r.Path, r.RemoteAddr, i, clientIP)
			}
			pods[r.Pod]++
		}
		if pods["web-b1"] == 0 || pods["web-b2"] == 0 {
			t.Errorf("4 requests to the VIP reached %v; want both web-b1 and web-b2", pods)
		}
		for _, w := range []struct{ ip, pod string }{{webB1IP, "web-b1"}, {webB2IP, "web-b2"}} {
			r, err := l.appGet("client-a", w.ip+":"+echoPort, "/direct")
			if err != nil {
				t.Fatalf("client-a -> %s: %v", w.ip, err)
			}
			if r.Pod != w.pod || hostOf(r.RemoteAddr) != clientIP || hostOf(r.LocalAddr) != w.ip {
				t.Errorf("direct to %s: echo %s saw %s -> %s; want %s from %s", w.ip, r.Pod, r.RemoteAddr, r.LocalAddr, w.pod, clientIP)
			}
		}
	})

	// The tunnel between the nodes is HBONE: TLS 1.3 with ALPN h2 to port
	// 15008, leaving from the client pod's own IP; the app's bytes never
	// cross the node link in the clear; node 2 saw the client's SPIFFE
	// identity from its certificate. other-a has not talked yet, so its
	// tunnel needs a fresh handshake the capture can see.
	t.Run("TunnelIsHBONEmTLSOnTheWire", func(t *testing.T) {
		// client-a's streams above end after its app got the answer (node 1
		// sends END_STREAM once the app closed, then logs the connection):
		// wait for that, so that the capture holds other-a's tunnel only.
		eventually(t, 5*time.Second, "client-a's 6 connections above to end", func() error {
			if n := len(l.accessLines(t, "node-1", "direction=outbound", "src.workload=client-a")); n < 6 {
				return fmt.Errorf("node-1 logged %d of client-a's 6 connections", n)
			}
			return nil
		})
		capture := sniff(t, l.node2, "eth0")
		marker := fmt.Sprintf("/wire-marker-%d", time.Now().UnixNano())
		r, err := l.appGet("other-a", webVIP+":80", marker)
		if err != nil {
			t.Fatalf("other-a -> %s:80: %v", webVIP, err)
		}
		if r.Path != marker || hostOf(r.RemoteAddr) != otherIP {
			t.Fatalf("echo saw %q from %s; want %q from other-a's %s", r.Path, r.RemoteAddr, marker, otherIP)
		}
		// The FIN/ACK exchange may trail the answer a little.
		capture.waitSegment(time.Second, func(s segment) bool { return s.src.Port() == 15008 && len(s.payload) == 0 })
		segs := capture.Stop()
		var clientHello, serverHello13, appData int
		for _, s := range segs {
			if bytes.Contains(s.payload, []byte(marker)) {
				t.Errorf("the app's request crossed the node link in the clear: %s -> %s %q", s.src, s.dst, s.payload)
			}
			if s.src.Port() == 8080 || s.dst.Port() == 8080 {
				t.Errorf("a segment to the app port crossed the node link: %s -> %s (want only HBONE on 15008)", s.src, s.dst)
			}
			if len(s.payload) < 6 {
				continue
			}
			switch {
			case s.dst.Port() == 15008:
				if s.src.Addr().String() != otherIP {
					t.Errorf("tunnel segment from %s; want it to leave from other-a's own IP %s", s.src, otherIP)
				}
				// TLS handshake record carrying a ClientHello whose ALPN offers h2.
				if s.payload[0] == 0x16 && s.payload[1] == 3 && s.payload[5] == 0x01 && bytes.Contains(s.payload, []byte("\x02h2")) {
					clientHello++
				}
				if s.payload[0] == 0x17 && s.payload[1] == 3 {
					appData++
				}
			case s.src.Port() == 15008:
				// ServerHello with supported_versions = TLS 1.3 (0x0304).
				if s.payload[0] == 0x16 && s.payload[5] == 0x02 && bytes.Contains(s.payload, []byte{0x00, 0x2b, 0x00, 0x02, 0x03, 0x04}) {
					serverHello13++
				}
			}
		}
		if clientHello == 0 || serverHello13 == 0 || appData == 0 {
			t.Errorf("on node 2's link (%d TCP segments): %d ClientHellos offering h2 to :15008, %d TLS 1.3 ServerHellos, %d encrypted records to :15008; want each >= 1", len(segs), clientHello, serverHello13, appData)
			for i, s := range segs {
				if i == 60 {
					break
				}
				t.Logf("segment %s -> %s: %d bytes % x", s.src, s.dst, len(s.payload), s.payload[:min(len(s.payload), 12)])
			}
		}
		eventually(t, 5*time.Second, "node-2 to log other-a's connection with its identity", func() error {
			if len(l.accessLines(t, "node-2", "direction=inbound", "src.identity="+otherID, "dst.identity="+webID, "response_flags=-")) == 0 {
				return errors.New("no inbound access log line with src.identity=" + otherID)
			}
			return nil
		})
	})

	// A DENY policy for client-a's identity refuses its new connections at
	// node 2 (VIP and pod IP), names the policy in the access log and leaves
	// other-a alone; removing it allows client-a again.
	t.Run("L4PolicyDenyThenAllow", func(t *testing.T) {
		t.Cleanup(func() { _ = os.Remove(filepath.Join(l.configDir, "deny.yaml")) })
		l.writeConfig(t, "deny.yaml", denyClient)
		eventually(t, 10*time.Second, "client-a to be refused", func() error {
			if _, err := l.appGet("client-a", webVIP+":80", "/denied"); err == nil {
				return errors.New("client-a still reaches the echo through the VIP")
			}
			return nil
		})
		if r, err := l.appGet("client-a", webB1IP+":"+echoPort, "/denied-direct"); err == nil {
			t.Errorf("client-a reached %s by pod IP (%s) under the DENY policy", webB1IP, r.Pod)
		}
		if _, err := l.appGet("other-a", webVIP+":80", "/allowed"); err != nil {
			t.Errorf("other-a is not named by the policy but was refused: %v", err)
		}
		eventually(t, 5*time.Second, "node-2's access log to name the policy", func() error {
			if len(l.accessLines(t, "node-2", "src.identity="+clientID, "policy=shop/deny-client")) == 0 {
				return errors.New("no access log line for client-a with policy=shop/deny-client")
			}
			return nil
		})
		l.removeConfig(t, "deny.yaml")
		eventually(t, 10*time.Second, "client-a to be allowed again", func() error {
			_, err := l.appGet("client-a", webVIP+":80", "/allowed-again")
			return err
		})
	})

	// Node 2's Prometheus endpoint counts each inbound mTLS connection under
	// Istio's metric name and labels.
	t.Run("MetricsCountInboundConnections", func(t *testing.T) {
		want := map[string]string{
			"reporter":                       "destination",
			"source_principal":               clientID,
			"source_workload":                "client-a",
			"source_workload_namespace":      "shop",
			"destination_workload":           "web-b1",
			"destination_workload_namespace": "shop",
			"destination_principal":          webID,
			"connection_security_policy":     "mutual_tls",
		}
		before := l.metricSum(t, "istio_tcp_connections_opened_total", want)
		if before == 0 {
			t.Errorf("no istio_tcp_connections_opened_total series with %v before this test, though client-a already reached web-b1", want)
		}
		if _, err := l.appGet("client-a", webB1IP+":"+echoPort, "/metrics-probe"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the counter to count the new connection", func() error {
			if got := l.metricSum(t, "istio_tcp_connections_opened_total", want); got != before+1 {
				return fmt.Errorf("istio_tcp_connections_opened_total%v = %v; want %v", want, got, before+1)
			}
			return nil
		})
	})

	// Bad input at node 2's HBONE port is refused, logged once, and the
	// proxy keeps serving.
	t.Run("AttacksOnHBONEPort", func(t *testing.T) {
		tooling := netns.Dialer{NetNS: l.node1.Path, Timeout: 3 * time.Second}
		hbone := webB1IP + ":15008"
		for _, tc := range []struct {
			name string
			talk func(t *testing.T, c net.Conn) error // the error the attacker ends with
		}{
			{"plaintext", func(t *testing.T, c net.Conn) error {
				if _, err := io.WriteString(c, "CONNECT "+webB1IP+":8080 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					return err
				}
				b, err := io.ReadAll(c)
				if strings.Contains(string(b), "HTTP/1.1 200") {
					t.Errorf("plaintext CONNECT got %q", b)
				}
				if err == nil {
					err = io.EOF
				}
				return err
			}},
			{"certificate from a foreign CA", func(t *testing.T, c net.Conn) error {
				foreign := identitytest.MustNewCA(t, "cluster.local", time.Hour)
				cert := foreign.MustIssue(t, spiffeid.RequireFromString(clientID), time.Hour)
				tc := tls.Client(c, &tls.Config{
					Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2"},
					MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, // the attacker does not care who answers
				})
				if err := tc.Handshake(); err != nil {
					return err
				}
				// TLS 1.3: the server judges the client's certificate after
				// the client's flight; its verdict arrives on the next read.
				if _, err := io.WriteString(tc, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
					return err
				}
				b, err := io.ReadAll(tc)
				if len(b) > 0 {
					t.Errorf("a client with a foreign certificate got %d bytes of HTTP/2 from the proxy", len(b))
				}
				if err == nil {
					err = io.EOF
				}
				return err
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
				defer cancel()
				c, err := tooling.DialContext(ctx, "tcp", hbone)
				if err != nil {
					t.Fatalf("dial %s: %v", hbone, err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				err = tc.talk(t, c)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("the proxy neither answered nor closed within 5 s: %v", err)
				}
				t.Logf("attacker saw: %v", err)
				remote := "remote=" + c.LocalAddr().String()
				eventually(t, 5*time.Second, "node-2 to log the refusal", func() error {
					n := strings.Count(l.nodeProcs["node-2"].log(t), remote+" ")
					if n != 1 {
						return fmt.Errorf("node-2 logged %d lines with %s; want exactly 1", n, remote)
					}
					return nil
				})
				if _, err := l.appGet("client-a", webB1IP+":"+echoPort, "/after-attack"); err != nil {
					t.Errorf("after the attack client-a no longer reaches web-b1: %v", err)
				}
			})
		}
	})
}

var labelRE = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// metricSum adds the values of node 2's series of metric whose labels
// include want.
func (l *lab) metricSum(t *testing.T, metric string, want map[string]string) float64 {
	t.Helper()
	body, err := l.httpGet(l.node2.Path, false, "http://127.0.0.1:15020/metrics")
	if err != nil {
		t.Fatalf("scrape node-2: %v", err)
	}
	var sum float64
series:
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		end := strings.LastIndex(line, "}")
		labels := map[string]string{}
		for _, m := range labelRE.FindAllStringSubmatch(line[len(metric)+1:end], -1) {
			labels[m[1]] = m[2]
		}
		for k, v := range want {
			if labels[k] != v {
				continue series
			}
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

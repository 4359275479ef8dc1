//go:build linux

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/ambitmesh/ambit/internal/node/netns"
)

// meshCert signs a certificate for id with the control plane's own root
// (read from its state folder): a peer with a genuine mesh identity, so what
// the proxy refuses below is the request, not the certificate.
func (l *lab) meshCert(t *testing.T, id string) tls.Certificate {
	t.Helper()
	return l.meshCertValid(t, id, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

// meshCertValid is meshCert valid from notBefore to notAfter.
func (l *lab) meshCertValid(t *testing.T, id string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	read := func(name, typ string) []byte {
		b, err := os.ReadFile(filepath.Join(l.stateDir, "ca", name))
		if err != nil {
			t.Fatalf("mesh root: %v", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != typ {
			t.Fatalf("mesh root %s: no PEM %q block", name, typ)
		}
		return blk.Bytes
	}
	root, err := x509.ParseCertificate(read("root-1.pem", "CERTIFICATE"))
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := x509.ParsePKCS8PrivateKey(read("root-1.key", "PRIVATE KEY"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		URIs:         []*url.URL{u},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestLabHBONERequests: with a valid mesh certificate, node 2's HBONE port
// answers a classic CONNECT to its local workload with 200, and refuses a
// non-CONNECT request and a CONNECT to an address that is not one of its
// workloads with 400, each logged once, without disturbing other traffic.
func TestLabHBONERequests(t *testing.T) {
	l := newLab(t)
	cert := l.meshCert(t, clientID)
	hbone := webB1IP + ":15008"
	for _, tc := range []struct {
		name, method, authority string
		want                    int
	}{
		{"CONNECT to the local workload", http.MethodConnect, webB1IP + ":" + echoPort, http.StatusOK},
		{"GET instead of CONNECT", http.MethodGet, webB1IP + ":" + echoPort, http.StatusBadRequest},
		{"CONNECT to a workload on another node", http.MethodConnect, clientIP + ":" + echoPort, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var local net.Addr
			tr := &http2.Transport{
				DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
					d := netns.Dialer{NetNS: l.node1.Path, Timeout: 3 * time.Second}
					c, err := d.DialContext(ctx, "tcp", hbone)
					if err != nil {
						return nil, err
					}
					local = c.LocalAddr()
					tc := tls.Client(c, &tls.Config{
						Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13,
						// SPIFFE certificates name no host; who answers does not matter here.
						InsecureSkipVerify: true,
					})
					if err := tc.HandshakeContext(ctx); err != nil {
						c.Close()
						return nil, err
					}
					return tc, nil
				},
			}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
			defer cancel()
			pr, pw := io.Pipe()
			defer pw.Close()
			req := &http.Request{
				Method: tc.method, Host: tc.authority, Header: http.Header{},
				URL: &url.URL{Scheme: "https", Host: tc.authority, Path: "/"},
			}
			if tc.method == http.MethodConnect {
				req.URL = &url.URL{Scheme: "https", Host: tc.authority}
				req.Body = pr
			}
			resp, err := tr.RoundTrip(req.WithContext(ctx))
			if err != nil {
				t.Fatalf("%s %s via %s: %v", tc.method, tc.authority, hbone, err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %s: status %d; want %d", tc.method, tc.authority, resp.StatusCode, tc.want)
			}
			if tc.want != http.StatusOK {
				// Refused before a stream is served ("stream refused") or
				// after the stream was admitted (its access log line with
				// the error): either way one warning naming this peer.
				from := local.String() + " "
				eventually(t, 5*time.Second, "node-2 to log the refusal once", func() error {
					var n int
					for _, line := range strings.Split(l.nodeProcs["node-2"].log(t), "\n") {
						if strings.Contains(line, "level=WARN") && (strings.Contains(line, "remote="+from) || strings.Contains(line, "src.addr="+from)) {
							n++
						}
					}
					if n != 1 {
						return fmt.Errorf("%d warnings about %s; want 1", n, from)
					}
					return nil
				})
			}
			if _, err := l.appGet("client-a", webB1IP+":"+echoPort, "/after"); err != nil {
				t.Errorf("client-a no longer reaches web-b1: %v", err)
			}
		})
	}
}

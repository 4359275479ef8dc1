package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// clientCert is a client certificate issued by ca.
func clientCert(t *testing.T, ca *testCA) []tls.Certificate {
	crt, key, _ := ca.Issue(t, "client.test")
	c, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	return []tls.Certificate{c}
}

// getWith sends GET https://sni/ over a new connection with SNI sni and
// client certificates certs; it returns the status, or the error when the
// gateway refused the handshake.
func getWith(t *testing.T, g *gw, ca *testCA, sni string, h2 bool, certs []tls.Certificate) (int, error) {
	c := httpsClient(t, g.addr, sni, ca.Pool, h2)
	c.Transport.(*http.Transport).TLSClientConfig.Certificates = certs
	resp, err := c.Get("https://" + sni + "/")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// HTTPS listeners with client validation: AllowValidOnly admits only
// clients whose certificate chains to the listener's CAs (the others fail
// the handshake, logged), AllowInsecureFallback admits every client, a
// listener without validation asks for nothing, and a new CA applies to
// new connections.
func TestClientCertificateValidation(t *testing.T) {
	ca, trusted, other := newTestCA(t), newTestCA(t), newTestCA(t)
	sec, _ := ca.secret(t, "cert", "a.example.com", "b.example.com", "open.test")
	valid := func(name, hostname string, v *gatewayv1.ClientValidation) *gatewayv1.Listener {
		l := tlsListenerProto(name, "HTTPS", "Terminate", hostname, "svc", "cert")
		l.Tls.ClientValidation = v
		return l
	}
	ls := []*gatewayv1.Listener{
		valid("strict", "a.example.com", &gatewayv1.ClientValidation{CaPem: trusted.PEM()}),
		valid("fallback", "b.example.com", &gatewayv1.ClientValidation{CaPem: trusted.PEM(), InsecureFallback: true}),
		valid("open", "", nil),
	}
	bs := []*gatewayv1.Backend{backend("svc", startEcho(t, "pod"))}
	g := startPort(t, FamilyTLS, 443, ls, bs, sec)
	good, bad := clientCert(t, trusted), clientCert(t, other)
	for _, tt := range []struct {
		sni   string
		certs []tls.Certificate
		ok    bool
	}{
		{"a.example.com", good, true},
		{"a.example.com", nil, false},
		{"a.example.com", bad, false},
		{"b.example.com", good, true},
		{"b.example.com", nil, true},
		{"b.example.com", bad, true},
		{"open.test", nil, true},
	} {
		for _, h2 := range []bool{true, false} {
			status, err := getWith(t, g, ca, tt.sni, h2, tt.certs)
			if tt.ok && (err != nil || status != http.StatusOK) {
				t.Errorf("SNI %s, %d client certificates, h2=%v: %d, %v; want 200", tt.sni, len(tt.certs), h2, status, err)
			}
			if !tt.ok && err == nil {
				t.Errorf("SNI %s, %d client certificates, h2=%v: %d; want the handshake refused", tt.sni, len(tt.certs), h2, status)
			}
		}
	}
	waitLog(t, g.log, `"msg":"proxy: TLS handshake failed","listener":"strict","sni":"a.example.com"`)

	// The open listener's connection cannot reach the strict listener's
	// routes by Host: 421, not a way around client validation.
	c := dialOne(t, g, ca, "open.test", true)
	if status, _ := c.get(t, "a.example.com"); status != http.StatusMisdirectedRequest {
		t.Errorf("Host a.example.com on open.test's connection: %d, want 421", status)
	}

	// Rotate the CA: new connections need a certificate of the new one.
	ls[0] = valid("strict", "a.example.com", &gatewayv1.ClientValidation{CaPem: other.PEM()})
	if err := g.e.Apply(ls, nil, bs, sec); err != nil {
		t.Fatal(err)
	}
	for certs, ok := range map[string]bool{"new CA": true, "old CA": false} {
		cc := bad
		if !ok {
			cc = good
		}
		if _, err := getWith(t, g, ca, "a.example.com", true, cc); (err == nil) != ok {
			t.Errorf("after the CA change, a client certificate of the %s: error %v", certs, err)
		}
	}

	// A validation without a usable CA refuses every client (fail closed)
	// and says so.
	ls[0] = valid("strict", "a.example.com", &gatewayv1.ClientValidation{CaPem: []byte("not pem")})
	err := g.e.Apply(ls, nil, bs, sec)
	if want := `proxy: listener "strict": client validation has no CA certificate`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("apply: %v, want %q", err, want)
	}
	if _, err := getWith(t, g, ca, "a.example.com", true, good); err == nil {
		t.Error("a client was admitted by a validation without CA")
	}
}

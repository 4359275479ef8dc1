package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/testkit"
	"github.com/ambitmesh/ambit/internal/waypoint/tlstest"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

func newTestCA(t testing.TB) *testCA { return &testCA{tlstest.NewCA(t)} }

// testCA issues the certificates of Secrets.
type testCA struct{ *tlstest.CA }

func (ca *testCA) secret(t testing.TB, name string, names ...string) (*gatewayv1.Secret, int64) {
	crt, key, sn := ca.Issue(t, names...)
	return &gatewayv1.Secret{Namespace: "default", Name: name, CertificateChainPem: crt, PrivateKeyPem: key}, sn
}

// tlsListenerProto is a TLS-family listener on port 443 whose one virtual
// host ("*" unless the listener has a hostname) routes to backend svc.
func tlsListenerProto(name, protocol, mode, hostname, svc string, certs ...string) *gatewayv1.Listener {
	l := &gatewayv1.Listener{Name: name, Port: 443, Protocol: protocol, Hostname: hostname,
		Tls: &gatewayv1.ListenerTLS{Mode: mode}}
	for _, c := range certs {
		l.Tls.Certificates = append(l.Tls.Certificates, &gatewayv1.ObjectRef{Namespace: "default", Name: c})
	}
	vh := hostname
	if vh == "" {
		vh = "*"
	}
	kind := "HTTPRoute"
	if protocol == "TLS" {
		kind = "TLSRoute"
	}
	r := &gatewayv1.Route{Source: &gatewayv1.RouteSource{Kind: kind, Namespace: "default", Name: name}, Backends: []*gatewayv1.BackendRef{ref(svc, 1)}}
	l.VirtualHosts = []*gatewayv1.VirtualHost{{Hostname: vh, Routes: []*gatewayv1.Route{r}}}
	return l
}

// startPort serves one port of the given family through ServeListener.
func startPort(t testing.TB, family string, port uint32, ls []*gatewayv1.Listener, bs []*gatewayv1.Backend, ss ...*gatewayv1.Secret) *gw {
	t.Helper()
	logs := &testkit.LogBuffer{}
	return serveEngine(t, Config{AccessLog: testLogger(logs), Logger: testLogger(logs)}, logs, ls, bs, ss,
		func(ctx context.Context, e *Engine, ln net.Listener) error {
			return e.ServeListener(ctx, ln, port, family, time.Second)
		})
}

func testLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// httpsClient speaks to the gateway at addr whatever the URL's host, with
// SNI serverName, verifying the server against pool, over HTTP/2 (h2) or
// HTTP/1.1.
func httpsClient(t testing.TB, addr, serverName string, pool *x509.CertPool, h2 bool) *http.Client {
	var p http.Protocols
	if h2 {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr := &http.Transport{
		Protocols:       &p,
		TLSClientConfig: &tls.Config{ServerName: serverName, RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// getPod sends GET https://host/ and returns the echo pod that answered,
// the HTTP version spoken to the gateway and the serial of the
// gateway's certificate.
func getPod(t *testing.T, c *http.Client, host string) (pod string, protoMajor int, certSerial int64) {
	t.Helper()
	resp, err := c.Get("https://" + host + "/")
	if err != nil {
		t.Fatalf("GET https://%s/: %v", host, err)
	}
	defer resp.Body.Close()
	var body struct {
		Pod string `json:"pod"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET https://%s/: status %d, body error %v", host, resp.StatusCode, err)
	}
	return body.Pod, resp.ProtoMajor, resp.TLS.PeerCertificates[0].SerialNumber.Int64()
}

// Several HTTPS listeners share port 443: the server name picks the
// listener (exact over wildcard over no hostname), its certificate and
// its routes, over HTTP/2 and HTTP/1.1 as ALPN decides.
func TestHTTPSListenersBySNI(t *testing.T) {
	ca := newTestCA(t)
	exact, exactSN := ca.secret(t, "exact", "a.example.com")
	wild, wildSN := ca.secret(t, "wild", "*.example.com")
	def, defSN := ca.secret(t, "default", "fallback.test")
	ls := []*gatewayv1.Listener{
		tlsListenerProto("wild", "HTTPS", "Terminate", "*.example.com", "wild-svc", "wild"),
		tlsListenerProto("exact", "HTTPS", "Terminate", "a.example.com", "exact-svc", "exact"),
		tlsListenerProto("default", "HTTPS", "Terminate", "", "default-svc", "default"),
	}
	bs := []*gatewayv1.Backend{
		backend("exact-svc", startEcho(t, "exact-pod")),
		backend("wild-svc", startEcho(t, "wild-pod")),
		backend("default-svc", startEcho(t, "default-pod")),
	}
	g := startPort(t, FamilyTLS, 443, ls, bs, exact, wild, def)
	for _, tt := range []struct {
		sni, pod string
		serial   int64
	}{
		{"a.example.com", "exact-pod", exactSN},
		{"b.example.com", "wild-pod", wildSN},
		{"fallback.test", "default-pod", defSN},
	} {
		for _, h2 := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/h2=%v", tt.sni, h2), func(t *testing.T) {
				pod, major, sn := getPod(t, httpsClient(t, g.addr, tt.sni, ca.Pool, h2), tt.sni)
				want := 1
				if h2 {
					want = 2
				}
				if pod != tt.pod || major != want || sn != tt.serial {
					t.Errorf("SNI %s: pod %s over HTTP/%d with certificate %d, want %s over HTTP/%d with %d", tt.sni, pod, major, sn, tt.pod, want, tt.serial)
				}
			})
		}
	}
}

// A new certificate applies to new handshakes while established
// connections keep going; a Secret that does not parse keeps the last
// good certificate and is reported.
func TestCertificateRotation(t *testing.T) {
	ca := newTestCA(t)
	s1, sn1 := ca.secret(t, "web", "web.example.com")
	ls := []*gatewayv1.Listener{tlsListenerProto("web", "HTTPS", "Terminate", "web.example.com", "web", "web")}
	bs := []*gatewayv1.Backend{backend("web", startEcho(t, "web-pod"))}
	g := startPort(t, FamilyTLS, 443, ls, bs, s1)

	// An HTTP/1.1 keep-alive connection made with the first certificate.
	conn, err := tls.Dial("tcp", g.addr, &tls.Config{ServerName: "web.example.com", RootCAs: ca.Pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	roundTrip := func() {
		t.Helper()
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request on the established connection: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d on the established connection", resp.StatusCode)
		}
	}
	roundTrip()

	s2, sn2 := ca.secret(t, "web", "web.example.com")
	if err := g.e.Apply(ls, nil, bs, s2); err != nil {
		t.Fatal(err)
	}
	if _, _, sn := getPod(t, httpsClient(t, g.addr, "web.example.com", ca.Pool, true), "web.example.com"); sn != sn2 {
		t.Errorf("new connection got certificate %d, want the rotated %d (was %d)", sn, sn2, sn1)
	}
	roundTrip() // the connection of before the rotation still serves

	bad := &gatewayv1.Secret{Namespace: "default", Name: "web", CertificateChainPem: []byte("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n"), PrivateKeyPem: s2.PrivateKeyPem}
	err = g.e.Apply(ls, nil, bs, bad)
	if err == nil || !strings.Contains(err.Error(), "secret default/web") || !strings.Contains(err.Error(), "keeping its last good certificate") {
		t.Fatalf("apply of a malformed secret: error %v, want one naming the secret and keeping the last good certificate", err)
	}
	if _, _, sn := getPod(t, httpsClient(t, g.addr, "web.example.com", ca.Pool, false), "web.example.com"); sn != sn2 {
		t.Errorf("after a malformed secret, new connections got certificate %d, want the last good %d", sn, sn2)
	}
	roundTrip()
}

// startTLSEcho serves the echo handler over TLS with a certificate for
// names, as a passthrough backend.
func startTLSEcho(t testing.TB, ca *testCA, pod string, names ...string) netip.AddrPort {
	crt, key, _ := ca.Issue(t, names...)
	cert, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(echo.New(echo.Options{HTTPAddress: "127.0.0.1:0", Context: echo.Context{Pod: pod}}).Handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(srv.Listener.Addr().String())
}

// TLS passthrough: the ClientHello's server name picks the TLSRoute, the
// bytes go unchanged to a backend picked by weight, and the client
// verifies the backend's own certificate (the gateway holds none).
func TestTLSPassthrough(t *testing.T) {
	ca := newTestCA(t)
	ls := []*gatewayv1.Listener{tlsListenerProto("pass", "TLS", "Passthrough", "*.example.com", "pass")}
	ls[0].VirtualHosts[0].Routes[0].Backends = []*gatewayv1.BackendRef{ref("v1", 1), ref("v2", 3)}
	bs := []*gatewayv1.Backend{
		backend("v1", startTLSEcho(t, ca, "v1-pod", "db.example.com")),
		backend("v2", startTLSEcho(t, ca, "v2-pod", "db.example.com")),
	}
	g := startPort(t, FamilyTLS, 443, ls, bs)
	counts := map[string]int{}
	const n = 80
	for range n {
		c := httpsClient(t, g.addr, "db.example.com", ca.Pool, false)
		pod, _, _ := getPod(t, c, "db.example.com")
		counts[pod]++
		c.CloseIdleConnections()
	}
	// Weights 1:3; 80 draws put v2's share well inside (0.5, 0.95) unless
	// weights are ignored.
	if share := float64(counts["v2-pod"]) / n; counts["v1-pod"] == 0 || share < 0.5 || share > 0.95 {
		t.Errorf("connections per backend %v; want both, v2 about 3/4", counts)
	}

	// A server name no route serves: the connection is closed, logged.
	_, err := tls.Dial("tcp", g.addr, &tls.Config{ServerName: "other.test", RootCAs: ca.Pool})
	if err == nil {
		t.Fatal("handshake for an unrouted server name succeeded")
	}
	waitLog(t, g.log, "no listener for its server name")
}

// TLS listeners in mode Terminate forward the decrypted bytes (TLSRoute).
func TestTLSTerminateToTCP(t *testing.T) {
	ca := newTestCA(t)
	sec, _ := ca.secret(t, "db", "db.example.com")
	ls := []*gatewayv1.Listener{tlsListenerProto("db", "TLS", "Terminate", "db.example.com", "db", "db")}
	bs := []*gatewayv1.Backend{backend("db", tcpEcho(t))}
	g := startPort(t, FamilyTLS, 443, ls, bs, sec)
	c, err := tls.Dial("tcp", g.addr, &tls.Config{ServerName: "db.example.com", RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoCheck(t, c)
}

// tcpEcho runs ambit's TCP echo and returns its address.
func tcpEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := echo.New(echo.Options{TCPAddress: "127.0.0.1:0"})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	return netip.MustParseAddrPort(s.TCPAddr().String())
}

// echoCheck writes a line to c and expects it back.
func echoCheck(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := "hello through the gateway\n"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != msg {
		t.Fatalf("echo answered %q, %v; want %q", got, err, msg)
	}
}

// TCP listeners forward every connection to their TCPRoute's backend and
// log one access line per connection.
func TestTCPRoute(t *testing.T) {
	l := &gatewayv1.Listener{Name: "db", Port: 5432, Protocol: "TCP", VirtualHosts: []*gatewayv1.VirtualHost{{Hostname: "*",
		Routes: []*gatewayv1.Route{{Source: &gatewayv1.RouteSource{Kind: "TCPRoute", Namespace: "default", Name: "db"},
			Backends: []*gatewayv1.BackendRef{ref("db", 1)}}}}}}
	g := startPort(t, FamilyTCP, 5432, []*gatewayv1.Listener{l}, []*gatewayv1.Backend{backend("db", tcpEcho(t))})
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	echoCheck(t, c)
	c.Close()
	waitLog(t, g.log, `"service":"db.default.svc.cluster.local"`)
	waitLog(t, g.log, `"bytes_sent":26,"bytes_recv":26`)
}

// Bytes that are not TLS on a TLS port are refused with one log line.
func TestTLSPortRefusesPlaintext(t *testing.T) {
	ca := newTestCA(t)
	sec, _ := ca.secret(t, "web", "web.example.com")
	ls := []*gatewayv1.Listener{tlsListenerProto("web", "HTTPS", "Terminate", "", "web", "web")}
	g := startPort(t, FamilyTLS, 443, ls, []*gatewayv1.Backend{backend("web", startEcho(t, "web-pod"))}, sec)
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("plaintext on a TLS port: read %d bytes, %v; want the connection closed", n, err)
	}
	waitLog(t, g.log, "no TLS ClientHello")
}

// waitLog polls the log until it contains s.
func waitLog(t *testing.T, log *testkit.LogBuffer, s string) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", log.String())
		}
	}()
	testkit.Eventually(t, 5*time.Second, fmt.Sprintf("%q in the log", s), func() bool { return strings.Contains(log.String(), s) })
}

// An established TCP connection outlives configuration pushes; when the
// port closes, it gets the grace period and is then closed.
func TestTCPConnectionSurvivesPushesAndDrains(t *testing.T) {
	tcpListener := func(svc string) []*gatewayv1.Listener {
		return []*gatewayv1.Listener{{Name: "db", Port: 5432, Protocol: "TCP", VirtualHosts: []*gatewayv1.VirtualHost{{Hostname: "*",
			Routes: []*gatewayv1.Route{{Source: &gatewayv1.RouteSource{Kind: "TCPRoute", Namespace: "default", Name: "db"},
				Backends: []*gatewayv1.BackendRef{ref(svc, 1)}}}}}}}
	}
	bs := []*gatewayv1.Backend{backend("a", tcpEcho(t)), backend("b", tcpEcho(t))}
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Apply(tcpListener("a"), nil, bs); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.ServeListener(ctx, ln, 5432, FamilyTCP, 200*time.Millisecond) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoCheck(t, c)
	if err := e.Apply(tcpListener("b"), nil, bs); err != nil {
		t.Fatal(err)
	}
	echoCheck(t, c) // still connected to a after the route moved to b
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	echoCheck(t, c2)
	c2.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the port did not close within 5s of a 200ms grace period")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the connection still open after the grace period")
	}
}

// HTTP listeners sharing a port: the listener whose hostname best matches
// the Host header takes the request (exact, then wildcard, then none).
func TestHTTPListenersShareAPortByHost(t *testing.T) {
	httpListener := func(name, hostname, svc string) *gatewayv1.Listener {
		l := tlsListenerProto(name, "HTTP", "", hostname, svc)
		l.Port, l.Tls = 80, nil
		return l
	}
	ls := []*gatewayv1.Listener{
		httpListener("any", "", "any-svc"),
		httpListener("wild", "*.example.com", "wild-svc"),
		httpListener("exact", "a.example.com", "exact-svc"),
	}
	bs := []*gatewayv1.Backend{
		backend("any-svc", startEcho(t, "any-pod")),
		backend("wild-svc", startEcho(t, "wild-pod")),
		backend("exact-svc", startEcho(t, "exact-pod")),
	}
	g := startPort(t, FamilyHTTP, 80, ls, bs)
	for host, want := range map[string]string{"a.example.com": "exact-pod", "b.example.com": "wild-pod", "other.test": "any-pod"} {
		if r := g.do(t, http.DefaultClient, host, "/", nil); r.status != http.StatusOK || r.echo.Pod != want {
			t.Errorf("Host %s: %d from %q, want 200 from %s", host, r.status, r.echo.Pod, want)
		}
	}
}

// A handshake that cannot complete (here a client limited to TLS 1.1;
// listeners require 1.2) is refused with one log line naming the listener.
func TestTLSHandshakeFailureIsLogged(t *testing.T) {
	ca := newTestCA(t)
	sec, _ := ca.secret(t, "web", "web.example.com")
	ls := []*gatewayv1.Listener{tlsListenerProto("web", "HTTPS", "Terminate", "web.example.com", "web", "web")}
	g := startPort(t, FamilyTLS, 443, ls, []*gatewayv1.Backend{backend("web", startEcho(t, "web-pod"))}, sec)
	_, err := tls.Dial("tcp", g.addr, &tls.Config{ServerName: "web.example.com", RootCAs: ca.Pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	waitLog(t, g.log, `"msg":"proxy: TLS handshake failed","listener":"web","sni":"web.example.com"`)
}

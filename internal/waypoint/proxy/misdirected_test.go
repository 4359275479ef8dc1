package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"golang.org/x/net/http2"

	"github.com/ambitmesh/ambit/internal/echo"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// oneConn sends every request over one TLS connection with server name
// sni: HTTP/2 the way a client coalescing connections does, or HTTP/1.1
// keep-alive.
type oneConn struct {
	h2  *http2.ClientConn
	tc  *tls.Conn
	br  *bufio.Reader
	sni string
}

func dialOne(t *testing.T, g *gw, ca *testCA, sni string, h2 bool) *oneConn {
	t.Helper()
	proto := "http/1.1"
	if h2 {
		proto = "h2"
	}
	tc, err := tls.Dial("tcp", g.addr, &tls.Config{ServerName: sni, RootCAs: ca.Pool, NextProtos: []string{proto}})
	if err != nil {
		t.Fatalf("dial with SNI %s: %v", sni, err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	if got := tc.ConnectionState().NegotiatedProtocol; got != proto {
		t.Fatalf("ALPN %q, want %q", got, proto)
	}
	c := &oneConn{tc: tc, sni: sni}
	if h2 {
		if c.h2, err = (&http2.Transport{}).NewClientConn(tc); err != nil {
			t.Fatal(err)
		}
	} else {
		c.br = bufio.NewReader(tc)
	}
	return c
}

// get sends GET / with Host host and returns the status and the echo pod
// that answered ("" when none did).
func (c *oneConn) get(t *testing.T, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "https://"+host+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	var resp *http.Response
	if c.h2 != nil {
		resp, err = c.h2.RoundTrip(req)
	} else if err = req.Write(c.tc); err == nil {
		resp, err = http.ReadResponse(c.br, req)
	}
	if err != nil {
		t.Fatalf("SNI %s, Host %s: %v", c.sni, host, err)
	}
	defer resp.Body.Close()
	var body echo.Response
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("SNI %s, Host %s: %v", c.sni, host, err)
		}
	} else if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body.Pod
}

// A request whose Host a new connection would take to another listener of
// the port than its own connection's SNI did is answered 421, over
// HTTP/2 (a client coalescing names its certificate covers) and HTTP/1.1;
// the connection keeps serving its own names. A Host no other listener
// serves stays with the connection's listener (404 when its routes do not
// have it).
func TestMisdirectedRequests(t *testing.T) {
	ca := newTestCA(t)
	names := []string{"a.example.com", "*.example.com", "other.test", "*.other.test"}
	sec, _ := ca.secret(t, "cert", names...)
	exact := tlsListenerProto("exact", "HTTPS", "Terminate", "a.example.com", "exact-svc", "cert")
	wild := tlsListenerProto("wild", "HTTPS", "Terminate", "*.example.com", "wild-svc", "cert")
	pass := tlsListenerProto("pass", "TLS", "Passthrough", "p.example.com", "pass-svc")
	any := tlsListenerProto("any", "HTTPS", "Terminate", "", "any-svc", "cert")
	bs := []*gatewayv1.Backend{
		backend("exact-svc", startEcho(t, "exact-pod")),
		backend("wild-svc", startEcho(t, "wild-pod")),
		backend("any-svc", startEcho(t, "any-pod")),
		backend("pass-svc", tcpEcho(t)),
	}
	full := startPort(t, FamilyTLS, 443, []*gatewayv1.Listener{exact, wild, pass, any}, bs, sec)
	// Without a listener for every name, a Host none serves is the SNI
	// listener's to answer: 404 (the spec's MUST).
	noCatchAll := startPort(t, FamilyTLS, 443, []*gatewayv1.Listener{exact, wild}, bs, sec)
	type req struct {
		host   string
		status int
		pod    string
	}
	for _, tt := range []struct {
		g    *gw
		sni  string
		reqs []req
	}{
		{full, "a.example.com", []req{
			{"a.example.com", 200, "exact-pod"},
			{"b.example.com", 421, ""}, // the wildcard listener's
			{"other.test", 421, ""},    // the listener without hostname's
			{"p.example.com", 421, ""}, // a passthrough listener's
			{"A.Example.com:443", 200, "exact-pod"},
		}},
		{full, "b.example.com", []req{
			{"c.example.com", 200, "wild-pod"}, // same listener, another name
			{"a.example.com", 421, ""},
			{"x.other.test", 421, ""},
			{"b.example.com", 200, "wild-pod"},
		}},
		{full, "other.test", []req{
			{"x.other.test", 200, "any-pod"},
			{"a.example.com", 421, ""},
			{"c.example.com", 421, ""},
			{"other.test", 200, "any-pod"},
		}},
		{noCatchAll, "a.example.com", []req{
			{"other.test", 404, ""},
			{"b.example.com", 421, ""},
			{"a.example.com", 200, "exact-pod"},
		}},
	} {
		for _, h2 := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/h2=%v", tt.sni, h2), func(t *testing.T) {
				c := dialOne(t, tt.g, ca, tt.sni, h2)
				for _, r := range tt.reqs {
					if status, pod := c.get(t, r.host); status != r.status || pod != r.pod {
						t.Errorf("SNI %s, Host %s: %d from %q, want %d from %q", tt.sni, r.host, status, pod, r.status, r.pod)
					}
				}
			})
		}
	}
	// The access log tells them apart from routed requests.
	waitLog(t, full.log, `"authority":"b.example.com","path":"/","protocol":"HTTP/2.0","status":421`)
}

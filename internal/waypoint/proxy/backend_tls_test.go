package proxy

import (
	"encoding/json"
	"io"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/testkit"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// The engine's side of BackendTLSPolicy: verified TLS with pooled
// connections kept across an unchanged policy, a new pool when it changes,
// fail-closed without a CA (503 UF and one log line), and no TLS to an
// endpoint the dialer reaches over HBONE.
func TestBackendTLS(t *testing.T) {
	ca := newTestCA(t)
	up := startTLSEcho(t, ca, "tls", "secure.example")
	var overHBONE atomic.Bool
	b := backend("sec", up)
	spec := &gatewayv1.BackendTLS{Port: 80, Policy: &gatewayv1.ObjectRef{Namespace: "default", Name: "sec"}, Sni: "secure.example", CaPem: ca.PEM()}
	b.Tls = []*gatewayv1.BackendTLS{spec}
	routes := map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref("sec", 1))}}
	ls := []*gatewayv1.Listener{listener(routes, "*")}
	logs := &testkit.LogBuffer{}
	g := startGateway(t, Config{Logger: testLogger(logs), HBONE: func(netip.Addr) bool { return overHBONE.Load() }}, ls, []*gatewayv1.Backend{b})
	c := client(t)
	get := func() (int, string) {
		resp, err := c.Get("http://" + g.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// conn is the upstream connection (the proxy's address as the echo
	// saw it) of a request that must be verified TLS with the policy's SNI.
	conn := func() string {
		t.Helper()
		code, body := get()
		var r echo.Response
		if code != 200 || json.Unmarshal([]byte(body), &r) != nil || r.TLS == nil || r.TLS.ServerName != "secure.example" {
			t.Fatalf("got %d %s, want 200 from the TLS echo with SNI secure.example", code, body)
		}
		return r.RemoteAddr
	}
	pooled := conn()
	for range 2 {
		if got := conn(); got != pooled {
			t.Errorf("upstream connection %s, want the pooled %s", got, pooled)
		}
	}
	key := balKey{"default/sec", 80}
	first := g.e.cur.Load().backends[key].tls
	// The same policy again (a new message, equal): the pool is kept.
	same := backend("sec", up)
	same.Tls = []*gatewayv1.BackendTLS{{Port: 80, Policy: spec.Policy, Sni: spec.Sni, CaPem: spec.CaPem}}
	if err := g.e.Apply(ls, nil, []*gatewayv1.Backend{same}); err != nil {
		t.Fatal(err)
	}
	if g.e.cur.Load().backends[key].tls != first {
		t.Error("an unchanged policy got a new TLS transport")
	}
	if got := conn(); got != pooled {
		t.Errorf("after an unchanged policy: upstream connection %s, want the pooled %s", got, pooled)
	}

	// A policy trusting nothing (its CA references are invalid): 503 UF.
	none := backend("sec", up)
	none.Tls = []*gatewayv1.BackendTLS{{Port: 80, Policy: spec.Policy, Sni: spec.Sni}}
	if err := g.e.Apply(ls, nil, []*gatewayv1.Backend{none}); err != nil {
		t.Fatal(err)
	}
	code, body := get()
	if code != 503 || !strings.Contains(body, "TLS_error: the policy has no valid CA certificate") {
		t.Errorf("without a CA: %d %q, want 503 with the TLS error", code, body)
	}
	testkit.Eventually(t, 5*time.Second, "a UF access log line", func() bool { return strings.Contains(g.log.String(), `"flags":"UF"`) })
	if n := strings.Count(logs.String(), "proxy: upstream TLS handshake failed"); n != 1 {
		t.Errorf("%d handshake failure log lines for one failed request, want 1:\n%s", n, logs.String())
	}

	// An endpoint reached over HBONE gets no TLS of its own: the proxy
	// speaks plain HTTP, which this TLS-only backend refuses with a 400.
	overHBONE.Store(true)
	if err := g.e.Apply(ls, nil, []*gatewayv1.Backend{b}); err != nil {
		t.Fatal(err)
	}
	if code, body := get(); code != 400 || !strings.Contains(body, "HTTP request to an HTTPS server") {
		t.Errorf("over HBONE: %d %q, want the backend's 400 to plaintext", code, body)
	}
}

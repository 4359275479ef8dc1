package waypoint_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/testkit"
	"github.com/ambitmesh/ambit/internal/waypoint/tlstest"
)

// backendTLSTmpl: Gateway infra/edge (HTTP on %[1]d) routes to Service
// shop/secure, whose one endpoint serves TLS on 127.0.0.71:%[2]d with
// appProtocol %[3]q.
const backendTLSTmpl = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: ambit
  listeners:
  - {name: http, port: %[1]d, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: shop}
spec:
  selector: {app: secure}
  ports: [{name: https, port: 443, targetPort: https, appProtocol: %[3]q}]
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: secure-1, namespace: shop, labels: {app: secure}}
spec: {addresses: ["127.0.0.71"], node: node-a, serviceAccount: secure, ports: {https: %[2]d}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules: [{backendRefs: [{name: secure, port: 443}]}]
`

// policyYAML is a BackendTLSPolicy for shop/secure trusting caPEM, with
// the given hostname and extra validation lines (subjectAltNames).
func policyYAML(caPEM []byte, hostname, extra string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: secure-ca, namespace: shop}
data:
  ca.crt: |
    %s
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: secure, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: secure, sectionName: https}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: secure-ca}]
    hostname: %s
%s`, strings.ReplaceAll(strings.TrimSpace(string(caPEM)), "\n", "\n    "), hostname, extra)
}

// startTLSEcho serves the echo handler over TLS on ip with cert, offering
// ALPN h2 and http/1.1, and returns its port.
func startTLSEcho(t *testing.T, ip string, certPEM, keyPEM []byte) int {
	t.Helper()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	srv := &http.Server{Handler: echo.New(echo.Options{Context: echo.Context{Pod: "secure-1"}}).Handler(), Protocols: &p,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("TLS echo: %v", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

type tlsAnswer struct {
	status int
	body   string
	echo   echo.Response
}

func getSecure(c *http.Client, addr string) (tlsAnswer, error) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Host = "app.example.com"
	resp, err := c.Do(req)
	if err != nil {
		return tlsAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return tlsAnswer{}, err
	}
	a := tlsAnswer{status: resp.StatusCode, body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &a.echo); err != nil {
			return a, fmt.Errorf("decode %q: %w", b, err)
		}
	}
	return a, nil
}

// The whole path: BackendTLSPolicy and CA ConfigMap in the config folder,
// the control plane serving them to `ambit gateway`, which verifies the
// backend and applies every edit live: a wrong CA, a wrong hostname and a
// SAN mismatch answer 503 UF with one log line, subjectAltNames replace the
// hostname for verification, and removing the policy goes back to plain.
func TestGatewayBackendTLSPolicy(t *testing.T) {
	for _, tc := range []struct {
		appProtocol, alpn string
	}{{"https", "http/1.1"}, {"kubernetes.io/h2c", "h2"}} {
		t.Run(tc.alpn, func(t *testing.T) { testBackendTLS(t, tc.appProtocol, tc.alpn) })
	}
}

func testBackendTLS(t *testing.T, appProtocol, alpn string) {
	ca, otherCA := tlstest.NewCA(t), tlstest.NewCA(t)
	crt, key, _ := ca.Issue(t, "secure.shop.example")
	backend := startTLSEcho(t, "127.0.0.71", crt, key)
	caPEM := ca.PEM()

	dir, port := t.TempDir(), freePort(t)
	writeFile(t, filepath.Join(dir, "mesh.yaml"), fmt.Sprintf(backendTLSTmpl, port, backend, appProtocol))
	policyPath := filepath.Join(dir, "policy.yaml")
	writeFile(t, policyPath, policyYAML(caPEM, "secure.shop.example", ""))
	cp := controltest.Start(t, dir)
	logs := &testkit.LogBuffer{}
	runGateway(t, t.Context(), cp, slog.New(slog.NewJSONHandler(logs, nil)))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := &http.Client{Timeout: 5 * time.Second}

	verified := func(what string) {
		t.Helper()
		eventually(t, what, func() bool {
			a, err := getSecure(c, addr)
			return err == nil && a.status == 200 && a.echo.Pod == "secure-1" && a.echo.TLS != nil &&
				a.echo.TLS.ServerName == "secure.shop.example" && a.echo.TLS.NegotiatedProtocol == alpn
		})
	}
	refused := func(what string) {
		t.Helper()
		eventually(t, what, func() bool {
			a, err := getSecure(c, addr)
			return err == nil && a.status == 503 && strings.Contains(a.body, "TLS_error")
		})
	}
	verified("TLS to the backend, verified with the policy's CA, SNI from its hostname")

	writeFile(t, policyPath, policyYAML(otherCA.PEM(), "secure.shop.example", ""))
	refused("503 once the policy trusts another CA")
	if !strings.Contains(logs.String(), `"flags":"UF"`) {
		t.Errorf("access log has no UF line for the failed verification:\n%.2000s", logs.String())
	}

	writeFile(t, policyPath, policyYAML(caPEM, "other.shop.example", ""))
	refused("503 when the certificate does not hold the policy's hostname")

	// subjectAltNames replace the hostname for verification: the SNI is
	// other.shop.example, the certificate matches the SAN.
	writeFile(t, policyPath, policyYAML(caPEM, "other.shop.example",
		"    subjectAltNames: [{type: Hostname, hostname: secure.shop.example}]\n"))
	eventually(t, "a SAN match with another SNI", func() bool {
		a, err := getSecure(c, addr)
		return err == nil && a.status == 200 && a.echo.TLS != nil && a.echo.TLS.ServerName == "other.shop.example"
	})
	writeFile(t, policyPath, policyYAML(caPEM, "secure.shop.example",
		"    subjectAltNames: [{type: URI, uri: spiffe://example.org/ns/shop/sa/secure}]\n"))
	refused("503 when the certificate holds none of the subjectAltNames")

	writeFile(t, policyPath, policyYAML(caPEM, "secure.shop.example", ""))
	verified("verified again after the fix")

	// Without a policy the gateway speaks plain HTTP (or h2c) to the port:
	// the TLS backend answers HTTP/1.1 with its own 400, which an h2c
	// client cannot parse (503, no TLS involved).
	if err := os.Remove(policyPath); err != nil {
		t.Fatal(err)
	}
	eventually(t, "plaintext once the policy is removed", func() bool {
		a, err := getSecure(c, addr)
		if err != nil {
			return false
		}
		if alpn == "h2" {
			return a.status == 503 && !strings.Contains(a.body, "TLS_error")
		}
		return a.status == 400 && strings.Contains(a.body, "HTTP request to an HTTPS server")
	})
}

package waypoint_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/waypoint/tlstest"
)

// tlsMeshTmpl: Gateway infra/edge with an HTTPS listener (%[1]d) for
// app.example.com terminating with Secret infra/app-cert, and a TCP
// listener (%[2]d) whose TCPRoute goes to the TCP echo of db.
const tlsMeshTmpl = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: ambit
  listeners:
  - name: https
    port: %[1]d
    protocol: HTTPS
    hostname: app.example.com
    tls: {certificateRefs: [{name: app-cert}]}
    allowedRoutes: {namespaces: {from: All}}
  - {name: db, port: %[2]d, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: tcp, port: 5432, targetPort: tcp}]
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {addresses: ["127.0.0.61"], node: node-a, serviceAccount: web, ports: {http: %[3]d}}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec: {addresses: ["127.0.0.62"], node: node-a, serviceAccount: db, ports: {tcp: %[4]d}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra, sectionName: db}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
`

func secretYAML(crt, key []byte) string {
	indent := func(b []byte) string {
		return "    " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n    ")
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: app-cert, namespace: infra}
type: kubernetes.io/tls
stringData:
  tls.crt: |
%s
  tls.key: |
%s
`, indent(crt), indent(key))
}

// The whole path: certificates from a Secret in the config folder reach the
// gateway over xDS, HTTPS is served over HTTP/2 and HTTP/1.1, a rotated
// Secret applies to new connections, a botched one keeps the last good
// certificate, the admin dump never shows a key, and a TCP listener
// forwards to its TCPRoute.
func TestGatewayServesTLSAndTCPFromControlPlane(t *testing.T) {
	webPort := startEcho(t, "127.0.0.61", "web-1")
	dbPort := runEcho(t, echo.Options{TCPAddress: "127.0.0.62:0"}).TCPAddr().(*net.TCPAddr).Port

	ca := tlstest.NewCA(t)
	crt1, key1, sn1 := ca.Issue(t, "app.example.com")
	httpsPort, tcpPort := freePort(t), freePort(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), fmt.Sprintf(tlsMeshTmpl, httpsPort, tcpPort, webPort, dbPort))
	secretPath := filepath.Join(dir, "secret.yaml")
	writeFile(t, secretPath, secretYAML(crt1, key1))

	ctx := t.Context()
	cp := controltest.Start(t, dir)
	g := runGateway(t, ctx, cp, discard)
	httpsAddr := fmt.Sprintf("127.0.0.1:%d", httpsPort)

	// get returns the serial of the certificate served and the pod that
	// answered, over a fresh connection.
	get := func(h2 bool) (serial int64, pod string, err error) {
		var p http.Protocols
		p.SetHTTP1(!h2)
		p.SetHTTP2(h2)
		tr := &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		req, _ := http.NewRequest("GET", "https://app.example.com/", nil)
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
		}
		r, err := getVia(c, req)
		if err != nil {
			return 0, "", err
		}
		if want := map[bool]int{true: 2, false: 1}[h2]; r.protoMajor != want {
			return 0, "", fmt.Errorf("spoke HTTP/%d, want HTTP/%d", r.protoMajor, want)
		}
		return r.serial, r.pod, nil
	}
	for _, h2 := range []bool{true, false} {
		sn, pod, err := get(h2)
		if err != nil || sn != sn1 || pod != "web-1" {
			t.Fatalf("h2=%v: certificate %d from %q (%v), want %d from web-1", h2, sn, pod, err, sn1)
		}
	}

	t.Run("tcp", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatal(err)
		}
		if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "ping\n" {
			t.Fatalf("tcp echo answered %q, %v", got, err)
		}
	})

	t.Run("admin dump hides keys", func(t *testing.T) {
		resp, err := http.Get("http://" + g.Addr("admin").String() + "/config_dump")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "infra/app-cert") || strings.Contains(string(b), string(key1[40:80])) || !strings.Contains(string(b), "(redacted)") {
			t.Errorf("config_dump must list infra/app-cert with its key redacted:\n%.3000s", b)
		}
	})

	t.Run("rotation", func(t *testing.T) {
		crt2, key2, sn2 := ca.Issue(t, "app.example.com")
		writeFile(t, secretPath, secretYAML(crt2, key2))
		eventually(t, "the rotated certificate on new connections", func() bool {
			sn, _, err := get(true)
			return err == nil && sn == sn2
		})
		// A botched rotation: the gateway reports it and keeps serving.
		writeFile(t, secretPath, secretYAML([]byte("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----"), key2))
		eventually(t, "the gateway reporting the malformed Secret", func() bool {
			resp, err := http.Get("http://" + g.Addr("admin").String() + "/config_dump")
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return strings.Contains(string(b), "secret infra/app-cert") && strings.Contains(string(b), "keeping its last good certificate")
		})
		if sn, pod, err := get(false); err != nil || sn != sn2 || pod != "web-1" {
			t.Errorf("after a botched rotation: certificate %d from %q (%v), want the last good %d", sn, pod, err, sn2)
		}
	})
}

type tlsReply struct {
	serial     int64
	pod        string
	protoMajor int
}

func getVia(c *http.Client, req *http.Request) (tlsReply, error) {
	resp, err := c.Do(req)
	if err != nil {
		return tlsReply{}, err
	}
	defer resp.Body.Close()
	var e echo.Response
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return tlsReply{}, err
	}
	return tlsReply{serial: resp.TLS.PeerCertificates[0].SerialNumber.Int64(), pod: e.Pod, protoMajor: resp.ProtoMajor}, nil
}

package waypoint_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/testkit"
	"github.com/ambitmesh/ambit/internal/waypoint"
)

const meshTmpl = `
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
metadata: {name: web-v1, namespace: shop}
spec:
  clusterIP: 240.240.0.21
  selector: {app: web, version: v1}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  selector: {app: web, version: v2}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-v1-1, namespace: shop, labels: {app: web, version: v1}}
spec: {addresses: ["127.0.0.51"], node: node-a, serviceAccount: web, ports: {http: %[2]d}}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-v2-1, namespace: shop, labels: {app: web, version: v2}}
spec: {addresses: ["127.0.0.52"], node: node-a, serviceAccount: web, ports: {http: %[3]d}}
`

// routeTmpl: header x-region: eu goes to %[1]s; the rest splits 90/10.
const routeTmpl = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [app.example.com]
  rules:
  - matches: [{headers: [{name: x-region, value: eu}]}]
    backendRefs: [{name: %[1]s, port: 80}]
  - backendRefs:
    - {name: web-v1, port: 80, weight: 90}
    - {name: web-v2, port: 80, weight: 10}
`

type reply struct {
	status int
	pod    string
}

func get(c *http.Client, addr, host string, hdr map[string]string) (reply, error) {
	return getPath(c, addr, host, "/", hdr)
}

func getPath(c *http.Client, addr, host, path string, hdr map[string]string) (reply, error) {
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		return reply{}, err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	r := reply{status: resp.StatusCode}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var e echo.Response
		if err := json.Unmarshal(b, &e); err != nil {
			return r, fmt.Errorf("decode %q: %w", b, err)
		}
		r.pod = e.Pod
	}
	return r, nil
}

func TestGatewayRoutesFromControlPlane(t *testing.T) {
	e := startEdge(t, "route.yaml", fmt.Sprintf(routeTmpl, "web-v2"))
	routePath, port, addr := filepath.Join(e.dir, "route.yaml"), e.port, e.addr()
	logs := &testkit.LogBuffer{}
	g := runGateway(t, t.Context(), e.cp, slog.New(slog.NewJSONHandler(logs, nil)))

	if got := g.ListenerAddrs(); len(got) != 1 || got[uint32(port)] == nil || got[uint32(port)].String() != addr {
		t.Fatalf("listeners %v, want only port %d on %s", got, port, addr)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	t.Run("endpoints", func(t *testing.T) {
		for _, tc := range []struct{ name, url, want string }{
			{"readiness", "http://" + g.Addr("readiness").String() + "/healthz/ready", "ready"},
			{"metrics", "http://" + g.Addr("metrics").String() + "/metrics", "go_goroutines"},
			{"config_dump", "http://" + g.Addr("admin").String() + "/config_dump", fmt.Sprintf(`"%d": "%s"`, port, addr)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := c.Get(tc.url)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(tc.want)) {
					t.Errorf("GET %s = %d, want 200 with %q in:\n%.2000s", tc.url, resp.StatusCode, tc.want, b)
				}
			})
		}
	})

	t.Run("routing", func(t *testing.T) {
		for _, tc := range []struct {
			name, host string
			hdr        map[string]string
			status     int
			pod        string
		}{
			{"header match", "app.example.com", map[string]string{"x-region": "eu"}, 200, "v2"},
			{"unknown host", "other.example.com", nil, 404, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r, err := get(c, addr, tc.host, tc.hdr)
				if err != nil {
					t.Fatal(err)
				}
				if r.status != tc.status || r.pod != tc.pod {
					t.Errorf("got %d from %q, want %d from %q", r.status, r.pod, tc.status, tc.pod)
				}
			})
		}
	})

	t.Run("split", func(t *testing.T) {
		const n = 1000
		count := map[string]int{}
		for range n {
			r, err := get(c, addr, "app.example.com", nil)
			if err != nil || r.status != 200 {
				t.Fatalf("%v %d", err, r.status)
			}
			count[r.pod]++
		}
		// 90/10 over 1000: mean 100, sd ~9.5; 5 sd either side.
		if count["v2"] < 52 || count["v2"] > 148 || count["v1"]+count["v2"] != n {
			t.Errorf("split %v, want about 900/100", count)
		}
	})

	t.Run("access log and metrics", func(t *testing.T) {
		if !strings.Contains(logs.String(), `"flags":"NR"`) {
			t.Errorf("access log has no NR line for the unknown host:\n%.1000s", logs.String())
		}
		resp, err := c.Get("http://" + g.Addr("metrics").String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(b, []byte("istio_requests_total{")) {
			t.Errorf("metrics have no istio_requests_total")
		}
	})

	t.Run("route change applies live", func(t *testing.T) {
		// Load runs through the edit; every request must succeed.
		var (
			wg       sync.WaitGroup
			stop     atomic.Bool
			sent     atomic.Int64
			failures = make(chan string, 16)
		)
		for range 4 {
			wg.Go(func() {
				for !stop.Load() {
					r, err := get(c, addr, "app.example.com", nil)
					sent.Add(1)
					if err != nil || r.status != 200 {
						select {
						case failures <- fmt.Sprintf("%d %v", r.status, err):
						default:
						}
					}
				}
			})
		}
		writeFile(t, routePath, fmt.Sprintf(routeTmpl, "web-v1"))
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := get(c, addr, "app.example.com", map[string]string{"x-region": "eu"})
			if err != nil {
				t.Fatal(err)
			}
			if r.status == 200 && r.pod == "v1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("x-region: eu still served by %q (%d) 10s after the route edit", r.pod, r.status)
			}
			time.Sleep(10 * time.Millisecond)
		}
		stop.Store(true)
		wg.Wait()
		close(failures)
		for f := range failures {
			t.Errorf("request during reload failed: %s", f)
		}
		if sent.Load() == 0 {
			t.Error("no load was sent during the reload")
		}
	})

	t.Run("listener port change", func(t *testing.T) {
		newPort := freePort(t)
		writeFile(t, filepath.Join(e.dir, "mesh.yaml"), fmt.Sprintf(meshTmpl, newPort, e.v1, e.v2))
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := g.ListenerAddrs()
			if len(got) == 1 && got[uint32(newPort)] != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("listeners %v 10s after moving the listener to %d", got, newPort)
			}
			time.Sleep(10 * time.Millisecond)
		}
		tr.CloseIdleConnections()
		if r, err := get(c, fmt.Sprintf("127.0.0.1:%d", newPort), "app.example.com", map[string]string{"x-region": "eu"}); err != nil || r.pod != "v1" {
			t.Errorf("new port: %v %+v, want v1", err, r)
		}
		if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			t.Errorf("old port %s still accepts connections", addr)
		}
	})
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts waypoint.Options
		want []string
	}{
		{"empty", waypoint.Options{}, []string{"control plane address", "gateway (namespace/name)", "join token", "CA pin"}},
		{"gateway without namespace", waypoint.Options{ControlPlane: "x:1", Gateway: "edge", Token: "t", CAPin: "p"}, []string{`gateway "edge": want <namespace>/<name>`}},
		{"bad trust domain", waypoint.Options{ControlPlane: "x:1", Gateway: "a/b", Token: "t", CAPin: "p", TrustDomain: "Bad Domain"}, []string{"trust domain"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := waypoint.New(tc.opts)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

package waypoint_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/proxyboot"
	"github.com/ambitmesh/ambit/internal/waypoint"
	"github.com/ambitmesh/ambit/internal/xdsclient"
)

const waypointMesh = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web-waypoint, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {ambit.dev/use-waypoint: web-waypoint}
spec:
  clusterIP: 240.240.0.20
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, appProtocol: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{headers: [{name: x-region, value: eu}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - backendRefs: [{name: web-v1, port: 80}]
`

// TestWaypointServesHBONE: a node identity CONNECTs to the waypoint with a
// bound service's VIP:port and speaks HTTP inside the tunnel; the GAMMA
// route picks the backend.
func TestWaypointServesHBONE(t *testing.T) {
	v1, v2 := startEcho(t, "127.0.0.51", "v1"), startEcho(t, "127.0.0.52", "v2")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), fmt.Sprintf(meshTmpl, freePort(t), v1, v2))
	writeFile(t, filepath.Join(dir, "waypoint.yaml"), waypointMesh)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp := startControl(t, ctx, dir)
	wtok := token(t, cp, "gateway/shop/web-waypoint")
	g, err := waypoint.New(waypoint.Options{
		ControlPlane: cp.XDSAddr().String(), Gateway: "shop/web-waypoint", Token: wtok.Token, CAPin: wtok.CAPin, TrustDomain: wtok.TrustDomain,
		Waypoint: true, HBONEAddress: "127.0.0.1", HBONEPort: uint16(freePort(t)), PlaintextUpstreams: true,
		AdminAddress: "127.0.0.1:0", MetricsAddress: "-", ReadinessAddress: "-",
		Logger: discard, XDSBackoff: xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithCancel(ctx)
	gDone := make(chan error, 1)
	go func() { gDone <- g.Run(gctx) }()
	defer func() {
		gcancel()
		if err := <-gDone; err != nil {
			t.Errorf("waypoint: %v", err)
		}
	}()
	waitFor(t, "waypoint", []<-chan struct{}{g.Ready(), g.Synced()}, gDone)

	// The client is a node proxy: joined with a node token.
	td := spiffeid.RequireTrustDomainFromString(wtok.TrustDomain)
	nodeID, _ := identity.NodeID(td, "node-a")
	ntok := token(t, cp, "node/node-a")
	sess, err := proxyboot.Join(ctx, proxyboot.Options{ControlPlane: cp.XDSAddr().String(), Token: ntok.Token, CAPin: ntok.CAPin, ID: nodeID,
		NodeID: "node/node-a", TypeURLs: waypoint.TypeURLs, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	d, err := hbone.NewDialer(hbone.DialerConfig{Source: sess.Certs, Bundle: sess.Bundle, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	wpID, _ := identity.WorkloadID(td, "shop", "web-waypoint")
	hboneAddr := netip.MustParseAddrPort(g.Addr("hbone").String())

	for _, tc := range []struct {
		name, authority string
		hdr             map[string]string
		status          int // CONNECT refused with this code, or the HTTP status inside
		pod             string
	}{
		{"default rule", "240.240.0.20:80", nil, 200, "v1"},
		{"header match", "240.240.0.20:80", map[string]string{"x-region": "eu"}, 200, "v2"},
		{"unknown authority", "240.240.0.99:80", nil, 400, ""},
		// web-v1 is a route backend in the snapshot, not bound to the waypoint.
		{"route backend's VIP", "240.240.0.21:80", nil, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := d.Dial(ctx, &hbone.DialRequest{Address: hboneAddr, Authority: tc.authority, Source: nodeID, Destination: []spiffeid.ID{wpID}})
			var se *hbone.StatusError
			if errors.As(err, &se) {
				if se.Code != tc.status || tc.pod != "" {
					t.Fatalf("CONNECT %s: %v, want HTTP %d inside", tc.authority, err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req, _ := http.NewRequest("GET", "http://web.shop.svc.cluster.local/", nil)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			if err := req.Write(conn); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var e echo.Response
			_ = json.Unmarshal(b, &e)
			if resp.StatusCode != tc.status || e.Pod != tc.pod {
				t.Errorf("got %d from %q, want %d from %q (%s)", resp.StatusCode, e.Pod, tc.status, tc.pod, b)
			}
		})
	}
}

package waypoint_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/testkit"
)

const imBackendIP = "127.0.0.91"

// ingressMeshTmpl: an ingress Gateway routing to web, whose one endpoint
// is served by node proxy node-b. %[1]d is the listener port, %[2]d the
// echo port.
const ingressMeshTmpl = `
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
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {addresses: ["` + imBackendIP + `"], node: node-b, serviceAccount: web, ports: {http: %[2]d}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`

// TestIngressGatewayMeshUpstreams: with MeshUpstreams (--mesh-upstreams)
// `ambit gateway` reaches a mesh endpoint through its node proxy over
// HBONE, and the node proxy sees the gateway's identity as the peer.
func TestIngressGatewayMeshUpstreams(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), fmt.Sprintf(ingressMeshTmpl, port, startEcho(t, imBackendIP, "web-1")))
	hbonePort := testkit.CommonPort(t, imBackendIP)
	ctx := t.Context()
	cp := controltest.Start(t, dir)
	node := startNode(t, ctx, cp, "node-b", hbonePort, nil)
	eventually(t, "node-b to serve HBONE on its workload", func() bool {
		return slices.Contains(node.proxy.InboundAddrs(), netip.AddrPortFrom(netip.MustParseAddr(imBackendIP), hbonePort))
	})

	opts := gatewayOptions(t, cp, "infra/edge")
	opts.ListenAddress, opts.MeshUpstreams, opts.UpstreamHBONEPort = "127.0.0.1", true, hbonePort
	_, stop := serve(t, ctx, opts)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	r, err := get(&http.Client{Transport: tr, Timeout: 10 * time.Second}, fmt.Sprintf("127.0.0.1:%d", port), "app.example.com", nil)
	if err != nil || r.status != 200 || r.pod != "web-1" {
		t.Fatalf("through the gateway: %d from %q, %v; want 200 from web-1", r.status, r.pod, err)
	}

	// The tunnel is pooled; node-b logs it when the gateway closes it.
	stop()
	edge, _ := identity.WorkloadID(spiffeid.RequireTrustDomainFromString(opts.TrustDomain), "infra", "edge")
	eventually(t, "node-b's inbound line with the gateway as the peer", func() bool {
		for _, l := range node.access.Records(t) {
			src, _ := l["src"].(map[string]any)
			dst, _ := l["dst"].(map[string]any)
			if l["direction"] == "inbound" && src["identity"] == edge.String() && dst["workload"] == "web-1" {
				return true
			}
		}
		return false
	})
}

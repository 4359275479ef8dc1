package demo

import (
	"fmt"
	"net/netip"
	"strings"
)

// The demo's application: Istio's Bookinfo shape, every service an `ambit echo`.
const (
	namespace   = "shop"
	servicePort = 9080 // every service's port
	appPort     = 8080 // the echo's HTTP port (targetPort)
	waypoint    = "reviews-waypoint"
	trustDomain = "cluster.local"
)

// workload is one pod of the demo.
type workload struct {
	name, app, version, sa, node string
	ip                           netip.Addr // set by the layout
}

// workloads returns the demo's pods; the callers (productpage, reviews v1) sit on node-1 with one
// reviews pod, ratings and reviews v2 on node-2, so calls cross nodes and stay local alike.
func workloads() []workload {
	return []workload{
		{name: "productpage-1", app: "productpage", sa: "productpage", node: "node-1"},
		{name: "reviews-v1-1", app: "reviews", version: "v1", sa: "reviews", node: "node-1"},
		{name: "reviews-v2-1", app: "reviews", version: "v2", sa: "reviews", node: "node-2"},
		{name: "ratings-1", app: "ratings", sa: "ratings", node: "node-2"},
	}
}

// services in VIP order: 10.96.42.10, .11, ...
var services = []struct{ name, selector string }{
	{"productpage", "{app: productpage}"},
	{"reviews", "{app: reviews}"},
	{"reviews-v1", "{app: reviews, version: v1}"},
	{"reviews-v2", "{app: reviews, version: v2}"},
	{"ratings", "{app: ratings}"},
}

func vip(service string) netip.AddrPort {
	for i, s := range services {
		if s.name == service {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 96, 42, byte(10 + i)}), servicePort)
		}
	}
	panic("demo: unknown service " + service)
}

func spiffeID(sa string) string { return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + sa }

func hostname(service string) string { return service + "." + namespace + ".svc.cluster.local" }

// meshYAML is the config folder's mesh.yaml: namespace, pods, services, the waypoint and the
// reviews route (90/10 split, x-region: eu to v2).
func meshYAML(ws []workload, waypointIP netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", namespace)
	for _, w := range ws {
		labels := "app: " + w.app
		if w.version != "" {
			labels += ", version: " + w.version
		}
		fmt.Fprintf(&b, `---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: %s, namespace: %s, labels: {%s}}
spec: {serviceAccount: %s, addresses: ["%s"], node: %s}
`, w.name, namespace, labels, w.sa, w.ip, w.node)
	}
	for _, s := range services {
		bind := ""
		if s.name == "reviews" {
			bind = "\n  labels: {ambit.dev/use-waypoint: " + waypoint + "}"
		}
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: %s%s
spec:
  clusterIP: %s
  selector: %s
  ports: [{name: http, port: %d, targetPort: %d, appProtocol: http}]
`, s.name, namespace, bind, vip(s.name).Addr(), s.selector, servicePort, appPort)
	}
	fmt.Fprintf(&b, `---
# The waypoint: L7 routing for the services bound to it (reviews).
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  gatewayClassName: ambit-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
# The waypoint's pod. Waypoints are not captured by a node proxy, so it names a node without one.
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: %[1]s-1, namespace: %[2]s, labels: {gateway.networking.k8s.io/gateway-name: %[1]s}}
spec: {serviceAccount: %[1]s, addresses: ["%[3]s"], node: waypoint-host}
---
# Canary: x-region: eu goes to v2, everything else splits 90/10.
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: %[2]s}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: %[4]d}]
  rules:
  - matches: [{headers: [{name: x-region, value: eu}]}]
    backendRefs: [{name: reviews-v2, port: %[4]d}]
  - backendRefs:
    - {name: reviews-v1, port: %[4]d, weight: 90}
    - {name: reviews-v2, port: %[4]d, weight: 10}
`, waypoint, namespace, waypointIP, servicePort)
	return b.String()
}

// denyPolicyYAML denies the callers with service account sa when they reach ratings (enforced by
// ratings' node proxy).
func denyPolicyYAML(name, sa string) string {
	return fmt.Sprintf(`apiVersion: ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %s, namespace: %s}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules:
  - from: [{source: {principals: ["%s/ns/%s/sa/%s"]}}]
`, name, namespace, trustDomain, namespace, sa)
}

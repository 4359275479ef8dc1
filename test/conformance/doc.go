// Package conformance runs the Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, the version matching go.mod's
// gateway-api) against ambit in file mode, on loopback, without root.
//
// The upstream test functions run unchanged. What they expect of a cluster
// is played by an adapter: a Kubernetes client whose objects live in memory
// and are written to the control plane's config folder on every change,
// whose Gateway/HTTPRoute/GatewayClass status is read from the control
// plane's translation (what `ambit translate` and `ambit status` show), and
// whose Deployments are `ambit echo` servers on 127.B.x.y registered as
// ambit Workloads. Each Gateway of class ambit gets its own `ambit gateway`
// (same code, in process) on its own loopback address, with its listener
// ports opened on unprivileged local ports (--port-map).
//
// The mesh cases exec the echo client in a pod; the adapter's pods/exec
// sends the request through that pod's node proxy (explicit mode, one per
// mesh pod) to the Service VIP, so it crosses the waypoint bound to the
// mesh namespace and the echo pod's node proxy, and prints the answer in
// the echo client's format. See docs/conformance.md.
package conformance

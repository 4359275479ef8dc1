package conformance_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"

	"github.com/ambitmesh/ambit/api/v1alpha1"
	"github.com/ambitmesh/ambit/internal/control/translate"
	"github.com/ambitmesh/ambit/internal/node"
	"github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/waypoint"
	"github.com/ambitmesh/ambit/internal/xdsclient"
)

// The mesh cases' layout, in explicit mode on loopback (what `ambit demo`
// does without root): every echo pod of the mesh namespaces is a node of
// its own, its node proxy serving HBONE on the pod's address and an HTTP
// CONNECT proxy for the pod's outbound calls on the pod's address,
// meshProxyPort. The mesh namespace is bound to one waypoint, so the GAMMA
// routes (parentRef: a Service) apply there. A client request goes
// client -> its node proxy -> HBONE -> waypoint -> HBONE -> the echo pod's
// node proxy -> echo.
const (
	meshProxyPort = 15080
	meshWaypoint  = "waypoint"
)

// waypointIP is the waypoint's address, in the run's block.
func (e *env) waypointIP() string { return fmt.Sprintf("127.%d.30.1", e.block) }

// isMeshNamespace: the namespaces of the suite's mesh manifests.
func isMeshNamespace(ns string) bool {
	return ns == suite.MeshNamespace || ns == suite.MeshConsumerNamespace
}

// meshNamespaceLabels are what a user of ambit puts on the mesh namespace
// to send its services' traffic through the waypoint. The suite's manifests
// carry no mesh-specific labels at all (neither ambit's nor Istio's
// istio.io/use-waypoint, which ambit also reads), so the binding is added.
func meshNamespaceLabels(ns string) map[string]string {
	if ns != suite.MeshNamespace {
		return nil
	}
	return map[string]string{translate.LabelUseWaypoint: meshWaypoint}
}

// waypointObjects are the waypoint Gateway of the mesh namespace, as a user
// creates it before running the mesh cases.
func waypointGateway() *gwv1.Gateway {
	return &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: meshWaypoint, Namespace: suite.MeshNamespace},
		Spec: gwv1.GatewaySpec{GatewayClassName: translate.ClassNameWaypoint,
			Listeners: []gwv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}}},
	}
}

// waypointWorkload is the waypoint's pod: its address is where node
// proxies tunnel traffic for bound services.
func waypointWorkload(ip string) v1alpha1.Workload {
	return v1alpha1.Workload{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Workload"},
		ObjectMeta: metav1.ObjectMeta{Name: meshWaypoint + "-1", Namespace: suite.MeshNamespace,
			Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": meshWaypoint}},
		Spec: v1alpha1.WorkloadSpec{Addresses: []string{ip}, Node: "waypoint-host", ServiceAccount: meshWaypoint},
	}
}

// startWaypoint runs the mesh namespace's `ambit waypoint` on waypointIP;
// its Workload is written with the next sync.
func (e *env) startWaypoint() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	nn := types.NamespacedName{Namespace: suite.MeshNamespace, Name: meshWaypoint}
	tok, err := e.token("gateway/" + nn.Namespace + "/" + nn.Name)
	if err != nil {
		return err
	}
	w, err := waypoint.New(waypoint.Options{
		ControlPlane: e.cp.XDSAddr().String(), Gateway: nn.String(), Token: tok.Token, CAPin: tok.CAPin, TrustDomain: tok.TrustDomain,
		Waypoint: true, HBONEAddress: e.waypointIP(),
		AdminAddress: "-", MetricsAddress: "-", ReadinessAddress: "-",
		ShutdownGrace: 100 * time.Millisecond,
		Logger:        e.log.With("proc", "waypoint/"+nn.String()),
		AccessLog:     e.log.With("proc", "waypoint/"+nn.String(), "access", true),
		XDSBackoff:    xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		return err
	}
	if err := e.runUntilClose("waypoint "+nn.String(), w.Run, w.Ready()); err != nil {
		return err
	}
	e.waypoint = true
	return nil
}

// podIP is the address of pod namespace/name, "" when there is none.
func (e *env) podIP(namespace, name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for nn, pods := range e.backends {
		for _, p := range pods {
			if nn.Namespace == namespace && p.name == name {
				return p.ip
			}
		}
	}
	return ""
}

// startNodeProxy runs the node proxy of mesh pod p (its node is named after
// it) with its explicit-mode CONNECT proxy on p.ip:meshProxyPort.
func (e *env) startNodeProxy(namespace string, p pod) error {
	tok, err := e.token("node/" + p.node)
	if err != nil {
		return err
	}
	n, err := node.New(node.Options{
		ControlPlane: e.cp.XDSAddr().String(), Node: p.node, Token: tok.Token, CAPin: tok.CAPin, TrustDomain: tok.TrustDomain,
		HTTPProxies:  []proxy.HTTPProxy{{Listen: netip.MustParseAddrPort(fmt.Sprintf("%s:%d", p.ip, meshProxyPort)), Source: namespace + "/" + p.name}},
		AdminAddress: "-", MetricsAddress: "-", ReadinessAddress: "-",
		Logger:     e.log.With("proc", "node/"+p.node),
		AccessLog:  e.log.With("proc", "node/"+p.node, "access", true),
		XDSBackoff: xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		return err
	}
	return e.runUntilClose("node proxy "+p.node, n.Run, n.Ready())
}

// runUntilClose runs a component until the env closes, waiting until it is
// ready (or failed). The caller holds e.mu.
func (e *env) runUntilClose(what string, run func(context.Context) error, ready <-chan struct{}) error {
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	select {
	case <-ready:
		e.stops = append(e.stops, func() {
			cancel()
			if err := <-done; err != nil {
				e.log.Error("stopped with an error", "component", what, "error", err)
			}
		})
		return nil
	case err := <-done:
		cancel()
		return fmt.Errorf("%s: %w", what, err)
	case <-time.After(30 * time.Second):
		cancel()
		return fmt.Errorf("%s: not ready after 30s", what)
	}
}

package conformance_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ambitmesh/ambit/api/v1alpha1"
	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/waypoint"
	"github.com/ambitmesh/ambit/internal/xdsclient"
)

// gatewayClass is the class the suite puts on every Gateway it applies.
const gatewayClass = "ambit"

// readKinds are the kinds the control plane reads from its folder; the
// suite's other objects (Deployments, Pods, ...) stay in the store.
var readKinds = map[schema.GroupKind]bool{
	{Kind: "Namespace"}: true, {Kind: "Service"}: true, {Kind: "ServiceAccount"}: true, {Kind: "Secret"}: true,
	{Kind: "ConfigMap"}: true,
	{Group: "gateway.networking.k8s.io", Kind: "GatewayClass"}:     true,
	{Group: "gateway.networking.k8s.io", Kind: "Gateway"}:          true,
	{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute"}:        true,
	{Group: "gateway.networking.k8s.io", Kind: "GRPCRoute"}:        true,
	{Group: "gateway.networking.k8s.io", Kind: "TLSRoute"}:         true,
	{Group: "gateway.networking.k8s.io", Kind: "TCPRoute"}:         true,
	{Group: "gateway.networking.k8s.io", Kind: "ReferenceGrant"}:   true,
	{Group: "gateway.networking.k8s.io", Kind: "BackendTLSPolicy"}: true,
}

// env is the file-mode "cluster": one control plane, an echo server per
// Deployment replica, an ambit gateway per Gateway.
type env struct {
	ctx     context.Context
	dir     string // the control plane's config folder
	cp      *control.Control
	store   client.Client // in-memory objects (controller-runtime's fake client)
	log     *slog.Logger
	portMap map[uint32]uint32 // Gateway listener port -> local port
	podLogs *podLogs

	mu       sync.Mutex
	gvks     map[schema.GroupVersionKind]bool // kinds ever stored, to list them back
	backends map[types.NamespacedName][]pod   // Deployment -> its replicas
	serving  map[string]bool                  // ip:port an echo server listens on
	gateways map[types.NamespacedName]*gatewayProc
	nextIP   [2]int // last octets handed out: gateways, pods
	// block is the second octet of every address handed out (127.B.x.y),
	// random per run so that two runs on one machine do not collide.
	block    int
	stops    []func()
	waypoint bool // the mesh namespace's waypoint runs (startWaypoint)
}

type pod struct {
	name string
	ip   string
	node string // the Workload's node: the pod's own node proxy in the mesh namespaces
}

type gatewayProc struct {
	ip     string
	cancel context.CancelFunc
	done   chan error
}

// newEnv starts the control plane on dir. logOut receives every
// component's log (a file; the suite's output stays readable).
func newEnv(ctx context.Context, dir string, store client.Client, portMap map[uint32]uint32, logOut io.Writer) (*env, error) {
	e := &env{
		ctx: ctx, dir: dir, store: store, portMap: portMap,
		log:      slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug})),
		gvks:     map[schema.GroupVersionKind]bool{},
		backends: map[types.NamespacedName][]pod{},
		serving:  map[string]bool{},
		gateways: map[types.NamespacedName]*gatewayProc{},
		podLogs:  &podLogs{lines: map[string][]logLine{}},
		block:    1 + rand.IntN(254),
	}
	cfg := filepath.Join(dir, "config")
	if err := os.MkdirAll(cfg, 0o755); err != nil {
		return nil, err
	}
	e.cp = control.New(control.Options{ConfigDir: cfg, StateDir: filepath.Join(dir, "state"),
		XDSAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0", Debounce: 10 * time.Millisecond,
		Logger: e.log.With("proc", "control")})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.cp.Run(cctx) }()
	e.stops = append(e.stops, func() { cancel(); <-done })
	select {
	case <-e.cp.Ready():
		return e, nil
	case err := <-done:
		return nil, fmt.Errorf("control plane: %w", err)
	case <-time.After(30 * time.Second):
		return nil, errors.New("control plane not ready after 30s")
	}
}

// close stops the gateways, the echo servers and the control plane.
func (e *env) close() {
	e.mu.Lock()
	for nn, g := range e.gateways {
		e.stopGateway(nn, g)
	}
	stops := e.stops
	e.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// remember records an object's kind so sync lists it back.
func (e *env) remember(gvk schema.GroupVersionKind) {
	e.mu.Lock()
	e.gvks[gvk] = true
	e.mu.Unlock()
}

// sync writes the stored objects the control plane reads, plus a Workload
// per echo replica, to the config folder (atomically), starts the echo
// servers of new Deployments and an ambit gateway per new Gateway, and
// stops the gateways of deleted ones.
func (e *env) sync(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	gvks := make([]schema.GroupVersionKind, 0, len(e.gvks))
	for gvk := range e.gvks {
		gvks = append(gvks, gvk)
	}
	sort.Slice(gvks, func(i, j int) bool { return gvks[i].String() < gvks[j].String() })

	var docs [][]byte
	gateways := map[types.NamespacedName]bool{}
	deployments := map[types.NamespacedName]bool{}
	for _, gvk := range gvks {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := e.store.List(ctx, list); err != nil {
			return fmt.Errorf("list %s: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			nn := types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}
			switch gvk.GroupKind() {
			case schema.GroupKind{Group: "apps", Kind: "Deployment"}:
				deployments[nn] = true
				if err := e.startBackend(ctx, u); err != nil {
					return err
				}
				continue
			case schema.GroupKind{Group: "gateway.networking.k8s.io", Kind: "Gateway"}:
				if class, _, _ := unstructured.NestedString(u.Object, "spec", "gatewayClassName"); class == gatewayClass {
					gateways[nn] = true
				}
			}
			if !readKinds[gvk.GroupKind()] {
				continue
			}
			b, err := yaml.Marshal(fileObject(u))
			if err != nil {
				return err
			}
			docs = append(docs, b)
		}
	}
	for nn, pods := range e.backends {
		if !deployments[nn] {
			continue // the Deployment is gone: so are its Workloads
		}
		var d appsv1.Deployment
		if err := e.store.Get(ctx, nn, &d); err != nil {
			return err
		}
		for _, p := range pods {
			w := v1alpha1.Workload{
				TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Workload"},
				ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: nn.Namespace, Labels: d.Spec.Template.Labels},
				Spec:       v1alpha1.WorkloadSpec{Addresses: []string{p.ip}, Node: p.node, ServiceAccount: d.Spec.Template.Spec.ServiceAccountName},
			}
			b, err := yaml.Marshal(w)
			if err != nil {
				return err
			}
			docs = append(docs, b)
		}
	}
	if e.waypoint {
		b, err := yaml.Marshal(waypointWorkload(e.waypointIP()))
		if err != nil {
			return err
		}
		docs = append(docs, b)
	}
	path := filepath.Join(e.dir, "config", "cluster.yaml")
	if err := os.WriteFile(path+".tmp", bytes.Join(docs, []byte("---\n")), 0o644); err != nil {
		return err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return err
	}

	for nn, g := range e.gateways {
		if !gateways[nn] {
			e.stopGateway(nn, g)
		}
	}
	for nn := range gateways {
		if e.gateways[nn] == nil {
			if err := e.startGateway(nn); err != nil {
				return err
			}
		}
	}
	return nil
}

// fileObject is u as a config file holds it: no status, no server-side
// metadata except the generation (observedGeneration comes from it).
func fileObject(u *unstructured.Unstructured) map[string]any {
	out := map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind()}
	meta := map[string]any{"name": u.GetName(), "generation": u.GetGeneration()}
	if ns := u.GetNamespace(); ns != "" {
		meta["namespace"] = ns
	}
	if l := u.GetLabels(); len(l) > 0 {
		meta["labels"] = l
	}
	if a := u.GetAnnotations(); len(a) > 0 {
		meta["annotations"] = a
	}
	out["metadata"] = meta
	for k, v := range u.Object {
		if k != "apiVersion" && k != "kind" && k != "metadata" && k != "status" {
			out[k] = v
		}
	}
	return out
}

// startBackend runs the echo replicas of a Deployment: each on its own
// loopback address, serving HTTP (and h2c) on every TCP targetPort of the
// Services that select it (a Service applied after the Deployment adds its
// ports on the next sync), answering with the pod's name and namespace as
// the conformance echo server does. Replicas of the mesh namespaces get a
// node proxy each.
func (e *env) startBackend(ctx context.Context, u *unstructured.Unstructured) error {
	nn := types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
		return err
	}
	if _, ok := e.backends[nn]; !ok {
		if err := e.createPods(ctx, nn, &d); err != nil {
			return err
		}
	}
	var svcs corev1.ServiceList
	if err := e.store.List(ctx, &svcs, client.InNamespace(nn.Namespace)); err != nil {
		return err
	}
	var ports []int
	for _, s := range svcs.Items {
		if len(s.Spec.Selector) == 0 || !selects(s.Spec.Selector, d.Spec.Template.Labels) {
			continue
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort.IntValue()
			if target == 0 && p.TargetPort.StrVal == "" {
				target = int(p.Port) // the API server's default
			}
			if p.Protocol != corev1.ProtocolUDP && target > 0 && !slices.Contains(ports, target) {
				ports = append(ports, target)
			}
		}
	}
	tlsConfig, err := e.servingTLS(nn.Namespace, &d)
	if err != nil {
		return fmt.Errorf("deployment %s: %w", nn, err)
	}
	for _, p := range e.backends[nn] {
		for _, port := range ports {
			addr := net.JoinHostPort(p.ip, strconv.Itoa(port))
			if e.serving[addr] {
				continue
			}
			if err := e.runEcho(p, nn.Namespace, port, tlsConfig); err != nil {
				return fmt.Errorf("deployment %s: %w", nn, err)
			}
			e.serving[addr] = true
		}
	}
	return nil
}

// createPods hands out the addresses of d's replicas, starts the node
// proxies of mesh pods and creates the Ready Pod objects the suite waits for.
func (e *env) createPods(ctx context.Context, nn types.NamespacedName, d *appsv1.Deployment) error {
	replicas := 1
	if d.Spec.Replicas != nil {
		replicas = int(*d.Spec.Replicas)
	}
	var pods []pod
	for i := range replicas {
		e.nextIP[1]++
		p := pod{name: fmt.Sprintf("%s-echo-%d", nn.Name, i), ip: fmt.Sprintf("127.%d.%d.%d", e.block, 20+e.nextIP[1]/250, 1+e.nextIP[1]%250), node: "conformance"}
		if isMeshNamespace(nn.Namespace) {
			p.node = nn.Namespace + "-" + p.name
			if err := e.startNodeProxy(nn.Namespace, p); err != nil {
				return fmt.Errorf("deployment %s: %w", nn, err)
			}
		}
		pods = append(pods, p)
		kpod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: nn.Namespace, Labels: d.Spec.Template.Labels},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
		if err := e.store.Create(ctx, kpod); err != nil {
			return fmt.Errorf("deployment %s: pod %s: %w", nn, p.name, err)
		}
	}
	e.backends[nn] = pods
	return nil
}

// servingTLS is the TLS of a Deployment whose pod runs the conformance echo
// server in TLS mode (the tls-backend Deployments): TLS_SERVER_CERT and
// TLS_SERVER_PRIVKEY name files of a Secret volume. The suite creates that
// Secret after the Deployment, so the certificate is read from the store at
// each handshake, as the kubelet would mount it once it exists. nil for a
// cleartext echo.
func (e *env) servingTLS(namespace string, d *appsv1.Deployment) (*tls.Config, error) {
	var certPath, keyPath string
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, v := range c.Env {
			switch v.Name {
			case "TLS_SERVER_CERT":
				certPath = v.Value
			case "TLS_SERVER_PRIVKEY":
				keyPath = v.Value
			}
		}
	}
	if certPath == "" || keyPath == "" {
		return nil, nil
	}
	secret, certKey, ok := secretFile(d, certPath)
	keySecret, keyKey, keyOK := secretFile(d, keyPath)
	if !ok || !keyOK || keySecret != secret {
		return nil, fmt.Errorf("TLS_SERVER_CERT %s and TLS_SERVER_PRIVKEY %s are not files of one Secret volume", certPath, keyPath)
	}
	return &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		var s corev1.Secret
		if err := e.store.Get(e.ctx, types.NamespacedName{Namespace: namespace, Name: secret}, &s); err != nil {
			return nil, fmt.Errorf("secret %s/%s: %w", namespace, secret, err)
		}
		cert, err := tls.X509KeyPair(s.Data[certKey], s.Data[keyKey])
		if err != nil {
			return nil, fmt.Errorf("secret %s/%s: %w", namespace, secret, err)
		}
		return &cert, nil
	}}, nil
}

// secretFile resolves a file path in d's pod to the Secret volume and key
// it is mounted from.
func secretFile(d *appsv1.Deployment, file string) (secret, key string, ok bool) {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, m := range c.VolumeMounts {
			rel, found := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
			if !found {
				continue
			}
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name != m.Name || v.Secret == nil {
					continue
				}
				for _, it := range v.Secret.Items {
					if it.Path == rel {
						return v.Secret.SecretName, it.Key, true
					}
				}
				if len(v.Secret.Items) == 0 {
					return v.Secret.SecretName, rel, true
				}
			}
		}
	}
	return "", "", false
}

func (e *env) runEcho(p pod, namespace string, port int, tlsConfig *tls.Config) error {
	ctx, cancel := context.WithCancel(e.ctx)
	s := echo.New(echo.Options{HTTPAddress: net.JoinHostPort(p.ip, strconv.Itoa(port)), TLS: tlsConfig,
		Context: echo.Context{Pod: p.name, Namespace: namespace},
		Logger:  slog.New(e.podLogs.handler(namespace, p.name, e.log.With("proc", "echo/"+p.name).Handler()))})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
		e.stops = append(e.stops, func() { cancel(); <-done })
		return nil
	case err := <-done:
		cancel()
		return fmt.Errorf("echo %s on %s:%d: %w", p.name, p.ip, port, err)
	}
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// startGateway joins an ambit gateway for nn with a fresh token, on the
// next loopback address. It does not wait: the suite waits on status and
// retries requests until they are served.
func (e *env) startGateway(nn types.NamespacedName) error {
	tok, err := e.token("gateway/" + nn.Namespace + "/" + nn.Name)
	if err != nil {
		return err
	}
	e.nextIP[0]++
	ip := fmt.Sprintf("127.%d.%d.%d", e.block, 10+e.nextIP[0]/250, 1+e.nextIP[0]%250)
	g, err := waypoint.New(waypoint.Options{
		ControlPlane: e.cp.XDSAddr().String(), Gateway: nn.String(), Token: tok.Token, CAPin: tok.CAPin, TrustDomain: tok.TrustDomain,
		ListenAddress: ip, PortMap: e.portMap,
		AdminAddress: "-", MetricsAddress: "-", ReadinessAddress: "-",
		ShutdownGrace: 100 * time.Millisecond,
		Logger:        e.log.With("proc", "gateway/"+nn.String()),
		AccessLog:     e.log.With("proc", "gateway/"+nn.String(), "access", true),
		XDSBackoff:    xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(e.ctx)
	p := &gatewayProc{ip: ip, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- g.Run(ctx) }()
	e.gateways[nn] = p
	return nil
}

func (e *env) stopGateway(nn types.NamespacedName, g *gatewayProc) {
	g.cancel()
	if err := <-g.done; err != nil {
		e.log.Error("gateway stopped with an error", "gateway", nn.String(), "error", err)
	}
	delete(e.gateways, nn)
}

// gatewayIP is the address of nn's running gateway, "" when none runs.
func (e *env) gatewayIP(nn types.NamespacedName) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if g := e.gateways[nn]; g != nil {
		return g.ip
	}
	return ""
}

// token asks the control plane's admin endpoint for a join token, as
// `ambit token create` does.
func (e *env) token(subject string) (control.TokenResponse, error) {
	var tok control.TokenResponse
	body, _ := json.Marshal(control.TokenRequest{Subject: subject})
	resp, err := http.Post("http://"+e.cp.AdminAddr().String()+"/ca/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		return tok, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return tok, fmt.Errorf("token for %s: %s: %s", subject, resp.Status, strings.TrimSpace(string(b)))
	}
	return tok, json.NewDecoder(resp.Body).Decode(&tok)
}

// dial connects to a Gateway listener: the suite dials the Gateway's
// address at the listener's port; the gateway serves it on the mapped port.
func (e *env) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if p, err := strconv.ParseUint(port, 10, 16); err == nil {
		if local, ok := e.portMap[uint32(p)]; ok {
			addr = net.JoinHostPort(host, strconv.FormatUint(uint64(local), 10))
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// wsDialer is the suite's WebSocket dialer with env.dial's port mapping.
type wsDialer struct{ e *env }

func (d wsDialer) Dial(url, protocol, origin string) (*websocket.Conn, error) {
	cfg, err := websocket.NewConfig(url, origin)
	if err != nil {
		return nil, err
	}
	if protocol != "" {
		cfg.Protocol = []string{protocol}
	}
	ctx, cancel := context.WithTimeout(d.e.ctx, 10*time.Second)
	defer cancel()
	conn, err := d.e.dial(ctx, "tcp", cfg.Location.Host)
	if err != nil {
		return nil, err
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return ws, nil
}

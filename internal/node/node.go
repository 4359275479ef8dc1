// Package node runs `ambit node`: it joins the mesh with a token, keeps the
// node's certificates, subscribes to its configuration over delta xDS and
// serves the data path (package proxy) plus the admin (15000, localhost),
// metrics (15020) and readiness (15021) endpoints.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/proxyboot"
	"github.com/ambitmesh/ambit/internal/xdsclient"
)

// Options configure a node proxy.
type Options struct {
	ControlPlane string // control plane xDS/CA address, host:port
	Node         string // this node's name
	Token        string // join token (ambit token create --node NAME)
	CAPin        string // CA pin printed with the token
	TrustDomain  string // default cluster.local
	Cluster      string // reported in telemetry

	HBONEPort   uint16
	Explicit    []proxy.Explicit
	HTTPProxies []proxy.HTTPProxy
	// Enroll maps local workloads "<namespace>/<name>" to the network
	// namespace (path) to capture in, enrolled once the proxy serves. The
	// admin endpoint's POST /enroll and /unenroll change it at runtime.
	Enroll map[string]string
	// CaptureHost lists local workloads "<namespace>/<name>" that are
	// processes of this host, captured in host mode (rules in the node's own
	// namespace, scoped to their addresses and ports) once the proxy serves;
	// removed when the node stops. POST /enroll with mode=host does the same
	// at runtime.
	CaptureHost []string

	AdminAddress     string // default 127.0.0.1:15000; "-" disables
	MetricsAddress   string // default :15020; "-" disables
	ReadinessAddress string // default :15021; "-" disables

	Logger, AccessLog *slog.Logger
	// XDSBackoff tunes reconnects (tests shorten it).
	XDSBackoff xdsclient.Backoff
}

// Node is a running node proxy.
type Node struct {
	opts  Options
	log   *slog.Logger
	ready chan struct{}
	mu    sync.Mutex
	addrs map[string]net.Addr
	xds   *xdsclient.Client
	proxy *proxy.Proxy
	// proxyRef is proxy for dialControl, which gRPC may call at any time.
	proxyRef atomic.Pointer[proxy.Proxy]
	certs    *identity.Manager
	synced   chan struct{}
}

// New applies defaults and checks opts; it does no I/O.
func New(opts Options) (*Node, error) {
	var errs []error
	for _, f := range []struct{ name, v string }{
		{"control plane address", opts.ControlPlane}, {"node name", opts.Node}, {"join token", opts.Token}, {"CA pin", opts.CAPin},
	} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("node: %s is empty", f.name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if _, err := spiffeid.TrustDomainFromString(opts.TrustDomain); err != nil {
		return nil, fmt.Errorf("node: trust domain %q: %w", opts.TrustDomain, err)
	}
	if opts.AdminAddress == "" {
		opts.AdminAddress = "127.0.0.1:15000"
	}
	if opts.MetricsAddress == "" {
		opts.MetricsAddress = ":15020"
	}
	if opts.ReadinessAddress == "" {
		opts.ReadinessAddress = ":15021"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Node{opts: opts, log: opts.Logger, ready: make(chan struct{}), synced: make(chan struct{}), addrs: map[string]net.Addr{}}, nil
}

// Ready is closed once the endpoints are bound and the proxy is serving
// (not necessarily synced; see Synced).
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Synced is closed once a complete configuration arrived.
func (n *Node) Synced() <-chan struct{} { return n.synced }

// Addr returns the bound address of "admin", "metrics" or "readiness" (nil
// when disabled or before Ready).
func (n *Node) Addr(name string) net.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs[name]
}

// Proxy is the data path (valid after Ready).
func (n *Node) Proxy() *proxy.Proxy { return n.proxy }

// Run joins, subscribes and serves until ctx ends; it returns nil then, or
// the error that stopped it before (join refused, a port in use).
func (n *Node) Run(ctx context.Context) error {
	if err := n.checkPrivilege(); err != nil {
		return err
	}
	td := spiffeid.RequireTrustDomainFromString(n.opts.TrustDomain)
	nodeID, err := identity.NodeID(td, n.opts.Node)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	sess, err := proxyboot.Join(ctx, proxyboot.Options{
		ControlPlane: n.opts.ControlPlane, Token: n.opts.Token, CAPin: n.opts.CAPin, ID: nodeID,
		NodeID: "node/" + n.opts.Node, TypeURLs: proxy.TypeURLs, Logger: n.log, XDSBackoff: n.opts.XDSBackoff,
		Dial: n.dialControl,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer sess.Close()
	n.certs, n.xds = sess.Certs, sess.XDS
	bundle := sess.Bundle
	if n.proxy, err = proxy.New(proxy.Options{
		Node: n.opts.Node, Cluster: n.opts.Cluster, Certs: n.certs, Bundle: bundle,
		HBONEPort: n.opts.HBONEPort, Explicit: n.opts.Explicit, HTTPProxies: n.opts.HTTPProxies,
		Logger: n.log.With("component", "proxy"), AccessLog: n.opts.AccessLog,
	}); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.proxyRef.Store(n.proxy)

	reg, err := proxyboot.Registry()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	// Ready to serve once synced and the start-up enrolments are done: until
	// then a pod's first connections could meet no listener.
	serving := make(chan struct{})
	wg.Go(func() {
		for _, c := range []<-chan struct{}{n.ready, n.synced} {
			select {
			case <-c:
			case <-ctx.Done():
				return
			}
		}
		close(serving)
	})
	err = proxyboot.ServeEndpoints(ctx, &wg, []proxyboot.Endpoint{
		{Name: "admin", Address: n.opts.AdminAddress, Handler: n.adminHandler()},
		{Name: "metrics", Address: n.opts.MetricsAddress, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})},
		{Name: "readiness", Address: n.opts.ReadinessAddress, Handler: proxyboot.Readiness(serving)},
	}, func(name string, a net.Addr) { n.mu.Lock(); n.addrs[name] = a; n.mu.Unlock() })
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}

	sess.RunBackground(ctx, &wg)
	wg.Go(func() {
		if _, err := n.xds.WaitSynced(ctx); err == nil {
			close(n.synced)
			n.log.Info("configuration synced", "generation", n.xds.Current().Generation())
		}
	})
	errc := make(chan error, 1)
	wg.Go(func() { errc <- n.proxy.Run(ctx, n.xds) })
	select {
	case <-n.proxy.Ready():
		for key, ns := range n.opts.Enroll {
			if err := n.proxy.Enroll(ctx, key, ns); err != nil {
				return fmt.Errorf("node: %w", err)
			}
		}
		for _, key := range n.opts.CaptureHost {
			if err := n.proxy.EnrollHost(ctx, key); err != nil {
				return fmt.Errorf("node: %w", err)
			}
		}
		close(n.ready)
		n.log.Info("node proxy started", "node", n.opts.Node, "identity", nodeID)
	case err := <-errc:
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// checkPrivilege refuses capture without CAP_NET_ADMIN up front: host
// capture's join socket already carries the mark, and an enrolment would
// fail later with the kernel's bare "operation not permitted".
func (n *Node) checkPrivilege() error {
	var flags []string
	for _, key := range n.opts.CaptureHost {
		flags = append(flags, "--capture-host "+key)
	}
	for key := range n.opts.Enroll {
		flags = append(flags, "--enroll "+key)
	}
	if len(flags) == 0 || netns.HasNetAdmin() {
		return nil
	}
	slices.Sort(flags)
	return fmt.Errorf("node: %s: capture needs root (CAP_NET_ADMIN) to mark the proxy's sockets and install nftables rules; run ambit node as root, or use explicit mode (--explicit, --http-proxy), which needs no privilege", strings.Join(flags, ", "))
}

// dialControl connects to the control plane. With host capture the socket
// carries the proxy's mark: the node's own address may be a host
// workload's, whose outbound connections the rules would otherwise send
// through the proxy. With --capture-host it is marked from the first dial:
// host rules a killed run left behind would send the join to a 15001 that
// nobody serves yet, and only a joined proxy replaces them.
func (n *Node) dialControl(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	if p := n.proxyRef.Load(); len(n.opts.CaptureHost) > 0 || (p != nil && p.HostCaptureActive()) {
		d.Control = netns.MarkControl(netns.Mark)
	}
	return d.DialContext(ctx, "tcp", addr)
}

// ConfigDump is the admin /config_dump answer.
type ConfigDump struct {
	Node       string                                `json:"node"`
	Generation uint64                                `json:"generation"`
	Synced     bool                                  `json:"synced"`
	XDS        xdsclient.Status                      `json:"xds"`
	Identities []string                              `json:"identities"`
	Resources  map[string]map[string]json.RawMessage `json:"resources"`
	Inbound    []string                              `json:"inbound"`
	Explicit   []string                              `json:"explicit"`
	HTTPProxy  []string                              `json:"httpProxy"`
	// Enrolled maps captured workloads to their netns path, or "host".
	Enrolled map[string]string `json:"enrolled"`
}

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		snap := n.xds.Current()
		d := ConfigDump{Node: n.opts.Node, Generation: snap.Generation(), Synced: snap.Synced(), XDS: n.xds.Status()}
		for _, id := range n.certs.Identities() {
			d.Identities = append(d.Identities, id.String())
		}
		var err error
		if d.Resources, err = proxyboot.DumpResources(snap); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for _, a := range n.proxy.InboundAddrs() {
			d.Inbound = append(d.Inbound, a.String())
		}
		for _, a := range n.proxy.ExplicitAddrs() {
			d.Explicit = append(d.Explicit, a.String())
		}
		for _, a := range n.proxy.HTTPProxyAddrs() {
			d.HTTPProxy = append(d.HTTPProxy, a.String())
		}
		d.Enrolled = n.proxy.Enrolled()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d)
	})
	// Enrolment for hosts without a CNI plugin (and the e2e lab): the admin
	// listener is on localhost by default.
	mux.HandleFunc("POST /enroll", func(w http.ResponseWriter, r *http.Request) {
		key, ns, mode := r.FormValue("workload"), r.FormValue("netns"), r.FormValue("mode")
		host := mode == "host"
		if key == "" || (mode != "" && !host) || host == (ns != "") {
			http.Error(w, "enroll: want form fields workload=<namespace>/<name> and either netns=<path> (in-pod capture) or mode=host (a process of this host)", http.StatusBadRequest)
			return
		}
		var err error
		if host {
			err, ns = n.proxy.EnrollHost(r.Context(), key), "host mode"
		} else {
			err = n.proxy.Enroll(r.Context(), key, ns)
		}
		if err != nil {
			http.Error(w, err.Error(), enrolStatus(err))
			return
		}
		_, _ = fmt.Fprintf(w, "enrolled %s (%s)\n", key, ns)
	})
	mux.HandleFunc("POST /unenroll", func(w http.ResponseWriter, r *http.Request) {
		key := r.FormValue("workload")
		if key == "" {
			http.Error(w, "unenroll: want form field workload=<namespace>/<name>", http.StatusBadRequest)
			return
		}
		if err := n.proxy.Unenroll(r.Context(), key); err != nil {
			http.Error(w, err.Error(), enrolStatus(err))
			return
		}
		_, _ = fmt.Fprintf(w, "unenrolled %s\n", key)
	})
	// Go's runtime profiles (heap, goroutine, allocs, ...; ?debug=1 for
	// text), as ztunnel's and Envoy's admin endpoints offer theirs. Not
	// net/http/pprof: it links another half MB into every proxy.
	mux.HandleFunc("GET /debug/pprof/{profile}", func(w http.ResponseWriter, r *http.Request) {
		p := pprof.Lookup(r.PathValue("profile"))
		if p == nil {
			http.Error(w, fmt.Sprintf("no profile %q; want heap, allocs, goroutine, threadcreate, block or mutex", r.PathValue("profile")), http.StatusNotFound)
			return
		}
		debug, _ := strconv.Atoi(r.FormValue("debug"))
		if debug == 0 {
			w.Header().Set("Content-Type", "application/octet-stream")
		} else {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		_ = p.WriteTo(w, debug)
	})
	return mux
}

// enrolStatus is the HTTP status of an enrolment error: 4xx for what the
// caller must fix, 500 for the proxy's own failures.
func enrolStatus(err error) int {
	switch {
	case errors.Is(err, proxy.ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, proxy.ErrNotEnrolled):
		return http.StatusNotFound
	case errors.Is(err, proxy.ErrEnrolled):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

package xds

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambitmesh/ambit/internal/control/model"
)

// Authenticator decides which node ID the credentials of a stream allow.
// The bootstrap-token implementation is TokenAuthenticator; an mTLS one
// (node ID from the client certificate) replaces it with the identity work.
type Authenticator interface {
	// Authenticate returns the node ID the stream may subscribe as, or an
	// error carrying a gRPC status (codes.Unauthenticated).
	Authenticate(ctx context.Context) (nodeID string, err error)
}

// Options configure a Server.
type Options struct {
	// Authenticator is required: every stream is authenticated.
	Authenticator Authenticator
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// MaxResponseBytes bounds the resource payload of one response so it
	// stays under the client's gRPC receive limit (4 MiB by default); a
	// larger initial view is sent in several responses, one per ACK.
	// Default 3 MiB.
	MaxResponseBytes int
	// Registerer, when set, gets the package's metrics (RegisterMetrics).
	Registerer prometheus.Registerer
}

// ProxyStatus is the state of one proxy, for `ambit status`.
type ProxyStatus struct {
	NodeID   string `json:"nodeID"`
	StreamID int64  `json:"streamID"`
	Peer     string `json:"peer,omitempty"`
	// Connected is false for a proxy whose stream closed and that has not
	// reconnected; its last state is kept so operators can see it.
	Connected      bool      `json:"connected"`
	ConnectedSince time.Time `json:"connectedSince"`
	DisconnectedAt time.Time `json:"disconnectedAt,omitzero"`
	// Types by type URL.
	Types map[string]TypeStatus `json:"types,omitempty"`
}

// TypeStatus is the state of one resource type on one stream.
type TypeStatus struct {
	TypeURL string `json:"typeURL"`
	// SentVersion/SentNonce: the last response sent (system_version_info).
	SentVersion string `json:"sentVersion,omitempty"`
	SentNonce   string `json:"sentNonce,omitempty"`
	// AckedVersion/AckedNonce: the last response the proxy accepted.
	AckedVersion string `json:"ackedVersion,omitempty"`
	AckedNonce   string `json:"ackedNonce,omitempty"`
	// LastNACK is the error_detail of the last rejected response.
	LastNACK      string    `json:"lastNACK,omitempty"`
	LastNACKNonce string    `json:"lastNACKNonce,omitempty"`
	LastNACKTime  time.Time `json:"lastNACKTime,omitzero"`
}

// Server serves per-proxy views of the mesh over delta ADS.
//
// It implements go-control-plane's cache.ConfigWatcher itself instead of
// using its SnapshotCache. With SnapshotCache every proxy needs its own
// snapshot and every response re-marshals and re-hashes each resource it
// carries (its cachedResource is created per response), so 50 node proxies
// times 10,000 workloads is 500,000 marshals for an initial push and a full
// per-proxy version-map rebuild per change. Here a translation marshals and
// hashes each resource once (ComputeViews); proxies with the same view share
// the same ResourceSet, and responses carry the shared, pre-marshaled
// discovery.Resource values. Each set also remembers which names changed
// since its last few versions. After a complete wildcard response the
// returned-resources map handed to go-control-plane holds only the set
// version the proxy now has (markerKey), and the set itself is kept on the
// stream (typeState.held): copying a 10,000-entry version map per proxy per
// change would cost more than everything else a change does. So a
// one-endpoint change costs O(1) work and sends one resource per proxy;
// only a (re)subscription or a proxy far behind falls back to a full
// comparison, against the held set.
type Server struct {
	auth     Authenticator
	log      *slog.Logger
	maxBytes int
	xds      serverv3.Server

	updateMu sync.Mutex // serialises Update

	mu      sync.Mutex
	views   *Views // nil until the first Update: nothing is sent before
	watches map[string]map[*watch]struct{}
	streams map[int64]*streamState
	// gone keeps the last state of disconnected proxies by node ID (bounded
	// by the number of node IDs the authenticator allows).
	gone map[string]ProxyStatus
	// requests links a request to its stream between OnStreamDeltaRequest
	// and CreateDeltaWatch, which go-control-plane calls one after the
	// other on the stream's goroutine (the watch API carries no stream ID).
	requests map[*discovery.DeltaDiscoveryRequest]*streamState
}

type watch struct {
	id  ProxyID
	st  *streamState
	req *discovery.DeltaDiscoveryRequest
	sub cache.Subscription
	ch  chan cache.DeltaResponse
	// first: the first request of this type on the stream, answered even
	// when the view is empty so the proxy knows it is initialised.
	first bool
	// subChanged: the request changed the subscription, which may have
	// edited the returned-resources map in place; always answer so that a
	// freshly computed map replaces it.
	subChanged bool
}

type streamState struct {
	id      int64
	allowed string
	nodeID  string
	kind    ProxyKind
	peer    string
	since   time.Time
	types   map[string]*typeState
}

type typeState struct {
	TypeStatus
	pending map[string]string // nonce -> version of responses not yet (N)ACKed
	// held is the set the last complete wildcard response left the proxy
	// holding; the subscription's returned-resources map then holds only
	// markerKey -> held.Version (plus go-control-plane's own edits).
	// prevHeld is the one before: go-control-plane applies a response's
	// map only when it sends it, so a watch created while the last
	// response is still queued sees the map of the response before.
	held, prevHeld *ResourceSet
}

// holding is the set the proxy holds once the responses computed so far
// are sent, given the marker of the subscription's map; nil when unknown.
// With the marker of the set before, the last response is still queued:
// the proxy will hold what that one leaves (held), or, when that one was
// not complete, the set before plus some of it (the best base known).
func (ts *typeState) holding(mark string) *ResourceSet {
	switch {
	case ts.held != nil && ts.held.Version == mark:
		return ts.held
	case ts.prevHeld == nil || ts.prevHeld.Version != mark:
		return nil
	case ts.held != nil:
		return ts.held
	}
	return ts.prevHeld
}

// hold records the set a response leaves the proxy holding (nil: not a
// complete wildcard response).
func (ts *typeState) hold(set *ResourceSet) { ts.prevHeld, ts.held = ts.held, set }

// NewServer returns a server; it does no I/O. Call Register, then Update
// whenever the mesh model changes. Without an Authenticator every stream
// is refused: there is no unauthenticated mode.
func NewServer(opts Options) *Server {
	s := &Server{
		auth:     opts.Authenticator,
		log:      opts.Logger,
		maxBytes: opts.MaxResponseBytes,
		watches:  map[string]map[*watch]struct{}{},
		streams:  map[int64]*streamState{},
		gone:     map[string]ProxyStatus{},
		requests: map[*discovery.DeltaDiscoveryRequest]*streamState{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.auth == nil {
		s.auth = denyAll{}
	}
	if s.maxBytes <= 0 {
		s.maxBytes = 3 << 20
	}
	if opts.Registerer != nil {
		if err := RegisterMetrics(opts.Registerer); err != nil {
			s.log.Error("xDS metrics not exported", "error", err)
		}
	}
	// The server's context only bounds streams; they also end when the gRPC
	// server stops, which is how the control plane shuts them down.
	s.xds = serverv3.NewServer(context.Background(), watcher{s}, callbacks{s})
	return s
}

type denyAll struct{}

func (denyAll) Authenticate(context.Context) (string, error) {
	return "", status.Error(codes.Unauthenticated, "xds: no authenticator configured (no bootstrap tokens); every stream is refused")
}

// Register adds the aggregated discovery service to g.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// Update recomputes every view from mesh and pushes to each waiting proxy
// only what changed in its view. Objects that cannot be converted are left
// out and returned as an error; the rest is still served.
func (s *Server) Update(mesh *model.Mesh) error {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	s.mu.Lock()
	prev := s.views
	s.mu.Unlock()

	start := time.Now()
	views, err := ComputeViews(mesh, prev)
	viewComputeSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		s.log.Error("some mesh objects were left out of proxy config", "error", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.views = views
	for _, t := range typeOrder {
		for w := range s.watches[t] {
			if resp := s.respond(w); resp != nil {
				delete(s.watches[t], w)
				w.ch <- resp
			}
		}
	}
	return err
}

// Views returns the views of the last Update (nil before the first).
func (s *Server) Views() *Views {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.views
}

// Proxies returns every connected proxy, and the last state of proxies that
// disconnected and have not come back, sorted by node ID.
func (s *Server) Proxies() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.streams)+len(s.gone))
	connected := map[string]bool{}
	for _, st := range s.streams {
		if st.nodeID == "" {
			continue
		}
		connected[st.nodeID] = true
		out = append(out, st.status())
	}
	for id, ps := range s.gone {
		if !connected[id] {
			out = append(out, ps)
		}
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int {
		return cmp.Or(cmp.Compare(a.NodeID, b.NodeID), cmp.Compare(a.StreamID, b.StreamID))
	})
	return out
}

func (st *streamState) status() ProxyStatus {
	ps := ProxyStatus{NodeID: st.nodeID, StreamID: st.id, Peer: st.peer, Connected: true, ConnectedSince: st.since,
		Types: make(map[string]TypeStatus, len(st.types))}
	for t, ts := range st.types {
		ps.Types[t] = ts.TypeStatus
	}
	return ps
}

// markerKey is the returned-resources map this server hands go-control-plane
// after a complete wildcard response; its value is the version of the
// ResourceSet the proxy then holds (typeState.held). It can never be a
// resource name (names are "ns/name").
const markerKey = "\x00ambit-set-version"

// returnedResources is what the proxy of w holds: the subscription's map,
// or, when that is a marker map, the held set's versions with
// go-control-plane's edits since (names it unsubscribed are dropped so they
// count as not held, the way its own map bookkeeping treats them).
func (w *watch) returnedResources() map[string]string {
	returned := w.sub.ReturnedResources()
	mark, ok := returned[markerKey]
	if !ok {
		return returned
	}
	var held *ResourceSet
	if w.st != nil {
		if ts := w.st.types[w.req.GetTypeUrl()]; ts != nil {
			held = ts.holding(mark)
		}
	}
	var out map[string]string
	if held != nil {
		out = maps.Clone(held.versions)
	} else {
		out = map[string]string{}
	}
	for _, n := range w.req.GetResourceNamesUnsubscribe() {
		delete(out, n)
	}
	for n, v := range returned {
		if n != markerKey {
			out[n] = v
		}
	}
	return out
}

// respond computes the response for w from the current views, or nil when
// the proxy already has everything. Called with s.mu held.
func (s *Server) respond(w *watch) *deltaResponse {
	set := s.views.Set(w.id, w.req.GetTypeUrl())
	returned := w.sub.ReturnedResources()
	wildcard := w.sub.IsWildcard()
	var ts *typeState
	if w.st != nil {
		ts = w.st.typeState(w.req.GetTypeUrl())
	}

	var upd []*Resource
	var removed []string
	consider := func(n string) {
		if r := set.Items[n]; r != nil {
			if v, ok := returned[n]; !ok || v != r.Version {
				upd = append(upd, r)
			}
		} else if _, ok := returned[n]; ok {
			removed = append(removed, n)
		}
	}

	fast := false
	if mark, ok := returned[markerKey]; ok && wildcard && !w.subChanged && len(returned) == 1 &&
		ts != nil && ts.holding(mark) != nil {
		base := ts.holding(mark)
		if base.Version == set.Version {
			return nil
		}
		if names, ok := set.changesSince(base.Version); ok {
			fast = true
			returned = base.versions // what consider() compares against
			for _, n := range names {
				consider(n)
			}
		}
	}
	if !fast {
		returned = w.returnedResources()
		if wildcard {
			for n, r := range set.Items {
				if v, ok := returned[n]; !ok || v != r.Version {
					upd = append(upd, r)
				}
			}
			for n := range returned {
				if n != markerKey && set.Items[n] == nil {
					removed = append(removed, n)
				}
			}
		} else {
			for n := range w.sub.SubscribedResources() {
				consider(n)
			}
		}
	}
	if len(upd) == 0 && len(removed) == 0 && !(wildcard && w.first) && !w.subChanged {
		return nil
	}

	slices.SortFunc(upd, func(a, b *Resource) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(removed)
	resp := &deltaResponse{req: w.req, typeURL: set.TypeURL, version: set.Version, removed: removed}
	size := 0
	for i, r := range upd {
		size += len(r.wire.GetResource().GetValue()) + len(r.Name) + len(r.Version) + 32
		if i > 0 && size > s.maxBytes {
			// The rest follows after the proxy ACKs this part: the map
			// below lacks the marker, so the next watch compares in full.
			upd = upd[:i]
			resp.partial = true
			break
		}
		resp.resources = append(resp.resources, r.wire)
	}
	if wildcard && !resp.partial && ts != nil {
		// A complete wildcard response leaves the proxy holding exactly set.
		ts.hold(set)
		resp.next = map[string]string{markerKey: set.Version}
		return resp
	}
	if ts != nil {
		ts.hold(nil)
	}
	next := maps.Clone(returned)
	if next == nil {
		next = map[string]string{}
	}
	delete(next, markerKey)
	for _, r := range upd {
		next[r.Name] = r.Version
	}
	for _, n := range removed {
		delete(next, n)
	}
	if !wildcard {
		for n := range next {
			if _, ok := w.sub.SubscribedResources()[n]; !ok {
				delete(next, n)
			}
		}
	}
	resp.next = next
	return resp
}

// deltaResponse implements cache.DeltaResponse over shared, pre-marshaled
// resources.
type deltaResponse struct {
	req       *discovery.DeltaDiscoveryRequest
	typeURL   string
	version   string
	resources []*discovery.Resource
	removed   []string
	partial   bool
	next      map[string]string
}

var _ cache.DeltaResponse = (*deltaResponse)(nil)

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discovery.DeltaDiscoveryResponse, error) {
	// A fresh message each time: the server sets the nonce on it.
	return &discovery.DeltaDiscoveryResponse{
		SystemVersionInfo: r.version,
		TypeUrl:           r.typeURL,
		Resources:         r.resources,
		RemovedResources:  r.removed,
	}, nil
}

func (r *deltaResponse) GetDeltaRequest() *discovery.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                 { return r.version, nil }
func (r *deltaResponse) GetResponseVersion() string                        { return r.version }
func (r *deltaResponse) GetNextVersionMap() map[string]string              { return r.GetReturnedResources() }
func (r *deltaResponse) GetContext() context.Context                       { return context.Background() }

func (r *deltaResponse) GetReturnedResources() map[string]string { return r.next }

// watcher implements cache.ConfigWatcher for the go-control-plane server.
type watcher struct{ s *Server }

func (w watcher) CreateWatch(*cache.Request, cache.Subscription, chan cache.Response) (func(), error) {
	return nil, errSotw
}

func (w watcher) Fetch(context.Context, *cache.Request) (cache.Response, error) {
	return nil, errSotw
}

func (w watcher) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, ch chan cache.DeltaResponse) (func(), error) {
	s := w.s
	// The callbacks already checked node.id against the credentials; the
	// server fills it in on requests that omit it.
	id, err := ParseProxyID(req.GetNode().GetId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	wt := &watch{
		id:         id,
		req:        req,
		sub:        sub,
		ch:         ch,
		first:      req.GetResponseNonce() == "",
		subChanged: len(req.GetResourceNamesSubscribe()) > 0 || len(req.GetResourceNamesUnsubscribe()) > 0,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wt.st = s.requests[req]
	delete(s.requests, req)
	if s.views != nil {
		if resp := s.respond(wt); resp != nil {
			// The stream's response channel holds two responses per type
			// and each type has at most one open watch, so this never
			// blocks.
			ch <- resp
			return func() {}, nil
		}
	}
	t := req.GetTypeUrl()
	if s.watches[t] == nil {
		s.watches[t] = map[*watch]struct{}{}
	}
	s.watches[t][wt] = struct{}{}
	return func() {
		s.mu.Lock()
		delete(s.watches[t], wt)
		s.mu.Unlock()
	}, nil
}

// callbacks implement the go-control-plane server callbacks: authentication,
// the node-ID check, ACK/NACK bookkeeping and metrics.
type callbacks struct{ s *Server }

var errSotw = status.Error(codes.Unimplemented, "xds: ambit serves delta xDS only (DeltaAggregatedResources)")

func (callbacks) OnStreamOpen(context.Context, int64, string) error        { return errSotw }
func (callbacks) OnStreamClosed(int64, *core.Node)                         {}
func (callbacks) OnStreamRequest(int64, *discovery.DiscoveryRequest) error { return errSotw }
func (callbacks) OnStreamResponse(context.Context, int64, *discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {
}
func (callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error         { return errSotw }
func (callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}

func (c callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	s := c.s
	allowed, err := s.auth.Authenticate(ctx)
	if err != nil {
		rejectedStreamsTotal.WithLabelValues("unauthenticated").Inc()
		if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.Unauthenticated, err.Error())
		}
		s.log.Info("refused xDS stream", "peer", peerAddr(ctx), "error", err)
		return err
	}
	s.mu.Lock()
	s.streams[id] = &streamState{id: id, allowed: allowed, peer: peerAddr(ctx), since: time.Now(), types: map[string]*typeState{}}
	s.mu.Unlock()
	return nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

func kindLabel(k ProxyKind) string {
	if k == KindGateway {
		return "gateway"
	}
	return "node"
}

func (c callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) {
	s := c.s
	s.mu.Lock()
	st := s.streams[id]
	delete(s.streams, id)
	maps.DeleteFunc(s.requests, func(_ *discovery.DeltaDiscoveryRequest, v *streamState) bool { return v == st })
	if st != nil && st.nodeID != "" {
		ps := st.status()
		ps.Connected, ps.DisconnectedAt = false, time.Now()
		s.gone[st.nodeID] = ps
	}
	s.mu.Unlock()
	if st != nil && st.nodeID != "" {
		connectedProxies.WithLabelValues(kindLabel(st.kind)).Dec()
		s.log.Info("proxy disconnected", "node", st.nodeID, "stream", id)
	}
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	if st == nil {
		return status.Error(codes.Internal, "xds: request on unknown stream")
	}
	nodeID := req.GetNode().GetId()
	switch {
	case st.nodeID == "" && nodeID == "":
		rejectedStreamsTotal.WithLabelValues("invalid_argument").Inc()
		return status.Error(codes.InvalidArgument, "xds: the first request must set node.id (node/<node name> or gateway/<namespace>/<name>)")
	case st.nodeID == "":
		if nodeID != st.allowed {
			rejectedStreamsTotal.WithLabelValues("permission_denied").Inc()
			s.log.Warn("refused xDS stream: node ID does not match credentials", "peer", st.peer, "node", nodeID, "allowed", st.allowed)
			return status.Errorf(codes.PermissionDenied, "xds: node.id %q: credentials are for %q; a proxy can only subscribe as itself", nodeID, st.allowed)
		}
		pid, err := ParseProxyID(nodeID)
		if err != nil {
			rejectedStreamsTotal.WithLabelValues("invalid_argument").Inc()
			return status.Error(codes.InvalidArgument, err.Error())
		}
		st.nodeID, st.kind = nodeID, pid.Kind
		delete(s.gone, nodeID)
		connectedProxies.WithLabelValues(kindLabel(pid.Kind)).Inc()
		s.log.Info("proxy connected", "node", nodeID, "peer", st.peer, "stream", id)
	case nodeID != "" && nodeID != st.nodeID:
		rejectedStreamsTotal.WithLabelValues("permission_denied").Inc()
		return status.Errorf(codes.PermissionDenied, "xds: node.id changed from %q to %q within a stream; a proxy can only subscribe as itself", st.nodeID, nodeID)
	}

	s.requests[req] = st
	nonce := req.GetResponseNonce()
	if nonce == "" {
		return nil
	}
	ts := st.typeState(req.GetTypeUrl())
	version, known := ts.pending[nonce]
	delete(ts.pending, nonce)
	if d := req.GetErrorDetail(); d != nil {
		ts.LastNACK, ts.LastNACKNonce, ts.LastNACKTime = d.GetMessage(), nonce, time.Now()
		nacksTotal.WithLabelValues(req.GetTypeUrl()).Inc()
		s.log.Warn("proxy rejected config (NACK); it keeps its last good config",
			"node", st.nodeID, "type", req.GetTypeUrl(), "nonce", nonce, "version", version, "error", d.GetMessage())
		return nil
	}
	if known {
		ts.AckedVersion, ts.AckedNonce = version, nonce
	}
	return nil
}

func (st *streamState) typeState(typeURL string) *typeState {
	ts := st.types[typeURL]
	if ts == nil {
		ts = &typeState{TypeStatus: TypeStatus{TypeURL: typeURL}, pending: map[string]string{}}
		st.types[typeURL] = ts
	}
	return ts
}

// maxPending bounds the unanswered nonces remembered per type; a proxy that
// never ACKs cannot grow server memory.
const maxPending = 32

func (c callbacks) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	s := c.s
	t := resp.GetTypeUrl()
	pushesTotal.WithLabelValues(t).Inc()
	resourcesSentTotal.WithLabelValues(t).Add(float64(len(resp.GetResources())))
	resourcesRemovedTotal.WithLabelValues(t).Add(float64(len(resp.GetRemovedResources())))
	responseBytesTotal.WithLabelValues(t).Add(float64(proto.Size(resp)))

	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	if st == nil {
		return
	}
	ts := st.typeState(t)
	ts.SentVersion, ts.SentNonce = resp.GetSystemVersionInfo(), resp.GetNonce()
	if len(ts.pending) >= maxPending {
		clear(ts.pending)
	}
	ts.pending[resp.GetNonce()] = resp.GetSystemVersionInfo()
}

// String is for logs.
func (p ProxyStatus) String() string {
	return fmt.Sprintf("%s (stream %d, since %s)", p.NodeID, p.StreamID, p.ConnectedSince.Format(time.RFC3339))
}

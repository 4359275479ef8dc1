package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/xds/xdstest"
	"github.com/ambitmesh/ambit/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testTokens = xdstest.TokenAuthenticator{
	"tok-n1": "node/n1",
	"tok-n2": "node/n2",
	"tok-wp": "gateway/a/wp",
	"tok-gw": "gateway/b/gw",
	"tok-x":  "bogus-id",
}

// startServer serves a Server on a real 127.0.0.1 gRPC listener.
func startServer(t *testing.T, opts Options) (*Server, string, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	if opts.Authenticator == nil {
		opts.Authenticator = testTokens
	}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s := NewServer(opts)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	s.Register(gs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return s, lis.Addr().String(), logs
}

// testClient is a raw delta ADS client: it sends exactly what a test says
// and hands every response to the test.
type testClient struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node   string
	resps  chan *discovery.DeltaDiscoveryResponse
	errc   chan error
	cancel context.CancelFunc
}

func connect(t *testing.T, addr, token, nodeID string) *testClient {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(xdstest.BearerToken(token)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{t: t, stream: stream, node: nodeID, cancel: cancel,
		resps: make(chan *discovery.DeltaDiscoveryResponse, 64), errc: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := stream.Recv()
			if err != nil {
				c.errc <- err
				return
			}
			c.resps <- r
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
	return c
}

func (c *testClient) send(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	if req.Node == nil {
		req.Node = &core.Node{Id: c.node}
	}
	// A send error means the stream ended; the test sees why on next/err.
	_ = c.stream.Send(req)
}

func (c *testClient) subscribe(typeURL string, initial map[string]string, names ...string) {
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, InitialResourceVersions: initial, ResourceNamesSubscribe: names})
}

func (c *testClient) ack(r *discovery.DeltaDiscoveryResponse) {
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

func (c *testClient) nack(r *discovery.DeltaDiscoveryResponse, msg string) {
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg}})
}

const waitFor = 10 * time.Second

func (c *testClient) next() *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		return r
	case err := <-c.errc:
		c.t.Fatalf("%s: stream ended: %v", c.node, err)
	case <-time.After(waitFor):
		c.t.Fatalf("%s: no response within %s", c.node, waitFor)
	}
	return nil
}

func (c *testClient) err() error {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("%s: got a response (%s, %d resources), want the stream refused", c.node, r.GetTypeUrl(), len(r.GetResources()))
	case err := <-c.errc:
		return err
	case <-time.After(waitFor):
		c.t.Fatalf("%s: stream not ended within %s", c.node, waitFor)
	}
	return nil
}

// syncAll subscribes to types and ACKs the initial response of each,
// returning them by type.
func (c *testClient) syncAll(types ...string) map[string]*discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	for _, typ := range types {
		c.subscribe(typ, nil)
	}
	got := map[string]*discovery.DeltaDiscoveryResponse{}
	for range types {
		r := c.next()
		got[r.GetTypeUrl()] = r
		c.ack(r)
	}
	return got
}

func names(r *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	slices.Sort(out)
	return out
}

func TestInitialConfigPerView(t *testing.T) {
	srv, addr, _ := startServer(t, Options{})
	// n1 subscribes before the first Update: it must get nothing until the
	// model exists (an empty view would wipe a reconnecting proxy).
	early := connect(t, addr, "tok-n1", "node/n1")
	early.subscribe(TypeWorkload, nil)
	testkit.Eventually(t, waitFor, "one proxy connected", func() bool { return len(srv.Proxies()) == 1 })
	if err := srv.Update(testMesh()); err != nil {
		t.Fatal(err)
	}
	if got := names(early.next()); !cmp.Equal(got, []string{"a/db-1", "a/web-1", "a/web-2", "b/api-1"}) {
		t.Errorf("early subscriber got %v", got)
	}

	tests := []struct {
		token, node string
		want        map[string][]string
	}{
		{"tok-n1", "node/n1", map[string][]string{
			TypeService:       {"a/db", "a/web", "b/api"},
			TypeWorkload:      {"a/db-1", "a/web-1", "a/web-2", "b/api-1"},
			TypeAuthorization: {"a/ns-allow", "ambit-system/ambit-strict-mtls", "ambit-system/mesh-deny"},
		}},
		{"tok-n2", "node/n2", map[string][]string{
			TypeService:       {"a/db", "a/web", "b/api"},
			TypeWorkload:      {"a/db-1", "a/web-1", "a/web-2", "b/api-1"},
			TypeAuthorization: {"a/ns-allow", "ambit-system/ambit-strict-mtls", "ambit-system/mesh-deny", "b/api-only"},
		}},
		{"tok-wp", "gateway/a/wp", map[string][]string{
			TypeListener:      {"mesh"},
			TypeRouteTable:    {"a/web:80"},
			TypeBackend:       {"a/web", "b/api"},
			TypeAuthorization: {"a/wp-l7"},
		}},
		{"tok-gw", "gateway/b/gw", map[string][]string{
			TypeListener:      {"http"},
			TypeRouteTable:    nil, // empty, but answered so the proxy knows
			TypeBackend:       {"b/api"},
			TypeAuthorization: {"b/gw-policy"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.node, func(t *testing.T) {
			c := connect(t, addr, tt.token, tt.node)
			var types []string
			for typ := range tt.want {
				types = append(types, typ)
			}
			got := map[string][]string{}
			for typ, r := range c.syncAll(types...) {
				got[typ] = names(r)
				for _, res := range r.GetResources() {
					if res.GetVersion() == "" || res.GetResource().GetTypeUrl() != typ {
						t.Errorf("%s: version %q, Any type %q", res.GetName(), res.GetVersion(), res.GetResource().GetTypeUrl())
					}
					if _, err := res.GetResource().UnmarshalNew(); err != nil {
						t.Errorf("%s: %v", res.GetName(), err)
					}
				}
				if want := srv.Views().Set(mustParse(t, tt.node), typ).Version; r.GetSystemVersionInfo() != want {
					t.Errorf("%s: system_version_info %q, want the view version %q", typ, r.GetSystemVersionInfo(), want)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("initial config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestChangeSendsOnlyChangedResources(t *testing.T) {
	srv, addr, _ := startServer(t, Options{})
	m := testMesh()
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	n1 := connect(t, addr, "tok-n1", "node/n1")
	n1.syncAll(NodeTypes...)
	wp := connect(t, addr, "tok-wp", "gateway/a/wp")
	wp.syncAll(GatewayTypes...)
	sentBefore := counterValue(t, resourcesSentTotal.WithLabelValues(TypeWorkload))

	// One endpoint moves.
	m = withMovedWorkload(m, "10.0.2.99")
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	// Services are pushed before Workloads, so a needless Service push
	// would arrive first.
	r := n1.next()
	if r.GetTypeUrl() != TypeWorkload || !cmp.Equal(names(r), []string{"a/web-2"}) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("node proxy got %s %v removed %v, want Workload [a/web-2]", r.GetTypeUrl(), names(r), r.GetRemovedResources())
	}
	n1.ack(r)
	r = wp.next()
	if r.GetTypeUrl() != TypeBackend || !cmp.Equal(names(r), []string{"a/web"}) {
		t.Fatalf("waypoint got %s %v, want Backend [a/web]", r.GetTypeUrl(), names(r))
	}
	wp.ack(r)
	if d := counterValue(t, resourcesSentTotal.WithLabelValues(TypeWorkload)) - sentBefore; d != 1 {
		t.Errorf("Workload resources sent for one change = %v, want 1", d)
	}

	// A policy change next: if the endpoint change had sent anything else,
	// it would be received before this.
	m.Policies = slices.Clone(m.Policies)
	m.Policies[1].Action = "AUDIT" // a/wp-l7 (waypoint)
	m.Policies[2].Action = "AUDIT" // ambit-system/mesh-deny (every node)
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	if r := n1.next(); r.GetTypeUrl() != TypeAuthorization || !cmp.Equal(names(r), []string{"ambit-system/mesh-deny"}) {
		t.Errorf("node proxy got %s %v, want Authorization [ambit-system/mesh-deny]", r.GetTypeUrl(), names(r))
	}
	if r := wp.next(); r.GetTypeUrl() != TypeAuthorization || !cmp.Equal(names(r), []string{"a/wp-l7"}) {
		t.Errorf("waypoint got %s %v, want Authorization [a/wp-l7]", r.GetTypeUrl(), names(r))
	}

	// The ACKed version is reported.
	want := srv.Views().Set(mustParse(t, "node/n1"), TypeWorkload).Version
	testkit.Eventually(t, waitFor, "node/n1 to ACK version "+want, func() bool {
		for _, p := range srv.Proxies() {
			if p.NodeID == "node/n1" {
				return p.Types[TypeWorkload].AckedVersion == want
			}
		}
		return false
	})
}

func TestRemovalSendsRemovedResources(t *testing.T) {
	srv, addr, _ := startServer(t, Options{})
	m := testMesh()
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	n1 := connect(t, addr, "tok-n1", "node/n1")
	n1.syncAll(NodeTypes...)

	gone := model.Ref{Namespace: "b", Name: "api-1"}
	m2 := *m
	m2.Workloads = slices.DeleteFunc(slices.Clone(m.Workloads), func(w model.Workload) bool { return w.Ref == gone })
	if err := srv.Update(&m2); err != nil {
		t.Fatal(err)
	}
	r := n1.next()
	if r.GetTypeUrl() != TypeWorkload || len(r.GetResources()) != 0 || !cmp.Equal(r.GetRemovedResources(), []string{"b/api-1"}) {
		t.Fatalf("got %s resources %v removed %v, want Workload removal of b/api-1", r.GetTypeUrl(), names(r), r.GetRemovedResources())
	}
}

func TestAuthentication(t *testing.T) {
	srv, addr, logs := startServer(t, Options{})
	if err := srv.Update(testMesh()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token, node string
		want              codes.Code
	}{
		{"no token", "", "node/n1", codes.Unauthenticated},
		{"unknown token", "tok-nope", "node/n1", codes.Unauthenticated},
		{"another node's ID", "tok-n1", "node/n2", codes.PermissionDenied},
		{"gateway token, node ID", "tok-wp", "node/n1", codes.PermissionDenied},
		{"no node ID", "tok-n1", "", codes.InvalidArgument},
		{"token for a malformed ID", "tok-x", "bogus-id", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := connect(t, addr, tt.token, tt.node)
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeWorkload, Node: &core.Node{Id: tt.node}}
			c.send(req)
			err := c.err()
			if status.Code(err) != tt.want {
				t.Fatalf("error %v, want code %s", err, tt.want)
			}
			if tt.want == codes.PermissionDenied && !strings.Contains(err.Error(), "a proxy can only subscribe as itself") {
				t.Errorf("error %q does not say why", err)
			}
		})
	}

	t.Run("node ID changed mid-stream", func(t *testing.T) {
		c := connect(t, addr, "tok-n1", "node/n1")
		c.syncAll(TypeWorkload)
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeService, Node: &core.Node{Id: "node/n2"}})
		if err := c.err(); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("error %v, want PermissionDenied", err)
		}
	})
	t.Run("sotw refused", func(t *testing.T) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(xdstest.BearerToken("tok-n1")))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_ = st.Send(&discovery.DiscoveryRequest{TypeUrl: TypeWorkload, Node: &core.Node{Id: "node/n1"}})
		if _, err := st.Recv(); status.Code(err) != codes.Unimplemented {
			t.Fatalf("error %v, want Unimplemented", err)
		}
	})
	if !strings.Contains(logs.String(), "a proxy can only subscribe as itself") && !strings.Contains(logs.String(), "node ID does not match credentials") {
		t.Errorf("refusals not logged:\n%s", logs)
	}
	// Refused streams never show up as proxies.
	for _, p := range srv.Proxies() {
		if p.Connected && p.NodeID != "node/n1" {
			t.Errorf("refused stream listed: %+v", p)
		}
	}
}

func TestNACKIsLoggedAndReportedOthersUnaffected(t *testing.T) {
	srv, addr, logs := startServer(t, Options{})
	m := testMesh()
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	n1 := connect(t, addr, "tok-n1", "node/n1")
	n1.syncAll(NodeTypes...)
	n2 := connect(t, addr, "tok-n2", "node/n2")
	n2.syncAll(NodeTypes...)
	good := srv.Views().Workloads.Version
	nacks := counterValue(t, nacksTotal.WithLabelValues(TypeWorkload))

	m = withMovedWorkload(m, "10.0.2.99")
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	bad := srv.Views().Workloads.Version
	r1, r2 := n1.next(), n2.next()
	n1.nack(r1, "workload a/web-2: address 10.0.2.99 collides with a local interface")
	n2.ack(r2)

	proxy := func(id string) ProxyStatus {
		for _, p := range srv.Proxies() {
			if p.NodeID == id {
				return p
			}
		}
		return ProxyStatus{}
	}
	testkit.Eventually(t, waitFor, "node/n1's NACK and node/n2's ACK", func() bool {
		return proxy("node/n1").Types[TypeWorkload].LastNACK != "" && proxy("node/n2").Types[TypeWorkload].AckedVersion == bad
	})
	st := proxy("node/n1").Types[TypeWorkload]
	if st.AckedVersion != good || !strings.Contains(st.LastNACK, "collides with a local interface") || st.LastNACKNonce != r1.GetNonce() {
		t.Errorf("node/n1 status %+v: want acked %s and the NACK of nonce %s", st, good, r1.GetNonce())
	}
	if d := counterValue(t, nacksTotal.WithLabelValues(TypeWorkload)) - nacks; d != 1 {
		t.Errorf("NACK counter moved by %v, want 1", d)
	}
	for _, want := range []string{"NACK", "node=node/n1", TypeWorkload, "collides with a local interface"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}

	// Both keep being served.
	m = withMovedWorkload(m, "10.0.2.100")
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testClient{n1, n2} {
		if r := c.next(); !cmp.Equal(names(r), []string{"a/web-2"}) {
			t.Errorf("%s after NACK: got %v, want [a/web-2]", c.node, names(r))
		}
	}
}

func TestReconnectSendsOnlyDifferences(t *testing.T) {
	srv, addr, _ := startServer(t, Options{})
	m := testMesh()
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, res := range connect(t, addr, "tok-n1", "node/n1").syncAll(TypeWorkload)[TypeWorkload].GetResources() {
		held[res.GetName()] = res.GetVersion()
	}
	held["a/ghost"] = "0123"
	if err := srv.Update(withMovedWorkload(m, "10.0.2.99")); err != nil {
		t.Fatal(err)
	}
	c := connect(t, addr, "tok-n1", "node/n1")
	c.subscribe(TypeWorkload, held)
	r := c.next()
	if !cmp.Equal(names(r), []string{"a/web-2"}) || !cmp.Equal(r.GetRemovedResources(), []string{"a/ghost"}) {
		t.Errorf("resume got %v removed %v, want [a/web-2] removed [a/ghost]", names(r), r.GetRemovedResources())
	}
}

func TestLargeInitialViewIsSplit(t *testing.T) {
	srv, addr, _ := startServer(t, Options{MaxResponseBytes: 200})
	m := testMesh()
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	c := connect(t, addr, "tok-n1", "node/n1")
	c.subscribe(TypeWorkload, nil)
	var got []string
	responses := 0
	for len(got) < 4 {
		r := c.next()
		responses++
		got = append(got, names(r)...)
		c.ack(r)
	}
	slices.Sort(got)
	if !cmp.Equal(got, []string{"a/db-1", "a/web-1", "a/web-2", "b/api-1"}) || responses < 2 {
		t.Fatalf("got %v in %d responses, want all 4 workloads in several", got, responses)
	}
	// Once complete, a change is a one-resource delta again.
	if err := srv.Update(withMovedWorkload(m, "10.0.2.99")); err != nil {
		t.Fatal(err)
	}
	if r := c.next(); !cmp.Equal(names(r), []string{"a/web-2"}) {
		t.Errorf("after split initial push got %v, want [a/web-2]", names(r))
	}
}

func TestNamedSubscription(t *testing.T) {
	srv, addr, _ := startServer(t, Options{})
	m := testMesh()
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	c := connect(t, addr, "tok-n1", "node/n1")
	c.subscribe(TypeWorkload, nil, "a/web-1", "a/missing")
	r := c.next()
	if !cmp.Equal(names(r), []string{"a/web-1"}) {
		t.Fatalf("named subscription got %v, want [a/web-1]", names(r))
	}
	c.ack(r)
	// a/web-2 is not subscribed: its change is not sent; a/web-1's is.
	m = withMovedWorkload(m, "10.0.2.99")
	m.Workloads[1].Addresses = m.Workloads[2].Addresses // a/web-1 too
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	if r := c.next(); !cmp.Equal(names(r), []string{"a/web-1"}) {
		t.Errorf("got %v, want only the subscribed [a/web-1]", names(r))
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A proxy that does not ACK while more translations than a set remembers
// go by is compared in full against the set it holds (its returned map is
// only a marker): it gets what changed and the removals, nothing else.
func TestProxyFarBehindGetsExactDelta(t *testing.T) {
	srv, addr, _ := startServer(t, Options{})
	m := testMesh()
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	n1 := connect(t, addr, "tok-n1", "node/n1")
	n1.syncAll(TypeWorkload)

	// The proxy is caught up, so its watch is open for this one.
	gone := model.Ref{Namespace: "b", Name: "api-1"}
	m2 := *m
	m2.Workloads = slices.DeleteFunc(slices.Clone(m.Workloads), func(w model.Workload) bool { return w.Ref == gone })
	if err := srv.Update(&m2); err != nil {
		t.Fatal(err)
	}
	del := n1.next()
	if !cmp.Equal(del.GetRemovedResources(), []string{"b/api-1"}) {
		t.Fatalf("got removed %v, want [b/api-1]", del.GetRemovedResources())
	}
	// Not ACKed yet: maxHistory+2 translations go by, the last moving a/web-2
	// and bringing b/api-1 back.
	cur := &m2
	for i := range maxHistory + 2 {
		cur = withMovedWorkload(cur, fmt.Sprintf("10.0.3.%d", i+1))
		if err := srv.Update(cur); err != nil {
			t.Fatal(err)
		}
	}
	back := withMovedWorkload(m, fmt.Sprintf("10.0.3.%d", maxHistory+2))
	if err := srv.Update(back); err != nil {
		t.Fatal(err)
	}
	n1.ack(del)
	r := n1.next()
	if r.GetTypeUrl() != TypeWorkload || !cmp.Equal(names(r), []string{"a/web-2", "b/api-1"}) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("far-behind proxy got %s %v removed %v, want Workload [a/web-2 b/api-1]", r.GetTypeUrl(), names(r), r.GetRemovedResources())
	}
	n1.ack(r)
	// Caught up again: the next change is a one-resource delta.
	if err := srv.Update(withMovedWorkload(back, "10.0.4.1")); err != nil {
		t.Fatal(err)
	}
	if r := n1.next(); !cmp.Equal(names(r), []string{"a/web-2"}) || len(r.GetRemovedResources()) != 0 {
		t.Errorf("after catching up got %v removed %v, want [a/web-2]", names(r), r.GetRemovedResources())
	}
}

// Unsubscribing a name from a wildcard subscription after a complete
// response: the name counts as not held (go-control-plane's bookkeeping),
// so it is sent again with the next response; nothing else is.
func TestWildcardUnsubscribeAfterCompleteResponse(t *testing.T) {
	srv, addr, _ := startServer(t, Options{})
	m := testMesh()
	if err := srv.Update(m); err != nil {
		t.Fatal(err)
	}
	n1 := connect(t, addr, "tok-n1", "node/n1")
	n1.syncAll(TypeWorkload)
	n1.send(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeWorkload, ResourceNamesSubscribe: []string{"*"},
		ResourceNamesUnsubscribe: []string{"a/db-1"}})
	r := n1.next()
	if !cmp.Equal(names(r), []string{"a/db-1"}) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("after unsubscribing a/db-1 got %v removed %v, want [a/db-1] again", names(r), r.GetRemovedResources())
	}
	n1.ack(r)
	if err := srv.Update(withMovedWorkload(m, "10.0.2.99")); err != nil {
		t.Fatal(err)
	}
	if r := n1.next(); !cmp.Equal(names(r), []string{"a/web-2"}) {
		t.Errorf("next change got %v, want [a/web-2]", names(r))
	}
}

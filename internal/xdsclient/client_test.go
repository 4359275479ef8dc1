package xdsclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	deltaserver "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ambitmesh/ambit/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder keeps what a go-control-plane server saw and sent.
type recorder struct {
	mu    sync.Mutex
	reqs  []*discovery.DeltaDiscoveryRequest
	resps []*discovery.DeltaDiscoveryResponse
	auth  []string
}

func (r *recorder) requests() []*discovery.DeltaDiscoveryRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func (r *recorder) responses(typeURL string) []*discovery.DeltaDiscoveryResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*discovery.DeltaDiscoveryResponse
	for _, resp := range r.resps {
		if resp.GetTypeUrl() == typeURL {
			out = append(out, resp)
		}
	}
	return out
}

// requestFor returns the request answering nonce (ACK or NACK), if any.
func (r *recorder) requestFor(nonce string) *discovery.DeltaDiscoveryRequest {
	for _, req := range r.requests() {
		if req.GetResponseNonce() == nonce {
			return req
		}
	}
	return nil
}

// adsServer serves go-control-plane's delta server as ADS, the way its
// pkg/server/v3 does (that package drags in the rate-limit module, which this
// repository does not otherwise need).
type adsServer struct{ delta deltaserver.Server }

func (adsServer) StreamAggregatedResources(discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "state-of-the-world ADS is not served")
}

func (s adsServer) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return s.delta.DeltaStreamHandler(stream, resource.AnyType)
}

// callbacks implements go-control-plane's delta server Callbacks.
type callbacks struct {
	open     func(context.Context) error
	request  func(*discovery.DeltaDiscoveryRequest) error
	response func(*discovery.DeltaDiscoveryResponse)
}

func (c callbacks) OnDeltaStreamOpen(ctx context.Context, _ int64, _ string) error {
	return c.open(ctx)
}
func (c callbacks) OnDeltaStreamClosed(int64, *core.Node) {}
func (c callbacks) OnStreamDeltaRequest(_ int64, req *discovery.DeltaDiscoveryRequest) error {
	return c.request(req)
}
func (c callbacks) OnStreamDeltaResponse(_ int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	c.response(resp)
}

type testServer struct {
	addr   string
	rec    *recorder
	stopFn func()
}

func (s *testServer) stop() { s.stopFn() }

// startServer serves the linear caches (keyed by type URL) over delta ADS on
// addr ("127.0.0.1:0" for a fresh port).
func startServer(t *testing.T, addr string, caches map[string]*cache.LinearCache, opts ...grpc.ServerOption) *testServer {
	t.Helper()
	var lis net.Listener
	testkit.Eventually(t, 15*time.Second, "listen on "+addr, func() bool {
		var err error
		lis, err = net.Listen("tcp", addr)
		return err == nil
	})
	rec := &recorder{}
	mux := &cache.MuxCache{
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cache.Cache{},
	}
	for typeURL, c := range caches {
		mux.Caches[typeURL] = c
	}
	cb := callbacks{
		open: func(ctx context.Context) error {
			md, _ := metadata.FromIncomingContext(ctx)
			rec.mu.Lock()
			rec.auth = append(rec.auth, strings.Join(md.Get("authorization"), ","))
			rec.mu.Unlock()
			return nil
		},
		request: func(req *discovery.DeltaDiscoveryRequest) error {
			rec.mu.Lock()
			rec.reqs = append(rec.reqs, proto.Clone(req).(*discovery.DeltaDiscoveryRequest))
			rec.mu.Unlock()
			return nil
		},
		response: func(resp *discovery.DeltaDiscoveryResponse) {
			rec.mu.Lock()
			rec.resps = append(rec.resps, proto.Clone(resp).(*discovery.DeltaDiscoveryResponse))
			rec.mu.Unlock()
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer(opts...)
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, adsServer{deltaserver.NewServer(ctx, mux, cb)})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	var once sync.Once
	s := &testServer{addr: lis.Addr().String(), rec: rec, stopFn: func() {
		once.Do(func() {
			gs.Stop()
			cancel()
			<-served
		})
	}}
	t.Cleanup(s.stop)
	return s
}

func linear(t *testing.T, typeURL string, res map[string]proto.Message) *cache.LinearCache {
	t.Helper()
	init := map[string]types.Resource{}
	for name, m := range res {
		init[name] = m
	}
	return cache.NewLinearCache(typeURL, cache.WithInitialResources(init))
}

var testBackoff = Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond}

func testConfig(addr string) Config {
	return Config{
		Address:  addr,
		NodeID:   "node/worker-1",
		Token:    "test-token",
		TypeURLs: []string{strURL, intURL},
		Logger:   slog.New(slog.DiscardHandler),
		Backoff:  testBackoff,
	}
}

// runClient starts c.Run and, at cleanup, stops it and checks it returned nil.
func runClient(t *testing.T, c *Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v after cancel, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func strValue(s *Snapshot, name string) (string, bool) {
	m, ok := Get[*wrapperspb.StringValue](s, name)
	return m.GetValue(), ok
}

func stringsIn(s *Snapshot) map[string]string {
	out := map[string]string{}
	for name, m := range All[*wrapperspb.StringValue](s) {
		out[name] = m.GetValue()
	}
	return out
}

func names(rs []*discovery.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.GetName())
	}
	slices.Sort(out)
	return out
}

func TestInitialConfigUpdateRemoval(t *testing.T) {
	strs := linear(t, strURL, map[string]proto.Message{"a": wrapperspb.String("A"), "b": wrapperspb.String("B")})
	ints := linear(t, intURL, map[string]proto.Message{"n": wrapperspb.Int64(1)})
	srv := startServer(t, "127.0.0.1:0", map[string]*cache.LinearCache{strURL: strs, intURL: ints})

	c, err := New(testConfig(srv.addr))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Current(); got == nil || got.Generation() != 0 || got.Synced() {
		t.Fatalf("before Run: Current() = %+v, want an empty unsynced generation-0 snapshot", got)
	}

	var (
		watchMu sync.Mutex
		seen    []uint64
	)
	wctx, wcancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- c.Watch(wctx, func(s *Snapshot) {
			watchMu.Lock()
			seen = append(seen, s.Generation())
			watchMu.Unlock()
		})
	}()
	t.Cleanup(func() {
		wcancel()
		if err := <-watchDone; err != nil {
			t.Errorf("Watch returned %v", err)
		}
	})

	runClient(t, c)

	// Initial config.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	snap, err := c.WaitSynced(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"a": "A", "b": "B"}, stringsIn(snap)); diff != "" {
		t.Errorf("initial strings (-want +got):\n%s", diff)
	}
	if n, ok := Get[*wrapperspb.Int64Value](snap, "n"); !ok || n.GetValue() != 1 {
		t.Errorf("initial int n = %v, %v; want 1, true", n, ok)
	}
	for _, resp := range srv.rec.responses(strURL)[:1] {
		for _, r := range resp.GetResources() {
			if got, _ := snap.Get(strURL, r.GetName()); got.Version != r.GetVersion() {
				t.Errorf("resource %s: version %q, want the server's %q", r.GetName(), got.Version, r.GetVersion())
			}
		}
	}

	// The subscription: explicit wildcard per type, node and token, nothing held yet.
	var subs []*discovery.DeltaDiscoveryRequest
	for _, req := range srv.rec.requests() {
		if req.GetResponseNonce() == "" {
			subs = append(subs, req)
		}
	}
	if len(subs) != 2 {
		t.Fatalf("got %d subscription requests, want one per type (2)", len(subs))
	}
	for _, req := range subs {
		if req.GetNode().GetId() != "node/worker-1" || !slices.Equal(req.GetResourceNamesSubscribe(), []string{"*"}) || len(req.GetInitialResourceVersions()) != 0 {
			t.Errorf("subscription for %s: node %q, subscribe %q, initial versions %v; want node/worker-1, [*], none",
				req.GetTypeUrl(), req.GetNode().GetId(), req.GetResourceNamesSubscribe(), req.GetInitialResourceVersions())
		}
	}
	srv.rec.mu.Lock()
	auth := slices.Clone(srv.rec.auth)
	srv.rec.mu.Unlock()
	if diff := cmp.Diff([]string{"Bearer test-token"}, auth); diff != "" {
		t.Errorf("authorization metadata per stream (-want +got):\n%s", diff)
	}

	// An update arrives as a delta carrying only the changed resource.
	gen := c.Current().Generation()
	if err := strs.UpdateResource("b", wrapperspb.String("B2")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "b updated to B2", func() bool { v, _ := strValue(c.Current(), "b"); return v == "B2" })
	upd := srv.rec.responses(strURL)
	last := upd[len(upd)-1]
	if diff := cmp.Diff([]string{"b"}, names(last.GetResources())); diff != "" || len(last.GetRemovedResources()) != 0 {
		t.Errorf("update response: resources (-want +got):\n%s removed %v; want only b", diff, last.GetRemovedResources())
	}
	if got := c.Current().Generation(); got != gen+1 {
		t.Errorf("generation after update = %d, want %d", got, gen+1)
	}
	testkit.Eventually(t, 15*time.Second, "ACK of the update", func() bool { return srv.rec.requestFor(last.GetNonce()) != nil })
	if ack := srv.rec.requestFor(last.GetNonce()); ack.GetErrorDetail() != nil || ack.GetTypeUrl() != strURL {
		t.Errorf("reply to nonce %s = %v, want an ACK for %s", last.GetNonce(), ack, strURL)
	}
	if st := c.Status().Types[strURL]; st.AckedNonce != last.GetNonce() || st.AckedVersion != last.GetSystemVersionInfo() || st.Resources != 2 {
		t.Errorf("status for %s = %+v, want acked nonce %s version %s and 2 resources", strURL, st, last.GetNonce(), last.GetSystemVersionInfo())
	}

	// Removal removes.
	if err := strs.DeleteResource("a"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "a removed", func() bool { _, ok := strValue(c.Current(), "a"); return !ok })
	rem := srv.rec.responses(strURL)
	if got := rem[len(rem)-1].GetRemovedResources(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("removal response removed_resources = %v, want [a]", got)
	}
	if diff := cmp.Diff(map[string]string{"b": "B2"}, stringsIn(c.Current())); diff != "" {
		t.Errorf("after removal (-want +got):\n%s", diff)
	}

	st := c.Status()
	if !st.Connected || !st.Synced || st.Connects != 1 || st.Generation != c.Current().Generation() || st.LastNACK != nil {
		t.Errorf("status = %+v, want connected, synced, 1 connect, generation %d, no NACK", st, c.Current().Generation())
	}

	// Watch saw increasing generations and ends on the current one.
	final := c.Current().Generation()
	testkit.Eventually(t, 15*time.Second, "Watch to reach the current generation", func() bool {
		watchMu.Lock()
		defer watchMu.Unlock()
		return len(seen) > 0 && seen[len(seen)-1] == final
	})
	watchMu.Lock()
	defer watchMu.Unlock()
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Errorf("Watch generations not increasing: %v", seen)
		}
	}
}

func TestNACKKeepsLastGoodConfig(t *testing.T) {
	rejectBad := func(s *Snapshot) error {
		var errs []error
		for name, m := range All[*wrapperspb.StringValue](s) {
			if m.GetValue() == "bad" {
				errs = append(errs, errors.New(`resource "`+name+`": value "bad" is not allowed`))
			}
		}
		return errors.Join(errs...)
	}
	tests := []struct {
		name    string
		push    proto.Message
		wantErr string
	}{
		{"validate rejects", wrapperspb.String("bad"), `validate: resource "b": value "bad" is not allowed`},
		// BytesValue shares StringValue's wire format; 0xff is not UTF-8.
		{"unpack fails", wrapperspb.Bytes([]byte{0xff}), `resource "b": unpack ` + strURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			strs := linear(t, strURL, map[string]proto.Message{"a": wrapperspb.String("A"), "b": wrapperspb.String("B")})
			ints := linear(t, intURL, nil)
			srv := startServer(t, "127.0.0.1:0", map[string]*cache.LinearCache{strURL: strs, intURL: ints})
			cfg := testConfig(srv.addr)
			cfg.Validate = rejectBad
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			runClient(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			good, err := c.WaitSynced(ctx)
			if err != nil {
				t.Fatal(err)
			}

			before := len(srv.rec.responses(strURL))
			if err := strs.UpdateResource("b", tt.push); err != nil {
				t.Fatal(err)
			}
			var nack *discovery.DeltaDiscoveryRequest
			testkit.Eventually(t, 15*time.Second, "the client to answer the bad push", func() bool {
				resps := srv.rec.responses(strURL)
				if len(resps) <= before {
					return false
				}
				nack = srv.rec.requestFor(resps[before].GetNonce())
				return nack != nil
			})
			if nack.GetErrorDetail() == nil {
				t.Fatalf("client ACKed the bad push: %v", nack)
			}
			if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("error_detail.message = %q, want it to contain %q", msg, tt.wantErr)
			}
			if nack.GetTypeUrl() != strURL {
				t.Errorf("NACK type_url = %q, want %q", nack.GetTypeUrl(), strURL)
			}
			if got := c.Current(); got != good {
				t.Errorf("Current() changed after a NACK: generation %d -> %d, strings %v", good.Generation(), got.Generation(), stringsIn(got))
			}
			st := c.Status()
			if st.LastNACK == nil || st.LastNACK.Nonce != nack.GetResponseNonce() || st.LastNACK.Error != nack.GetErrorDetail().GetMessage() || st.Types[strURL].NACKs != 1 {
				t.Errorf("status after NACK = %+v (LastNACK %+v), want LastNACK for nonce %s with the sent message and 1 NACK", st, st.LastNACK, nack.GetResponseNonce())
			}

			// A fixed push is accepted again.
			if err := strs.UpdateResource("b", wrapperspb.String("fixed")); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 15*time.Second, "b fixed", func() bool { v, _ := strValue(c.Current(), "b"); return v == "fixed" })
			if got := c.Current().Generation(); got != good.Generation()+1 {
				t.Errorf("generation after the fix = %d, want %d (the NACKed push must not count)", got, good.Generation()+1)
			}
		})
	}
}

func TestKeepsConfigAcrossRestart(t *testing.T) {
	strs := linear(t, strURL, map[string]proto.Message{"a": wrapperspb.String("A"), "b": wrapperspb.String("B"), "c": wrapperspb.String("C")})
	ints := linear(t, intURL, map[string]proto.Message{"n": wrapperspb.Int64(1)})
	srv := startServer(t, "127.0.0.1:0", map[string]*cache.LinearCache{strURL: strs, intURL: ints})
	c, err := New(testConfig(srv.addr))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	good, err := c.WaitSynced(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Control plane goes away: the last good config stays, through failed redials.
	srv.stop()
	testkit.Eventually(t, 15*time.Second, "client to notice the disconnect", func() bool { return !c.Status().Connected })
	lost := time.Now()
	testkit.Eventually(t, 15*time.Second, "a failed reconnect attempt", func() bool { return c.Status().LastErrorAt.After(lost) })
	if got := c.Current(); got != good {
		t.Fatalf("Current() changed while the control plane was down: generation %d -> %d", good.Generation(), got.Generation())
	}

	// Restarted on the same address with a changed config: b changed, c gone, d new.
	strs2 := linear(t, strURL, map[string]proto.Message{"a": wrapperspb.String("A"), "b": wrapperspb.String("B2"), "d": wrapperspb.String("D")})
	ints2 := linear(t, intURL, map[string]proto.Message{"n": wrapperspb.Int64(1)})
	srv2 := startServer(t, srv.addr, map[string]*cache.LinearCache{strURL: strs2, intURL: ints2})

	want := map[string]string{"a": "A", "b": "B2", "d": "D"}
	testkit.Eventually(t, 15*time.Second, "client to converge on the restarted server", func() bool { return cmp.Equal(want, stringsIn(c.Current())) })

	for _, typeURL := range []string{strURL, intURL} {
		var sub *discovery.DeltaDiscoveryRequest
		for _, req := range srv2.rec.requests() {
			if req.GetTypeUrl() == typeURL && req.GetResponseNonce() == "" {
				sub = req
				break
			}
		}
		if sub == nil {
			t.Fatalf("no resubscription for %s on the restarted server", typeURL)
		}
		if diff := cmp.Diff(good.Versions(typeURL), sub.GetInitialResourceVersions()); diff != "" {
			t.Errorf("%s initial_resource_versions (-held +sent):\n%s", typeURL, diff)
		}
	}
	// Because the client said what it held, the server sent only the differences.
	first := srv2.rec.responses(strURL)[0]
	if diff := cmp.Diff([]string{"b", "d"}, names(first.GetResources())); diff != "" {
		t.Errorf("first response after restart: resources (-want +got):\n%s", diff)
	}
	if !slices.Equal(first.GetRemovedResources(), []string{"c"}) {
		t.Errorf("first response after restart: removed %v, want [c]", first.GetRemovedResources())
	}
	testkit.Eventually(t, 15*time.Second, "the unchanged int type to be answered", func() bool { return len(srv2.rec.responses(intURL)) > 0 })
	if got := srv2.rec.responses(intURL)[0].GetResources(); len(got) != 0 {
		t.Errorf("unchanged type resent %v after restart, want nothing", names(got))
	}
	if n, ok := Get[*wrapperspb.Int64Value](c.Current(), "n"); !ok || n.GetValue() != 1 {
		t.Errorf("int n after restart = %v, %v; want 1, true (kept)", n, ok)
	}
	if got := c.Current().Generation(); got <= good.Generation() {
		t.Errorf("generation after restart = %d, want > %d", got, good.Generation())
	}
	testkit.Eventually(t, 15*time.Second, "connected status", func() bool { st := c.Status(); return st.Connected && st.Connects == 2 })
}

func TestRunStops(t *testing.T) {
	closedAddr := func(t *testing.T) string {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close()
		return addr
	}
	tests := []struct {
		name string
		// setup returns the address to use and a function that is true once the
		// client is in the state where it should be cancelled.
		setup func(t *testing.T, c func() *Client) (addr string, ready func() bool)
	}{
		{"while connected", func(t *testing.T, c func() *Client) (string, func() bool) {
			srv := startServer(t, "127.0.0.1:0", map[string]*cache.LinearCache{
				strURL: linear(t, strURL, map[string]proto.Message{"a": wrapperspb.String("A")}),
				intURL: linear(t, intURL, nil),
			})
			return srv.addr, func() bool { return c().Current().Synced() }
		}},
		{"while backing off from a refused dial", func(t *testing.T, c func() *Client) (string, func() bool) {
			return closedAddr(t), func() bool { return c().Status().LastError != "" }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c *Client
			addr, ready := tt.setup(t, func() *Client { return c })
			cfg := testConfig(addr)
			cfg.Backoff = Backoff{Initial: time.Hour, Max: time.Hour} // a cancel must cut a long wait short
			var err error
			if c, err = New(cfg); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			testkit.Eventually(t, 15*time.Second, "client ready to be cancelled", ready)

			if err := c.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
				t.Errorf("second concurrent Run = %v, want an already-running error", err)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v after cancel, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10s of cancel")
			}
			if c.Status().Connected {
				t.Errorf("Status().Connected = true after Run returned")
			}
		})
	}
	// Every goroutine the client (and the test servers, stopped by cleanups of
	// the subtests) started is gone.
	goleak.VerifyNone(t)
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr []string
	}{
		{"ok", func(*Config) {}, nil},
		{"no address", func(c *Config) { c.Address = "" }, []string{"Address is empty"}},
		{"no node", func(c *Config) { c.NodeID = "" }, []string{"NodeID is empty"}},
		{"no types", func(c *Config) { c.TypeURLs = nil }, []string{"TypeURLs is empty"}},
		{"duplicate type", func(c *Config) { c.TypeURLs = []string{strURL, strURL} }, []string{"TypeURLs[1]", "listed twice"}},
		{"malformed type", func(c *Config) { c.TypeURLs = []string{"ambit.workload.v1.Workload"} }, []string{"TypeURLs[0]", "want type.googleapis.com/"}},
		{"unregistered type", func(c *Config) { c.TypeURLs = []string{"type.googleapis.com/ambit.nope.v1.Nope"} }, []string{"no Go type registered"}},
		{"token twice", func(c *Config) {
			c.TokenFunc = func(context.Context) (string, error) { return "x", nil }
		}, []string{"Token and TokenFunc"}},
		{"bad backoff", func(c *Config) { c.Backoff.Max = -time.Second }, []string{"Backoff.Max"}},
		{"all reported at once", func(c *Config) { c.Address, c.NodeID = "", "" }, []string{"Address is empty", "NodeID is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("127.0.0.1:1")
			tt.mutate(&cfg)
			c, err := New(cfg)
			if tt.wantErr == nil {
				if err != nil || c == nil {
					t.Fatalf("New = %v, %v; want a client", c, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New error = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestTLSAndRotatingToken checks the mTLS plug point (TransportCredentials)
// and that TokenFunc is asked again for every new stream.
func TestTLSAndRotatingToken(t *testing.T) {
	serverCert, pool := selfSignedCert(t)
	strs := linear(t, strURL, map[string]proto.Message{"a": wrapperspb.String("A")})
	ints := linear(t, intURL, nil)
	tlsCreds := grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS13}))
	srv := startServer(t, "127.0.0.1:0", map[string]*cache.LinearCache{strURL: strs, intURL: ints}, tlsCreds)

	var calls atomic.Int32
	cfg := testConfig(srv.addr)
	cfg.Token = ""
	cfg.TokenFunc = func(context.Context) (string, error) { return fmt.Sprintf("token-%d", calls.Add(1)), nil }
	cfg.TransportCredentials = credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "control.ambit.test", MinVersion: tls.VersionTLS13})
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}

	srv.stop()
	srv2 := startServer(t, srv.addr, map[string]*cache.LinearCache{strURL: strs, intURL: ints}, tlsCreds)
	testkit.Eventually(t, 15*time.Second, "reconnect over TLS", func() bool { return c.Status().Connects == 2 })

	var auth []string
	for _, s := range []*testServer{srv, srv2} {
		s.rec.mu.Lock()
		auth = append(auth, s.rec.auth...)
		s.rec.mu.Unlock()
	}
	// Failed dials in between also ask for a token, so only the shape is fixed:
	// one fresh token per stream, in order.
	if len(auth) != 2 || auth[0] != "Bearer token-1" || !strings.HasPrefix(auth[1], "Bearer token-") || auth[1] == auth[0] {
		t.Errorf("authorization per stream = %q, want Bearer token-1 then a newer token", auth)
	}
}

// selfSignedCert returns a server certificate for control.ambit.test and a
// pool trusting it.
func selfSignedCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "control.ambit.test"},
		DNSNames:              []string{"control.ambit.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

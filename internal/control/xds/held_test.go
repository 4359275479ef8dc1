package xds

import (
	"context"
	"slices"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/ambitmesh/ambit/internal/control/model"
)

type fixedAuth string

func (a fixedAuth) Authenticate(context.Context) (string, error) { return string(a), nil }

// A request that arrives while a response computed for the proxy is still
// queued on its stream (go-control-plane applies a response's map only when
// it sends it), with two translations in between: the new watch is
// answered against what the proxy held before the queued response, so the
// proxy ends up holding exactly the current view, removals included. The
// calls are those of go-control-plane's delta loop, in its order.
func TestRequestRacingQueuedResponseKeepsRemovals(t *testing.T) {
	without := func(m *model.Mesh, name string) *model.Mesh {
		out := *m
		out.Workloads = slices.DeleteFunc(slices.Clone(m.Workloads), func(w model.Workload) bool { return w.Ref.Name == name })
		return &out
	}
	m0 := testMesh()
	m1 := without(m0, "web-1")
	t.Run("two removals", func(t *testing.T) { racingRequest(t, m0, m1, without(m1, "db-1")) })
	// The view returns to what the proxy's map says it holds, but the
	// queued response takes it elsewhere first.
	t.Run("back to the held version", func(t *testing.T) { racingRequest(t, m0, m1, m0) })
}

// racingRequest: the proxy holds m0's view; m1 answers its open watch and
// m2 lands before the watch of its next request is created.
func racingRequest(t *testing.T, m0, m1, m2 *model.Mesh) {
	s := NewServer(Options{Authenticator: fixedAuth("node/n1")})
	cb, wr := callbacks{s}, watcher{s}
	if err := s.Update(m0); err != nil {
		t.Fatal(err)
	}
	if err := cb.OnDeltaStreamOpen(context.Background(), 1, TypeWorkload); err != nil {
		t.Fatal(err)
	}
	sub := stream.NewDeltaSubscription(nil, nil, nil, true)
	ch := make(chan cache.DeltaResponse, 4)
	held := map[string]bool{} // what the proxy holds
	process := func() {
		for {
			select {
			case r := <-ch:
				d, err := r.GetDeltaDiscoveryResponse()
				if err != nil {
					t.Fatal(err)
				}
				for _, res := range d.GetResources() {
					held[res.GetName()] = true
				}
				for _, n := range d.GetRemovedResources() {
					delete(held, n)
				}
				sub.SetReturnedResources(r.GetNextVersionMap())
			default:
				return
			}
		}
	}
	node := &core.Node{Id: "node/n1"}
	var cancel func()
	request := func(nonce string) {
		t.Helper()
		req := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: TypeWorkload, ResponseNonce: nonce}
		if err := cb.OnStreamDeltaRequest(1, req); err != nil {
			t.Fatal(err)
		}
		if cancel != nil {
			cancel()
		}
		var err error
		if cancel, err = wr.CreateDeltaWatch(req, sub, ch); err != nil {
			t.Fatal(err)
		}
	}
	request("")
	process()
	request("1") // caught up: the watch stays open
	process()

	// The next request: the loop drained the queue, then two translations
	// land before its watch is created; the first answers the open watch.
	req := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: TypeWorkload, ResponseNonce: "1"}
	if err := cb.OnStreamDeltaRequest(1, req); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(m1); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(m2); err != nil {
		t.Fatal(err)
	}
	cancel()
	sub.UpdateResourceSubscriptions(nil, nil)
	if _, err := wr.CreateDeltaWatch(req, sub, ch); err != nil {
		t.Fatal(err)
	}
	process()

	want := map[string]bool{}
	for n := range s.Views().Set(ProxyID{Kind: KindNode, Node: "n1"}, TypeWorkload).Items {
		want[n] = true
	}
	if diff := cmp.Diff(want, held); diff != "" {
		t.Fatalf("the proxy holds other workloads than its view (-view +held):\n%s", diff)
	}
}

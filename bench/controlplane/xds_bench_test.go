package controlplane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/ambitmesh/ambit/internal/control/xds"
	"github.com/ambitmesh/ambit/internal/control/xds/xdstest"
)

const clients = 50

func TestSyntheticMeshShape(t *testing.T) {
	m := Mesh(Default)
	if len(m.Workloads) != 10000 || len(m.Services) != 1000 {
		t.Fatalf("mesh has %d workloads, %d services", len(m.Workloads), len(m.Services))
	}
	routes := 0
	for _, g := range m.Gateways {
		for _, l := range g.Listeners {
			for _, vh := range l.VirtualHosts {
				routes += len(vh.Routes)
			}
		}
		for _, sr := range g.MeshRoutes {
			routes += len(sr.Routes)
		}
	}
	if routes != 1000 {
		t.Fatalf("mesh has %d routes, want 1000", routes)
	}
	if _, err := xds.ComputeViews(m, nil); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkComputeViews(b *testing.B) {
	m := Mesh(Default)
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			if _, err := xds.ComputeViews(m, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-endpoint-change", func(b *testing.B) {
		prev, err := xds.ComputeViews(m, nil)
		if err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			i++
			next := MoveEndpoint(m, i%len(m.Workloads), netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}))
			if prev, err = xds.ComputeViews(next, prev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// event is one response received by one client.
type event struct {
	client    int
	typeURL   string
	at        time.Time
	resources int
	removed   int
	bytes     int
}

type fleet struct {
	srv     *xds.Server
	addr    string
	events  chan event
	stop    func()
	want    []map[string]int // per client, per type: resources in its view
	clients int
}

// startServer serves srv on 127.0.0.1 and returns its address and a stop func.
func startServer(b *testing.B, srv *xds.Server) (string, func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	return lis.Addr().String(), func() { gs.Stop(); <-done }
}

func newFleet(b *testing.B, n int) *fleet {
	tokens := xdstest.TokenAuthenticator{}
	for i := range n {
		tokens[fmt.Sprintf("tok-%d", i)] = nodeID(i)
	}
	srv := xds.NewServer(xds.Options{Authenticator: tokens, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	addr, stop := startServer(b, srv)
	return &fleet{srv: srv, addr: addr, stop: stop, clients: n, events: make(chan event, 64*n)}
}

func nodeID(i int) string { return fmt.Sprintf("node/node-%02d", i%Default.Nodes) }

// expect records how many resources of each type every client's view has.
func (f *fleet) expect(b *testing.B) {
	v := f.srv.Views()
	f.want = make([]map[string]int, f.clients)
	for i := range f.clients {
		id, err := xds.ParseProxyID(nodeID(i))
		if err != nil {
			b.Fatal(err)
		}
		f.want[i] = map[string]int{}
		for _, t := range xds.NodeTypes {
			f.want[i][t] = len(v.Set(id, t).Items)
		}
	}
}

// connect starts every client: subscribe to the node types, ACK every
// response, report it as an event. Returns a func that closes them all.
func (f *fleet) connect(b *testing.B) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, f.clients)
	var conns []*grpc.ClientConn
	for i := range f.clients {
		conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(xdstest.BearerToken(fmt.Sprintf("tok-%d", i))))
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			b.Fatal(err)
		}
		node := &core.Node{Id: nodeID(i)}
		for _, t := range xds.NodeTypes {
			if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: t}); err != nil {
				b.Fatal(err)
			}
		}
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				r, err := stream.Recv()
				if err != nil {
					return
				}
				at := time.Now()
				_ = stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
				select {
				case f.events <- event{client: i, typeURL: r.GetTypeUrl(), at: at, resources: len(r.GetResources()),
					removed: len(r.GetRemovedResources()), bytes: proto.Size(r)}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return func() {
		cancel()
		for range f.clients {
			<-done
		}
		for _, c := range conns {
			c.Close()
		}
	}
}

// waitInitial consumes events until every client holds its whole view;
// returns the bytes received.
func (f *fleet) waitInitial(b *testing.B) int {
	got := make([]map[string]int, f.clients)
	for i := range got {
		got[i] = map[string]int{}
	}
	pending, total := f.clients, 0
	timeout := time.After(5 * time.Minute)
	for pending > 0 {
		select {
		case ev := <-f.events:
			total += ev.bytes
			before := complete(got[ev.client], f.want[ev.client])
			got[ev.client][ev.typeURL] += ev.resources
			if !before && complete(got[ev.client], f.want[ev.client]) {
				pending--
			}
		case <-timeout:
			b.Fatalf("initial push incomplete after 5m: %d clients pending", pending)
		}
	}
	return total
}

func complete(got, want map[string]int) bool {
	for t, n := range want {
		if got[t] < n {
			return false
		}
	}
	return true
}

// BenchmarkInitialPush measures 50 node proxies connecting to a control
// plane that already has the 10,000-workload mesh, until each holds its full
// view (10,000 Workloads, 1,000 Services, its Authorizations).
func BenchmarkInitialPush(b *testing.B) {
	m := Mesh(Default)
	var bytes int
	for b.Loop() {
		b.StopTimer()
		f := newFleet(b, clients)
		if err := f.srv.Update(m); err != nil {
			b.Fatal(err)
		}
		f.expect(b)
		b.StartTimer()
		closeClients := f.connect(b)
		bytes += f.waitInitial(b)
		b.StopTimer()
		closeClients()
		f.stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(bytes)/float64(b.N)/(1<<20), "MiB-sent/op")
}

// BenchmarkEndpointChange measures one endpoint change (a workload gets a
// new address) from Update (view computation included) until every one of
// 50 connected node proxies has received it.
func BenchmarkEndpointChange(b *testing.B) {
	m := Mesh(Default)
	f := newFleet(b, clients)
	defer f.stop()
	if err := f.srv.Update(m); err != nil {
		b.Fatal(err)
	}
	f.expect(b)
	closeClients := f.connect(b)
	defer closeClients()
	f.waitInitial(b)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapMiB := float64(ms.HeapInuse) / (1 << 20)

	var all, each []time.Duration
	var resources, bytes, responses int
	i := 0
	for b.Loop() {
		i++
		m = MoveEndpoint(m, (i*7919)%len(m.Workloads), netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}))
		start := time.Now()
		if err := f.srv.Update(m); err != nil {
			b.Fatal(err)
		}
		seen := make([]bool, f.clients)
		var last time.Time
		for n := 0; n < f.clients; {
			select {
			case ev := <-f.events:
				responses++
				resources += ev.resources + ev.removed
				bytes += ev.bytes
				if ev.typeURL != xds.TypeWorkload || seen[ev.client] {
					b.Fatalf("client %d got an extra %s response with %d resources", ev.client, ev.typeURL, ev.resources)
				}
				seen[ev.client] = true
				n++
				each = append(each, ev.at.Sub(start))
				if ev.at.After(last) {
					last = ev.at
				}
			case <-time.After(time.Minute):
				b.Fatal("change not delivered to every client within 1m")
			}
		}
		all = append(all, last.Sub(start))
	}
	changes := float64(len(all))
	b.ReportMetric(pct(all, 50), "all-clients-p50-ms")
	b.ReportMetric(pct(all, 99), "all-clients-p99-ms")
	b.ReportMetric(pct(each, 50), "per-client-p50-ms")
	b.ReportMetric(pct(each, 99), "per-client-p99-ms")
	b.ReportMetric(float64(resources)/changes/clients, "resources/change/client")
	b.ReportMetric(float64(responses)/changes/clients, "responses/change/client")
	b.ReportMetric(float64(bytes)/changes/clients, "bytes/change/client")
	b.ReportMetric(heapMiB, "heap-MiB")
}

func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return float64(s[i].Microseconds()) / 1000
}

package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/testkit"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// A TCP listener's metrics describe the destination by its workload's
// labels, as the HTTP ones do (Istio's app, version and canonical
// service/revision).
func TestTCPMetricsUseEndpointLabels(t *testing.T) {
	b := backend("labelled", tcpEcho(t))
	b.Endpoints[0].Labels = map[string]string{"app": "orders-db", "version": "v7"}
	l := &gatewayv1.Listener{Name: "db", Port: 5433, Protocol: "TCP", VirtualHosts: []*gatewayv1.VirtualHost{{Hostname: "*",
		Routes: []*gatewayv1.Route{{Source: &gatewayv1.RouteSource{Kind: "TCPRoute", Namespace: "default", Name: "db"},
			Backends: []*gatewayv1.BackendRef{ref("labelled", 1)}}}}}}
	g := startPort(t, FamilyTCP, 5433, []*gatewayv1.Listener{l}, []*gatewayv1.Backend{b})
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	echoCheck(t, c)
	c.Close()
	reg := prometheus.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"destination_app": "orders-db", "destination_version": "v7",
		"destination_canonical_service": "orders-db", "destination_canonical_revision": "v7", "destination_workload": "labelled-a"}
	var got map[string]string
	testkit.Eventually(t, 5*time.Second, "a closed connection to labelled", func() bool {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "istio_tcp_connections_closed_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, lp := range m.GetLabel() {
					labels[lp.GetName()] = lp.GetValue()
				}
				if labels["destination_service_name"] == "labelled" {
					got = labels
					return true
				}
			}
		}
		return false
	})
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// A TCP listener's connection on which nothing moves for TCPIdleTimeout
// (a client that vanished, an upstream that never closes) is closed, with
// an access log line saying why.
func TestTCPIdleTimeout(t *testing.T) {
	b := backend("idle", tcpEcho(t))
	l := &gatewayv1.Listener{Name: "db", Port: 5434, Protocol: "TCP", VirtualHosts: []*gatewayv1.VirtualHost{{Hostname: "*",
		Routes: []*gatewayv1.Route{{Source: &gatewayv1.RouteSource{Kind: "TCPRoute", Namespace: "default", Name: "db"},
			Backends: []*gatewayv1.BackendRef{ref("idle", 1)}}}}}}
	logs := &testkit.LogBuffer{}
	g := serveEngine(t, Config{AccessLog: testLogger(logs), Logger: testLogger(logs), TCPIdleTimeout: 100 * time.Millisecond}, logs,
		[]*gatewayv1.Listener{l}, []*gatewayv1.Backend{b}, nil,
		func(ctx context.Context, e *Engine, ln net.Listener) error {
			return e.ServeListener(ctx, ln, 5434, FamilyTCP, time.Second)
		})
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoCheck(t, c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("idle connection: read %d, %v; want EOF (closed by the gateway)", n, err)
	}
	testkit.Eventually(t, 5*time.Second, "the idle access log line", func() bool {
		for _, r := range logs.Records(t) {
			if r["msg"] == "connection complete" && r["response_flags"] == telemetry.FlagIdleTimeout {
				return strings.Contains(fmt.Sprint(r["error"]), "without a byte either way")
			}
		}
		return false
	})
}

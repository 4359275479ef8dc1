package waypoint_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/testkit"
	echov1 "github.com/ambitmesh/ambit/proto/ambit/echo/v1"
)

// startGRPCEcho runs a gRPC echo server named pod on ip and returns its port.
func startGRPCEcho(t *testing.T, ip, pod string) int {
	t.Helper()
	return runEcho(t, echo.Options{GRPCAddress: ip + ":0", Context: echo.Context{Pod: pod}}).GRPCAddr().(*net.TCPAddr).Port
}

// grpcMesh: next to meshTmpl's Gateway, two gRPC services (appProtocol
// grpc: HTTP/2 to the endpoints) and a GRPCRoute: Echo with x-canary: 1
// goes to v2 (rule "canary", a response header added); the rest of the
// service splits between v1 and v2 with a request header added.
const grpcMesh = `
apiVersion: v1
kind: Service
metadata: {name: grpc-v1, namespace: shop}
spec:
  selector: {app: grpc, version: v1}
  ports: [{name: grpc, port: 9000, targetPort: grpc, appProtocol: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: grpc-v2, namespace: shop}
spec:
  selector: {app: grpc, version: v2}
  ports: [{name: grpc, port: 9000, targetPort: grpc, appProtocol: grpc}]
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: grpc-v1-1, namespace: shop, labels: {app: grpc, version: v1}}
spec: {addresses: ["127.0.0.53"], node: node-a, serviceAccount: grpc, ports: {grpc: %[1]d}}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: grpc-v2-1, namespace: shop, labels: {app: grpc, version: v2}}
spec: {addresses: ["127.0.0.54"], node: node-a, serviceAccount: grpc, ports: {grpc: %[2]d}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [grpc.example.com]
  rules:
  - name: canary
    matches:
    - method: {service: ambit.echo.v1.EchoService, method: Echo}
      headers: [{name: x-canary, value: "1"}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-rule, value: canary}]}}]
    backendRefs: [{name: grpc-v2, port: 9000}]
  - matches: [{method: {service: ambit.echo.v1.EchoService}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-added, value: "yes"}]}}]
    backendRefs: [{name: grpc-v1, port: 9000, weight: 1}, {name: grpc-v2, port: 9000, weight: 1}]
`

// TestGatewayGRPCRoute: gRPC clients (HTTP/2 without TLS) through
// `ambit gateway` from a config folder: GRPCRoute method and header
// matches, filters, weights and named rules, and Unimplemented for a
// method no route claims.
func TestGatewayGRPCRoute(t *testing.T) {
	v1, v2 := startGRPCEcho(t, "127.0.0.53", "v1"), startGRPCEcho(t, "127.0.0.54", "v2")
	port := freePort(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), fmt.Sprintf(meshTmpl, port, 1, 1)) // the Gateway; its web services are not used
	writeFile(t, filepath.Join(dir, "grpc.yaml"), fmt.Sprintf(grpcMesh, v1, v2))
	ctx := t.Context()
	cp := controltest.Start(t, dir)
	logs := &testkit.LogBuffer{}
	g := runGateway(t, ctx, cp, slog.New(slog.NewJSONHandler(logs, nil)))

	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := echov1.NewEchoServiceClient(conn)
	call := func(md metadata.MD) (*echov1.EchoResponse, metadata.MD) {
		t.Helper()
		var hdr metadata.MD
		resp, err := client.Echo(metadata.NewOutgoingContext(ctx, md), &echov1.EchoRequest{Payload: []byte("hi")}, grpc.Header(&hdr))
		if err != nil {
			t.Fatalf("Echo %v: %v", md, err)
		}
		if !bytes.Equal(resp.GetRequest().GetPayload(), []byte("hi")) {
			t.Fatalf("payload %q came back, want hi", resp.GetRequest().GetPayload())
		}
		return resp, hdr
	}
	header := func(resp *echov1.EchoResponse, key string) string {
		for _, h := range resp.GetAssertions().GetHeaders() {
			if h.GetKey() == key {
				return h.GetValue()
			}
		}
		return ""
	}

	t.Run("method and header match with a response filter", func(t *testing.T) {
		resp, hdr := call(metadata.Pairs("x-canary", "1"))
		if pod := resp.GetAssertions().GetContext().GetPod(); pod != "v2" || strings.Join(hdr.Get("x-rule"), ",") != "canary" {
			t.Errorf("served by %q with x-rule %v, want v2 with canary", pod, hdr.Get("x-rule"))
		}
		if !strings.Contains(logs.String(), `"route":"GRPCRoute/shop/echo#0","rule":"canary"`) {
			t.Errorf("no access log line naming rule canary:\n%.2000s", logs.String())
		}
	})

	t.Run("weights and a request filter", func(t *testing.T) {
		count := map[string]int{}
		for range 60 {
			resp, _ := call(nil)
			count[resp.GetAssertions().GetContext().GetPod()]++
			if got := header(resp, "x-added"); got != "yes" {
				t.Fatalf("upstream saw x-added %q, want yes", got)
			}
		}
		// 1:1 over 60: each side has probability 2^-59 of being empty.
		if count["v1"] == 0 || count["v2"] == 0 || count["v1"]+count["v2"] != 60 {
			t.Errorf("split %v, want both v1 and v2", count)
		}
	})

	t.Run("unrouted method", func(t *testing.T) {
		err := conn.Invoke(ctx, "/ambit.echo.v1.Other/Echo", &echov1.EchoRequest{}, &echov1.EchoResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("unrouted method: %v, want Unimplemented", err)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + g.Addr("metrics").String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// Labels are exposed sorted by name; each want is a run of them.
		for _, want := range []string{
			// destination_app, _version and _canonical_* from the workload's
			// app and version labels, as Istio's.
			`istio_requests_total{.*destination_app="grpc",destination_canonical_revision="v2",destination_canonical_service="grpc",.*destination_service="grpc-v2.shop.svc.cluster.local",.*destination_version="v2",destination_workload="grpc-v2-1",.*grpc_response_status="0",reporter="source",request_protocol="grpc",response_code="200",response_flags="-",`,
			`istio_request_duration_milliseconds_count{.*grpc_response_status="0",reporter="source",request_protocol="grpc",response_code="200",`,
			`istio_requests_total{.*request_protocol="grpc",response_code="404",response_flags="NR",`,
		} {
			if !regexp.MustCompile(want).Match(b) {
				t.Errorf("no series matching %s in:\n%s", want, grepLines(b, "istio_requests_total"))
			}
		}
	})
}

func grepLines(b []byte, sub string) string {
	var out []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

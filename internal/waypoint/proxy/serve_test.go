package proxy

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		changed  bool
	}{
		{"/a/b", "/a/b", false},
		{"/", "/", false},
		{"/a/./b", "/a/b", true},
		{"/a/../b", "/b", true},
		{"/public/../admin", "/admin", true},
		{"/../../etc", "/etc", true},
		{"/a/b/..", "/a/", true},
		{"/a/.", "/a/", true},
		{"/a/%2e%2E/b", "/b", true},
		{"/a/.%2e/b", "/b", true},
		{"/a%2F../b", "/a%2F../b", false}, // %2F is data: "a%2F.." is one segment, as Envoy keeps it
		{"/a%2f..", "/a%2f..", false},
		{"/.well-known/x", "/.well-known/x", false},
		{"/a/...", "/a/...", false},
		{"*", "*", false},
		// Escaped unreserved characters are the characters themselves.
		{"/%61dmin/users", "/admin/users", true},
		{"/%41%44MIN", "/ADMIN", true},
		{"/public/%2E%2e/%61dmin", "/admin", true},
		{"/a%7Eb%2Dc%5F", "/a~b-c_", true},
		{"/a%20b%2Fc%3F", "/a%20b%2Fc%3F", false}, // reserved and others stay escaped
		{"/a%zz/%4", "/a%zz/%4", false},
	} {
		got, changed := normalizePath(tc.in)
		if got != tc.want || changed != tc.changed {
			t.Errorf("normalizePath(%q) = %q, %v; want %q, %v", tc.in, got, changed, tc.want, tc.changed)
		}
	}
}

// The request and response size histograms count heads and bodies as
// they crossed the proxy.
var sizesRuns atomic.Int64

func TestRequestAndResponseBytes(t *testing.T) {
	// The histograms are process-wide: a name of its own per run (-count).
	name := fmt.Sprintf("sizes-%d", sizesRuns.Add(1))
	sizes := startEcho(t, name)
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {rt("all", prefix("/"), ref(name, 1))}}, "*")},
		[]*gatewayv1.Backend{backend(name, sizes)})
	const body = 10000
	resp, err := client(t).Post("http://"+g.addr+"/upload", "application/octet-stream", strings.NewReader(strings.Repeat("x", body)))
	if err != nil {
		t.Fatal(err)
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST: %d, %v", resp.StatusCode, err)
	}
	reg := prometheus.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	// The request is recorded when its handler returns, which may be just
	// after the client read the answer.
	sum := map[string]float64{}
	for deadline := time.Now().Add(10 * time.Second); len(sum) < 2 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "destination_service_name" && lp.GetValue() == name {
						if h := m.GetHistogram(); h.GetSampleCount() == 1 {
							sum[mf.GetName()] = h.GetSampleSum()
						}
					}
				}
			}
		}
	}
	// Heads add at least their start lines; neither adds more than 1 KiB here.
	if got := sum["istio_request_bytes"]; got < body+float64(len("POST /upload HTTP/1.1")) || got > body+1024 {
		t.Errorf("istio_request_bytes = %v, want the %d-byte body plus its head", got, body)
	}
	if got, n := sum["istio_response_bytes"], float64(len(answer)); got < n+float64(len("HTTP/1.1 200 OK")) || got > n+1024 {
		t.Errorf("istio_response_bytes = %v, want the %v-byte answer plus its head", got, n)
	}
}

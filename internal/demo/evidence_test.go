package demo

import (
	"testing"
	"time"
)

func TestSplitBounds(t *testing.T) {
	for _, tc := range []struct {
		n      int
		p      float64
		lo, hi int
	}{
		{1000, 0.10, 53, 147}, // sd 9.49
		{100, 0.10, 0, 25},    // sd 3: the lower bound clips at 0
		{1000, 0.5, 421, 579}, // sd 15.8
		{10, 1, 10, 10},       // certain
	} {
		lo, hi := splitBounds(tc.n, tc.p, 5)
		if lo != tc.lo || hi != tc.hi {
			t.Errorf("splitBounds(%d, %v, 5) = [%d, %d], want [%d, %d]", tc.n, tc.p, lo, hi, tc.lo, tc.hi)
		}
	}
	// A broken split (50/50, or v2 never chosen) is outside the 90/10 range at the default sample.
	lo, hi := splitBounds(1000, 0.10, 5)
	for _, v2 := range []int{0, 500, 1000} {
		if v2 >= lo && v2 <= hi {
			t.Errorf("%d of 1000 to v2 passes the 10%% check [%d, %d]", v2, lo, hi)
		}
	}
}

// The node proxy's access log as `ambit node` writes it (slog text).
const nodeLog = `time=2026-11-23T15:20:01.000Z level=INFO msg="node proxy started" node=node-2
time=2026-11-23T15:20:02.000Z level=INFO msg="connection complete" component=proxy src.addr=10.1.1.2:51566 src.workload=productpage-1 src.identity=spiffe://cluster.local/ns/shop/sa/productpage dst.addr=10.2.2.2:15008 dst.hbone_addr=10.2.2.2:8080 dst.workload=ratings-1 direction=inbound bytes_sent=84 bytes_recv=496 duration=1.2ms response_flags=-
time=2026-11-23T15:20:03.000Z level=WARN msg="connection complete" component=proxy src.addr=10.1.1.2:51570 src.identity=spiffe://cluster.local/ns/shop/sa/productpage dst.workload=ratings-1 direction=inbound response_flags=- policy=shop/deny-productpage error="hbone: denied by policy: denied by policy shop/deny-productpage"
`

func TestAccessLines(t *testing.T) {
	got := accessLines(nodeLog, map[string]string{"direction": "inbound", "dst.workload": "ratings-1"})
	if len(got) != 2 {
		t.Fatalf("%d lines, want 2: %v", len(got), got)
	}
	if got[0]["src.identity"] != "spiffe://cluster.local/ns/shop/sa/productpage" || got[0]["dst.hbone_addr"] != "10.2.2.2:8080" {
		t.Errorf("first line parsed as %v", got[0])
	}
	if got[1]["error"] != "hbone: denied by policy: denied by policy shop/deny-productpage" || got[1]["policy"] != "shop/deny-productpage" {
		t.Errorf("quoted values parsed as %v", got[1])
	}
	if n := len(accessLines(nodeLog, map[string]string{"policy": "shop/other"})); n != 0 {
		t.Errorf("%d lines for a policy never logged", n)
	}
	if n := len(accessLines(nodeLog, map[string]string{"node": "node-2"})); n != 0 {
		t.Errorf("%d lines: a line that is not an access log line matched", n)
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(s, 0.5); p != 50*time.Millisecond {
		t.Errorf("p50 = %s, want 50ms", p)
	}
	if p := percentile(s, 0.99); p != 99*time.Millisecond {
		t.Errorf("p99 = %s, want 99ms", p)
	}
	if p := percentile(nil, 0.99); p != 0 {
		t.Errorf("p99 of nothing = %s", p)
	}
}

func TestWaypointRequests(t *testing.T) {
	metrics := `# HELP istio_requests_total Requests
# TYPE istio_requests_total counter
istio_requests_total{destination_workload="reviews-v1-1",reporter="waypoint",response_code="200"} 897
istio_requests_total{destination_workload="reviews-v1-1",reporter="waypoint",response_code="503"} 2
istio_requests_total{destination_workload="reviews-v2-1",reporter="waypoint",response_code="200"} 103
istio_requests_total{destination_workload="reviews-v2-1",reporter="source",response_code="200"} 50
istio_request_duration_milliseconds_count{destination_workload="reviews-v2-1",reporter="waypoint"} 103
`
	got := waypointRequests(metrics)
	if len(got) != 2 || got["reviews-v1-1"] != 897 || got["reviews-v2-1"] != 103 {
		t.Errorf("waypointRequests = %v, want reviews-v1-1 897, reviews-v2-1 103 (200s by the waypoint only)", got)
	}
}

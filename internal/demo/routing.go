package demo

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// plainCall: productpage (node-1) -> ratings (node-2), and the identities each node proxy proved.
func (w *walk) plainCall(ctx context.Context, p *printer) error {
	l := w.m.lay
	_, target := l.app("productpage-1", "ratings")
	p.line("sent: GET %s from productpage-1 (%s) to %s (%s)", svcURL("ratings", "/hello"), l.pod("productpage-1").ip, target, l.appNote)
	a, err := w.converge(ctx, "productpage-1", "ratings", "ratings")
	if err != nil {
		return err
	}
	r, _ := a.echo()
	p.line("got:  %d from %s; the app saw the client as %s", a.status, r.Pod, r.RemoteAddr)
	if r.Pod != "ratings-1" {
		return mismatch("an answer from ratings-1", "%s", r.Pod)
	}
	out, err := w.waitAccess(ctx, "node-1", map[string]string{"direction": "outbound", "src.addr": a.local})
	if err != nil {
		return err
	}
	p.line("node-1 (outbound) tunnelled to %s; the peer proved %s", out["dst.addr"], out["dst.identity"])
	if out["dst.identity"] != spiffeID("ratings") {
		return mismatch("node-1 to see the peer "+spiffeID("ratings"), "%q", out["dst.identity"])
	}
	in, err := w.waitAccess(ctx, "node-2", map[string]string{"direction": "inbound", "dst.workload": "ratings-1", "src.identity": spiffeID("productpage")})
	if err != nil {
		return err
	}
	p.line("node-2 (inbound) accepted %s for %s; the peer proved %s", in["dst.hbone_addr"], in["dst.workload"], in["src.identity"])
	return nil
}

// split: N requests productpage -> reviews; the waypoint's 90/10 must show within 5 sigmas.
func (w *walk) split(ctx context.Context, p *printer) error {
	if _, err := w.converge(ctx, "productpage-1", "reviews", "reviews"); err != nil {
		return err
	}
	_, target := w.m.lay.app("productpage-1", "reviews")
	// The waypoint is new: the one 200 it served so far is converge's. Wait until it is counted,
	// so the burst's requests are all that the counts grow by.
	var before map[string]int
	for deadline := time.Now().Add(5 * time.Second); ; {
		var err error
		if before, err = w.waypointMetrics(ctx); err != nil {
			return err
		}
		if before["reviews-v1-1"]+before["reviews-v2-1"] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			return mismatch("the waypoint's istio_requests_total to count the first request within 5s", "%v", before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.line("sent: %d x GET %s from productpage-1 to %s (4 connections)", w.requests, svcURL("reviews", "/canary"), target)
	pods, errs, _ := w.burst(ctx, "productpage-1", "reviews", "/canary", nil, w.requests, 0)
	p.line("got:  reviews-v1-1 %d, reviews-v2-1 %d, other %d, errors %d", pods["reviews-v1-1"], pods["reviews-v2-1"],
		w.requests-pods["reviews-v1-1"]-pods["reviews-v2-1"]-errs, errs)
	lo, hi := splitBounds(w.requests, 0.10, 5)
	v2 := pods["reviews-v2-1"]
	if errs > 0 || pods["reviews-v1-1"]+v2 != w.requests {
		return mismatch(fmt.Sprintf("all %d answered by reviews-v1-1 or reviews-v2-1", w.requests), "%v and %d errors", pods, errs)
	}
	p.line("v2 share %.1f%%; a 10%% weight lands in [%d, %d] of %d (binomial, 5 sigmas)", 100*float64(v2)/float64(w.requests), lo, hi, w.requests)
	if v2 < lo || v2 > hi {
		return mismatch(fmt.Sprintf("between %d and %d answers from reviews-v2-1", lo, hi), "%d", v2)
	}
	// The waypoint counted the same split (its metrics are recorded as each response ends).
	var delta map[string]int
	deadline := time.Now().Add(5 * time.Second)
	for {
		after, err := w.waypointMetrics(ctx)
		if err != nil {
			return err
		}
		delta = map[string]int{}
		for _, pod := range []string{"reviews-v1-1", "reviews-v2-1"} {
			delta[pod] = after[pod] - before[pod]
		}
		if delta["reviews-v1-1"] == pods["reviews-v1-1"] && delta["reviews-v2-1"] == v2 {
			break
		}
		if time.Now().After(deadline) {
			return mismatch(fmt.Sprintf("the waypoint's istio_requests_total to grow by %v", pods), "%v", delta)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.line("the waypoint's istio_requests_total{reporter=\"waypoint\"} grew by reviews-v1-1 %d, reviews-v2-1 %d", delta["reviews-v1-1"], delta["reviews-v2-1"])
	return nil
}

// waypointMetrics reads the waypoint's request counts by destination workload.
func (w *walk) waypointMetrics(ctx context.Context) (map[string]int, error) {
	l := w.m.lay
	url := "http://" + localize(l.waypointEP.metrics) + "/metrics"
	a, err := get(ctx, l.tool(l.waypoint, localize(l.waypointEP.metrics)), url, nil)
	if err != nil || a.status != 200 {
		return nil, mismatch("the waypoint's metrics at "+url, "%s", describe(a, err))
	}
	return waypointRequests(string(a.body)), nil
}

// header: x-region: eu -> v2 every time.
func (w *walk) header(ctx context.Context, p *printer) error {
	const n = 20
	hdr := http.Header{"X-Region": {"eu"}}
	p.line("sent: %d x GET %s with x-region: eu from productpage-1", n, svcURL("reviews", "/eu"))
	pods, errs, _ := w.burst(ctx, "productpage-1", "reviews", "/eu", hdr, n, 0)
	p.line("got:  %s", countList(pods, errs))
	if pods["reviews-v2-1"] != n {
		return mismatch(fmt.Sprintf("all %d from reviews-v2-1", n), "%s", countList(pods, errs))
	}
	return nil
}

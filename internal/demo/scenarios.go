package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// walk holds what the scenarios share.
type walk struct {
	m        *mesh
	requests int           // the canary split's sample
	load     time.Duration // the load run's length
}

const policyFile = "policy.yaml"

func (w *walk) scenarios() []scenario {
	return []scenario{
		{"a call through the mesh: productpage -> ratings (mTLS between node-1 and node-2)", w.plainCall},
		{fmt.Sprintf("canary: 90/10 split of reviews v1/v2 by the waypoint, over %d requests", w.requests), w.split},
		{"header routing: x-region: eu goes to reviews v2", w.header},
		{"AuthorizationPolicy: deny productpage -> ratings, reviews still allowed", w.deny},
		{"live policy edit: the config folder now denies reviews instead of productpage", w.edit},
		{fmt.Sprintf("load: productpage -> reviews through the waypoint for %s", w.load), w.loadRun},
	}
}

func svcURL(service, path string) string {
	return fmt.Sprintf("http://%s:%d%s", hostname(service), servicePort, path)
}

// call sends one GET from a pod's app to a service.
func (w *walk) call(ctx context.Context, from, service, path string, hdr http.Header) (answer, error) {
	dial, _ := w.m.lay.app(from, service)
	return get(ctx, dial, svcURL(service, path), hdr)
}

// converge retries a call until the mesh carries it (proxies get their configuration a few
// milliseconds apart after start-up or an edit).
func (w *walk) converge(ctx context.Context, from, service, wantApp string) (answer, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		a, err := w.call(ctx, from, service, "/hello", nil)
		if err == nil && a.status == 200 {
			if r, e := a.echo(); e == nil && r.Service == wantApp {
				return a, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return a, mismatch("200 from a "+wantApp+" pod within 15s", "%s", describe(a, err))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func describe(a answer, err error) string {
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, io.EOF) {
			return "connection closed, no HTTP response (EOF)"
		}
		return "no HTTP response: " + err.Error()
	}
	if r, e := a.echo(); e == nil {
		return fmt.Sprintf("%d from %s", a.status, r.Pod)
	}
	return fmt.Sprintf("%d: %s", a.status, strings.TrimSpace(string(a.body)))
}

// waitAccess polls a node proxy's log until a "connection complete" line with the given fields
// appears.
func (w *walk) waitAccess(ctx context.Context, node string, want map[string]string) (map[string]string, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ls := accessLines(w.m.logOf(node), want); len(ls) > 0 {
			return ls[len(ls)-1], nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, mismatch(fmt.Sprintf("an access log line on %s with %v", node, want), "none in %s", w.m.logDir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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

// deny: a DENY policy on productpage's identity at ratings; productpage is refused, reviews is not.
func (w *walk) deny(ctx context.Context, p *printer) error {
	p.line("wrote %s/%s: DENY principal %s/ns/%s/sa/productpage to app=ratings", w.m.configDir, policyFile, trustDomain, namespace)
	took, err := w.applyPolicy(ctx, "deny-productpage", "productpage", "productpage-1", "reviews-v1-1")
	if err != nil {
		return err
	}
	p.line("in force after %s", took)
	return w.showDenied(ctx, p, "deny-productpage", "productpage-1", "reviews-v1-1")
}

// edit: the same file now denies reviews; timed from the write to the first request that sees it.
func (w *walk) edit(ctx context.Context, p *printer) error {
	p.line("rewrote %s/%s: DENY principal %s/ns/%s/sa/reviews instead", w.m.configDir, policyFile, trustDomain, namespace)
	took, err := w.applyPolicy(ctx, "deny-reviews", "reviews", "reviews-v1-1", "productpage-1")
	if err != nil {
		return err
	}
	p.line("took %s from the file write to the first request that saw it (file watch, translation, xDS push to node-2)", took)
	return w.showDenied(ctx, p, "deny-reviews", "reviews-v1-1", "productpage-1")
}

// applyPolicy writes the policy file and polls until denied is refused and allowed passes.
func (w *walk) applyPolicy(ctx context.Context, name, sa, denied, allowed string) (time.Duration, error) {
	start := time.Now()
	if err := w.m.writeConfig(policyFile, denyPolicyYAML(name, sa)); err != nil {
		return 0, err
	}
	var gotDenied, gotAllowed string
	for time.Since(start) < 10*time.Second && ctx.Err() == nil {
		a, err := w.call(ctx, denied, "ratings", "/denied", nil)
		gotDenied = describe(a, err)
		if err != nil || a.status != 200 {
			b, err := w.call(ctx, allowed, "ratings", "/allowed", nil)
			gotAllowed = describe(b, err)
			if err == nil && b.status == 200 {
				return time.Since(start).Round(time.Millisecond), nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, mismatch(fmt.Sprintf("within 10s: %s refused, %s answered by ratings", denied, allowed),
		"%s: %s; %s: %s", denied, gotDenied, allowed, gotAllowed)
}

// showDenied prints what the denied caller got and node-2's access log line for it.
func (w *walk) showDenied(ctx context.Context, p *printer, policy, denied, allowed string) error {
	a, err := w.call(ctx, denied, "ratings", "/denied", nil)
	p.line("sent: GET %s from %s -> got: %s", svcURL("ratings", "/denied"), denied, describe(a, err))
	if err == nil && a.status == 200 {
		return mismatch(denied+" refused", "%s", describe(a, err))
	}
	out, err := w.waitAccess(ctx, "node-1", map[string]string{"direction": "outbound", "src.addr": a.local})
	if err != nil {
		return err
	}
	p.line("node-1 (outbound) for that connection: response_flags=%s error=%q", out["response_flags"], out["error"])
	b, err := w.call(ctx, allowed, "ratings", "/allowed", nil)
	p.line("sent: GET %s from %s -> got: %s", svcURL("ratings", "/allowed"), allowed, describe(b, err))
	if err != nil || b.status != 200 {
		return mismatch(allowed+" answered with 200", "%s", describe(b, err))
	}
	line, err := w.waitAccess(ctx, "node-2", map[string]string{"policy": namespace + "/" + policy, "src.identity": spiffeID(w.m.lay.pod(denied).sa)})
	if err != nil {
		return err
	}
	p.line("node-2 refused the tunnel (HBONE 401): src.identity=%s policy=%s error=%q", line["src.identity"], line["policy"], line["error"])
	return nil
}

// loadRun: 4 keep-alive connections productpage -> reviews (waypoint, 90/10) for w.load.
func (w *walk) loadRun(ctx context.Context, p *printer) error {
	start := time.Now()
	pods, errs, lat := w.burst(ctx, "productpage-1", "reviews", "/load", nil, 0, w.load)
	elapsed := time.Since(start)
	n := len(lat)
	p.line("sent: GET %s from productpage-1 on 4 connections for %s", svcURL("reviews", "/load"), w.load)
	p.line("got:  %d answers (%s), %.0f requests/s, latency p50 %s, p99 %s", n, countList(pods, errs),
		float64(n)/elapsed.Seconds(), percentile(lat, 0.50).Round(10*time.Microsecond), percentile(lat, 0.99).Round(10*time.Microsecond))
	if errs > 0 || n == 0 {
		return mismatch("every request answered with 200", "%d answers, %d errors", n, errs)
	}
	return nil
}

// burst sends GETs from a pod's app to service on 4 keep-alive connections: count requests in all,
// or for dur when count is 0. It returns answers per pod, the number of errors (transport errors
// or non-200), and each successful request's latency.
func (w *walk) burst(ctx context.Context, from, service, path string, hdr http.Header, count int, dur time.Duration) (map[string]int, int, []time.Duration) {
	const workers = 4
	dial, _ := w.m.lay.app(from, service)
	var (
		mu   sync.Mutex
		pods = map[string]int{}
		errs int
		lat  []time.Duration
		wg   sync.WaitGroup
		sent int
	)
	deadline := time.Now().Add(dur)
	next := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if count > 0 {
			sent++
			return sent <= count
		}
		return time.Now().Before(deadline)
	}
	for range workers {
		c := newClient(dial, true)
		wg.Go(func() {
			defer c.CloseIdleConnections()
			for next() && ctx.Err() == nil {
				t0 := time.Now()
				a, err := do(ctx, c, svcURL(service, path), hdr)
				d := time.Since(t0)
				r, perr := a.echo()
				mu.Lock()
				if err != nil || a.status != 200 || perr != nil {
					errs++
				} else {
					pods[r.Pod]++
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return pods, errs, lat
}

func countList(pods map[string]int, errs int) string {
	var parts []string
	for pod, n := range pods {
		parts = append(parts, fmt.Sprintf("%s %d", pod, n))
	}
	sort.Strings(parts)
	if errs > 0 || len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("errors %d", errs))
	}
	return strings.Join(parts, ", ")
}

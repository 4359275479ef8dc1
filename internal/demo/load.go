package demo

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

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

package proxy

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambitmesh/ambit/internal/testkit"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// TestMirrorsAndShares: through a real listener, several RequestMirror
// filters on one rule (one mirroring all, one a fraction, one a percent),
// the 500 share of an invalid backend in a weighted split, and a
// backendRef's own ResponseHeaderModifier applied only to its share.
func TestMirrorsAndShares(t *testing.T) {
	var all, half, tenth atomic.Int64
	count := func(n *atomic.Int64) http.Handler {
		return http.HandlerFunc(func(http.ResponseWriter, *http.Request) { n.Add(1) })
	}
	v1 := startEcho(t, "v1")
	bs := []*gatewayv1.Backend{
		backend("v1", v1),
		backend("all", startHandler(t, count(&all))),
		backend("half", startHandler(t, count(&half))),
		backend("tenth", startHandler(t, count(&tenth))),
	}
	mirror := func(svc string, num, den uint32) *gatewayv1.Filter {
		return &gatewayv1.Filter{Kind: &gatewayv1.Filter_RequestMirror{RequestMirror: &gatewayv1.Mirror{Backend: ref(svc, 1), Numerator: num, Denominator: den}}}
	}
	mirrored := rt("mirrored", prefix("/"), ref("v1", 1))
	mirrored.Filters = []*gatewayv1.Filter{mirror("all", 0, 0), mirror("half", 1, 2), mirror("tenth", 10, 0)}

	tagged := ref("v1", 1)
	tagged.Filters = []*gatewayv1.Filter{{Kind: &gatewayv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &gatewayv1.HeaderModifier{
		Set: []*gatewayv1.Header{{Name: "x-backend", Value: "tagged"}}}}}}
	split := rt("split", prefix("/"), tagged, &gatewayv1.BackendRef{Weight: 1, Invalid: "BackendNotFound"})

	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{
		"mirror": {mirrored}, "split": {split}}, "mirror", "split")}, bs)
	c := client(t)

	t.Run("several mirrors with shares", func(t *testing.T) {
		const n = 400
		for range n {
			if r := g.do(t, c, "mirror", "/", nil); r.status != 200 || r.echo.Pod != "v1" {
				t.Fatalf("%d from %q, want 200 from v1 (mirrors never answer)", r.status, r.echo.Pod)
			}
		}
		// Each mirror is started before its request is answered, so after
		// the last answer every one of them has been added to the group.
		g.e.mirrors.Wait()
		a, h, p := all.Load(), half.Load(), tenth.Load()
		if a != n {
			t.Errorf("the unconditional mirror got %d of %d requests", a, n)
		}
		// 1/2 of 400: mean 200, sd 10; 10% of 400: mean 40, sd 6; 5 sd.
		if h < 150 || h > 250 || p < 10 || p > 70 {
			t.Errorf("mirrored %d of %d at 1/2 and %d at 10%%, want about 200 and 40", h, n, p)
		}
	})

	t.Run("invalid backend share", func(t *testing.T) {
		const n = 400
		count := map[int]int{}
		for range n {
			r := g.do(t, c, "split", "/", nil)
			count[r.status]++
			if tag := r.header.Get("X-Backend"); (r.status == 200) != (tag == "tagged") {
				t.Fatalf("status %d with x-backend %q: the backendRef's filter must apply to its share only", r.status, tag)
			}
		}
		// 1:1 over 400: mean 200, sd 10; 5 sd.
		if count[500] < 150 || count[500] > 250 || count[200]+count[500] != n {
			t.Errorf("statuses %v, want about half 500 (the invalid backend's share) and half 200", count)
		}
	})
}

// TestRetryAttemptsAndBackoff: a retry policy's attempts and backoff
// through a real listener: a backend that always answers 503 is tried
// 1+attempts times per request with a jittered exponential wait between
// tries, and the last answer reaches the client, flagged URX.
func TestRetryAttemptsAndBackoff(t *testing.T) {
	var tries atomic.Int64
	up := startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		tries.Add(1)
		w.WriteHeader(503)
	}))
	r := rt("retry", prefix("/"), ref("up", 1))
	const backoff = 100 * time.Millisecond
	r.Retry = &gatewayv1.Retry{Codes: []uint32{503}, Attempts: 2, Backoff: durationpb.New(backoff)}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(map[string][]*gatewayv1.Route{"*": {r}}, "*")}, []*gatewayv1.Backend{backend("up", up)})
	c := client(t)
	const n = 10
	start := time.Now()
	for range n {
		if res := g.do(t, c, "a", "/", nil); res.status != 503 {
			t.Fatalf("status %d, want the last try's 503", res.status)
		}
	}
	took := time.Since(start)
	if got := tries.Load(); got != 3*n {
		t.Errorf("the backend was tried %d times for %d requests, want %d (1 + 2 retries each)", got, n, 3*n)
	}
	// Waits are uniform in (0, 100ms] then (0, 200ms]: 150ms a request on
	// average. Without backoff the requests take about nothing; only the
	// lower bound is checked, a slow machine only adds time.
	if floor := n * backoff * 4 / 10; took < floor {
		t.Errorf("%d requests took %v, want at least %v of retry backoff", n, took, floor)
	}
	testkit.Eventually(t, 5*time.Second, "URX in the access log", func() bool { return strings.Contains(g.log.String(), `"status":503,"flags":"URX"`) })
}

package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// walk holds what the scenarios share.
type walk struct {
	m        *mesh
	requests int           // the canary split's sample
	load     time.Duration // the load run's length
}

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

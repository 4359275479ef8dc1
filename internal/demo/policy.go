package demo

import (
	"context"
	"fmt"
	"time"
)

// policyFile is the config folder file steps 4 and 5 write.
const policyFile = "policy.yaml"

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

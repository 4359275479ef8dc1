package waypoint_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// lbTmpl is a Service over both web workloads with the load balancing
// annotations %s, and a route to it on lb.example.com.
const lbTmpl = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, annotations: {%s}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: lb, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [lb.example.com]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`

// TestGatewayLoadBalancingAnnotation: the user-facing way to pick a
// policy, from a config folder: ambit.dev/lb-policy: RoundRobin on the
// Service makes the gateway alternate between its endpoints; editing it to
// a header hash makes requests stick while the gateway runs; an invalid
// value is reported by the control plane, naming the annotation, while the
// Service keeps being served.
func TestGatewayLoadBalancingAnnotation(t *testing.T) {
	e := startEdge(t, "lb.yaml", fmt.Sprintf(lbTmpl, "ambit.dev/lb-policy: RoundRobin"))
	lbPath, cp, addr := filepath.Join(e.dir, "lb.yaml"), e.cp, e.addr()
	runGateway(t, t.Context(), cp, nil)

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	pods := func(n int, hdr map[string]string) []string {
		var out []string
		for range n {
			r, err := get(c, addr, "lb.example.com", hdr)
			if err != nil || r.status != 200 {
				t.Fatalf("lb.example.com: %d %v", r.status, err)
			}
			out = append(out, r.pod)
		}
		return out
	}

	seq := pods(21, nil)
	for i := 1; i < len(seq); i++ {
		if seq[i] == seq[i-1] {
			t.Fatalf("pods %v: want strict alternation with ambit.dev/lb-policy: RoundRobin", seq)
		}
	}

	// Round robin never sends 20 requests in a row to one of two pods.
	writeFile(t, lbPath, fmt.Sprintf(lbTmpl, `ambit.dev/lb-policy: ConsistentHash, ambit.dev/lb-hash: "header:x-user"`))
	deadline := time.Now().Add(10 * time.Second)
	for {
		seq := pods(20, map[string]string{"x-user": "alice"})
		if !slices.ContainsFunc(seq, func(p string) bool { return p != seq[0] }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("x-user: alice still spread over %v 10s after the hash annotation", seq)
		}
	}

	writeFile(t, lbPath, fmt.Sprintf(lbTmpl, "ambit.dev/lb-policy: Fastest"))
	deadline = time.Now().Add(10 * time.Second)
	var problem string
	for problem == "" {
		for _, r := range cp.Status().Rejected {
			if strings.Contains(r.Object, "shop/web") {
				problem = r.Reason
			}
		}
		if problem == "" && time.Now().After(deadline) {
			t.Fatalf("no problem reported for Service shop/web 10s after an invalid annotation: %+v", cp.Status().Rejected)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if want := `ambit.dev/LoadBalancer=False Invalid: annotation ambit.dev/lb-policy: "Fastest" is not a load balancing policy`; !strings.HasPrefix(problem, want) {
		t.Errorf("problem %q, want it to start with %q", problem, want)
	}
	pods(10, nil) // still served (least request), each answer checked
}

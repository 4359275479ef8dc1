package waypoint_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/testkit"
)

// badRegexRoute has an invalid path regex; goodRoute, next to it on the
// same Gateway, must keep being served.
const badRegexRoute = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [broken.example.com]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/(unclosed"}}]
    backendRefs: [{name: web-v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [app.example.com]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
    backendRefs: [{name: web-v2, port: 80}]
`

// TestGatewayInvalidRegexAndUnknownHost: through the control plane and
// `ambit gateway`, a route with an invalid regex is rejected with a
// status naming the field, the valid route next to it is served, and a
// host no route claims is answered 404 with NR in the access log.
func TestGatewayInvalidRegexAndUnknownHost(t *testing.T) {
	e := startEdge(t, "routes.yaml", badRegexRoute)
	cp := e.cp
	logs := &testkit.LogBuffer{}
	runGateway(t, t.Context(), cp, slog.New(slog.NewJSONHandler(logs, nil)))

	var reason string
	for _, r := range cp.Status().Rejected {
		if strings.Contains(r.Object, "broken") {
			reason = r.Reason
		}
	}
	if !strings.Contains(reason, "path.value") || !strings.Contains(reason, "not a valid RE2 regular expression") {
		t.Errorf("rejection of HTTPRoute shop/broken: %q, want it to name path.value and the regex error (rejected: %+v)", reason, cp.Status().Rejected)
	}

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	addr := e.addr()
	for _, tc := range []struct {
		host, path string
		status     int
		pod        string
	}{
		{"app.example.com", "/items/42", 200, "v2"},
		{"app.example.com", "/items/x", 404, ""},
		{"broken.example.com", "/unclosed", 404, ""},
		{"nobody.example.com", "/", 404, ""},
	} {
		r, err := getPath(c, addr, tc.host, tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != tc.status || r.pod != tc.pod {
			t.Errorf("%s%s: %d from %q, want %d from %q", tc.host, tc.path, r.status, r.pod, tc.status, tc.pod)
		}
	}
	if !strings.Contains(logs.String(), `"authority":"nobody.example.com","path":"/","protocol":"HTTP/1.1","status":404,"flags":"NR"`) {
		t.Errorf("no NR access log line for the unknown host:\n%.2000s", logs.String())
	}
}

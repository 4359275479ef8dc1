package node_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/node"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

// enrolViaAdmin drives the admin enrolment endpoints against a real
// namespace: bad requests are refused, enrol and unenrol succeed once.
func enrolViaAdmin(t *testing.T, admin string) {
	t.Helper()
	netnstest.RequireRoot(t)
	ns := netnstest.NewNS(t, "pod")
	post := func(path string, form url.Values) (int, string) {
		resp, err := http.PostForm("http://"+admin+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		path string
		form url.Values
		want int
		hint string // in the answer: what to do next
	}{
		{"/enroll", url.Values{"workload": {"shop/web-1"}}, http.StatusBadRequest, ""},
		// Host mode takes no netns, and no other mode exists. (A valid host
		// enrolment would put rules in this test's own namespace: the e2e
		// lab covers it.)
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "mode": {"host"}, "netns": {ns.Path}}, http.StatusBadRequest, ""},
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "mode": {"pod"}, "netns": {ns.Path}}, http.StatusBadRequest, ""},
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "netns": {ns.Path}}, http.StatusOK, ""},
		{"/unenroll", url.Values{"workload": {"shop/web-1"}}, http.StatusOK, ""},
		{"/unenroll", url.Values{"workload": {"shop/web-1"}}, http.StatusNotFound, "GET /config_dump lists"},
		{"/unenroll", url.Values{"workload": {"shop/web/1"}}, http.StatusBadRequest, "want <namespace>/<name>"},
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "netns": {"/run/netns/does-not-exist"}}, http.StatusBadRequest, "want the path of the pod's network namespace"},
		{"/enroll", url.Values{"workload": {"shop/web/1"}, "netns": {ns.Path}}, http.StatusBadRequest, "want <namespace>/<name>"},
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "netns": {ns.Path}}, http.StatusOK, ""},
		// Already enrolled in its netns: host mode is refused, not a replacement.
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "mode": {"host"}}, http.StatusConflict, "unenroll it first"},
		{"/unenroll", url.Values{"workload": {"shop/web-1"}}, http.StatusOK, ""},
	} {
		if got, body := post(tc.path, tc.form); got != tc.want || !strings.Contains(body, tc.hint) {
			t.Errorf("POST %s %v = %d %q, want %d mentioning %q", tc.path, tc.form, got, body, tc.want, tc.hint)
		}
	}
}

// Capture without CAP_NET_ADMIN is refused before the join, whose marked
// socket (host capture) would otherwise fail with a bare "operation not
// permitted".
func TestCaptureNeedsNetAdmin(t *testing.T) {
	n, err := node.New(node.Options{
		ControlPlane: "127.0.0.1:1", Node: "node-a", Token: "t", CAPin: "sha256:" + strings.Repeat("0", 64),
		CaptureHost: []string{"shop/billing-vm"}, Enroll: map[string]string{"shop/web-1": "/run/netns/web-1"}, Logger: discard,
		AdminAddress: "-", MetricsAddress: "-", ReadinessAddress: "-",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	netnstest.WithoutNetAdmin(t, func() { err = n.Run(ctx) })
	for _, want := range []string{"--capture-host shop/billing-vm", "--enroll shop/web-1", "needs root (CAP_NET_ADMIN)", "explicit mode"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run without CAP_NET_ADMIN = %v; want an error mentioning %q", err, want)
		}
	}
}

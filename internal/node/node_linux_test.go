package node_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

// enrolViaAdmin drives the admin enrolment endpoints against a real
// namespace: bad requests are refused, enrol and unenrol succeed once.
func enrolViaAdmin(t *testing.T, admin string) {
	t.Helper()
	netnstest.RequireRoot(t)
	ns := netnstest.NewNS(t, "pod")
	post := func(path string, form url.Values) int {
		resp, err := http.PostForm("http://"+admin+path, form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path string
		form url.Values
		want int
	}{
		{"/enroll", url.Values{"workload": {"shop/web-1"}}, http.StatusBadRequest},
		// Host mode takes no netns, and no other mode exists. (A valid host
		// enrolment would put rules in this test's own namespace: the e2e
		// lab covers it.)
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "mode": {"host"}, "netns": {ns.Path}}, http.StatusBadRequest},
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "mode": {"pod"}, "netns": {ns.Path}}, http.StatusBadRequest},
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "netns": {ns.Path}}, http.StatusOK},
		{"/unenroll", url.Values{"workload": {"shop/web-1"}}, http.StatusOK},
		{"/unenroll", url.Values{"workload": {"shop/web-1"}}, http.StatusInternalServerError},
		{"/enroll", url.Values{"workload": {"shop/web-1"}, "netns": {"/run/netns/does-not-exist"}}, http.StatusInternalServerError},
	} {
		if got := post(tc.path, tc.form); got != tc.want {
			t.Errorf("POST %s %v = %d, want %d", tc.path, tc.form, got, tc.want)
		}
	}
}

package cli

import (
	"strings"
	"testing"
)

// Workload flags are checked before anything runs: NAMESPACE/NAME has
// exactly one slash.
func TestNodeRefusesBadWorkloadKeys(t *testing.T) {
	base := []string{"node", "--control-plane", "127.0.0.1:1", "--node", "n", "--token", "t", "--ca-pin", "sha256:00"}
	for _, tc := range []struct{ flag, value, want string }{
		{"--enroll", "a/b/c=/run/netns/x", "want NAMESPACE/NAME=NETNS-PATH"},
		{"--enroll", "web-1=/run/netns/x", "want NAMESPACE/NAME=NETNS-PATH"},
		{"--capture-host", "a/b/c", "want NAMESPACE/NAME"},
		{"--capture-host", "shop/", "want NAMESPACE/NAME"},
		{"--explicit", "127.0.0.1:9080=10.96.0.10:80@a/b/c", "want <namespace>/<name>"},
		{"--http-proxy", "127.0.0.1:15080@a/b/c", "want <namespace>/<name>"},
	} {
		_, err, _ := run(t, append(base, tc.flag, tc.value)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: err = %v; want one mentioning %q", tc.flag, tc.value, err, tc.want)
		}
	}
}

package nodecmd

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Workload flags are checked before anything runs: NAMESPACE/NAME has
// exactly one slash.
func TestNodeRefusesBadWorkloadKeys(t *testing.T) {
	base := []string{"--control-plane", "127.0.0.1:1", "--node", "n", "--token", "t", "--ca-pin", "sha256:00"}
	for _, tc := range []struct{ flag, value, want string }{
		{"--enroll", "a/b/c=/run/netns/x", "want NAMESPACE/NAME=NETNS-PATH"},
		{"--enroll", "web-1=/run/netns/x", "want NAMESPACE/NAME=NETNS-PATH"},
		{"--capture-host", "a/b/c", "want NAMESPACE/NAME"},
		{"--capture-host", "shop/", "want NAMESPACE/NAME"},
		{"--explicit", "127.0.0.1:9080=10.96.0.10:80@a/b/c", "want <namespace>/<name>"},
		{"--http-proxy", "127.0.0.1:15080@a/b/c", "want <namespace>/<name>"},
		{"--log-level", "loud", "use debug, info, warn or error"},
	} {
		cmd := New("ambit-node")
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(append(base, tc.flag, tc.value))
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: err = %v; want one mentioning %q", tc.flag, tc.value, err, tc.want)
		}
	}
}

// The invocation names the command and its examples, so `ambit node --help`
// and `ambit-node --help` each show a command line that works.
func TestInvocationNamesTheCommand(t *testing.T) {
	for inv, name := range map[string]string{"ambit node": "node", "ambit-node": "ambit-node"} {
		cmd := New(inv)
		if cmd.Name() != name {
			t.Errorf("New(%q).Name() = %q, want %q", inv, cmd.Name(), name)
		}
		if !strings.Contains(cmd.Example, "\n  "+inv+" --control-plane") {
			t.Errorf("New(%q).Example does not start the proxy with %q:\n%s", inv, inv, cmd.Example)
		}
	}
}

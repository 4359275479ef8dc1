package nodecmd

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/spf13/pflag"
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
		var c Command
		f := pflag.NewFlagSet("test", pflag.ContinueOnError)
		c.Flags(f)
		if err := f.Parse(append(base, tc.flag, tc.value)); err != nil {
			t.Fatal(err)
		}
		if err := CheckRequired(f); err != nil {
			t.Fatal(err)
		}
		err := c.Run(context.Background(), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: err = %v; want one mentioning %q", tc.flag, tc.value, err, tc.want)
		}
	}
}

// The invocation names the examples, so `ambit node --help` and
// `ambit-node --help` each show a command line that works.
func TestHelpNamesTheInvocation(t *testing.T) {
	for _, inv := range []string{"ambit node", "ambit-node"} {
		if !strings.Contains(Example(inv), "\n  "+inv+" --control-plane") {
			t.Errorf("Example(%q) does not start the proxy with %q:\n%s", inv, inv, Example(inv))
		}
		if !strings.HasPrefix(Long(inv), inv+" joins the mesh") {
			t.Errorf("Long(%q) = %q...", inv, Long(inv)[:40])
		}
	}
}

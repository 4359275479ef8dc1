package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// ambit-node answers version and --help, and refuses a command line the
// node proxy cannot start with before doing anything.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantOut []string
		wantErr string
	}{
		{[]string{"version"}, []string{"ambit-node dev (go"}, ""},
		{[]string{"--help"}, []string{"ambit-node joins the mesh", "ambit-node --control-plane 10.0.0.1:15010", "--explicit stringArray", "--log-level string"}, ""},
		{nil, nil, `required flag(s) "ca-pin", "control-plane", "node", "token" not set: 'ambit token create --node NAME' on the control plane prints the --token, --ca-pin`},
		{[]string{"--node", "n", "--token", "t"}, nil, `required flag(s) "ca-pin", "control-plane" not set`},
		{[]string{"--nodes", "n"}, nil, "unknown flag: --nodes (see ambit-node --help)"},
		{[]string{"node", "--node", "n"}, nil, `unexpected argument "node"`},
		{[]string{"--control-plane", "127.0.0.1:1", "--node", "n", "--token", "t", "--ca-pin", "sha256:00", "--log-level", "loud"}, nil, "use debug, info, warn or error"},
	} {
		var out, logs bytes.Buffer
		err := run(context.Background(), tc.args, &out, &logs)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ambit-node %q: err = %v, want one containing %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ambit-node %q: %v", tc.args, err)
		}
		for _, want := range tc.wantOut {
			if !strings.Contains(out.String(), want) {
				t.Errorf("ambit-node %q: output does not contain %q:\n%s", tc.args, want, out.String())
			}
		}
	}
}

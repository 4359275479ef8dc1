package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// ambit-node is the node command at the root, with version and completion
// beside it; the node's required flags must not block them.
func TestRootCommands(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{[]string{"version"}, "ambit-node dev (go", ""},
		{[]string{"completion", "bash"}, "bash completion V2 for ambit-node", ""},
		{nil, "", `required flag(s) "ca-pin", "control-plane", "node", "token" not set`},
	} {
		root := newRoot()
		var out, errOut bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(tc.args)
		err := root.ExecuteContext(context.Background())
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ambit-node %v: err = %v, want one containing %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !strings.Contains(out.String(), tc.wantOut) {
			t.Errorf("ambit-node %v: out %q, err %v; want output containing %q", tc.args, out.String(), err, tc.wantOut)
		}
	}
}

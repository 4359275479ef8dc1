// Command ambit-node is the node proxy alone: the same command as `ambit
// node`, built from the same constructor, in a binary that links nothing
// else. Every package linked into a Go binary runs its init in every command
// and the kernel maps the binary's pages around everything touched, so the
// control plane, Kubernetes and CLI code `ambit` carries would cost each node
// ~10 MB of resident memory (docs/benchmarks.md, "Memory of the proxies").
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/cmdutil"
	"github.com/ambitmesh/ambit/internal/nodecmd"
)

func newRoot() *cobra.Command {
	root := nodecmd.New("ambit-node")
	root.SilenceUsage = true
	root.SilenceErrors = true
	root.SetErr(os.Stderr)
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the ambit-node version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), cmdutil.BuildInfo().Line("ambit-node"))
		},
	})
	return root
}

func main() {
	cmdutil.Main(newRoot(), nil)
}

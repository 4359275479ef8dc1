// Command ambit-node is the node proxy alone: the same command line as
// `ambit node` (internal/nodecmd defines both), in a binary that links
// nothing else. Every package linked into a Go binary runs its init in every
// command and the kernel maps the binary's pages around everything touched,
// so the control plane, Kubernetes and CLI code `ambit` carries would cost
// each node ~10 MB of resident memory, and cobra alone 0.3 MB
// (docs/benchmarks.md, "The node proxy's own binary").
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/ambitmesh/ambit/internal/cmdutil"
	"github.com/ambitmesh/ambit/internal/nodecmd"
)

// run is ambit-node with args (without the program name): `version`, help
// (-h, --help) or the node proxy.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && args[0] == "version" {
		_, err := fmt.Fprintln(stdout, cmdutil.BuildInfo().Line("ambit-node"))
		return err
	}
	var c nodecmd.Command
	f := pflag.NewFlagSet("ambit-node", pflag.ContinueOnError)
	f.SetOutput(io.Discard) // errors are returned, help is printed below
	c.Flags(f)
	if err := f.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			_, err = fmt.Fprintf(stdout, "%s\n\nUsage:\n  ambit-node %s\n  ambit-node version\n\nExamples:\n%s\n\nFlags:\n%s",
				nodecmd.Long("ambit-node"), nodecmd.Synopsis, nodecmd.Example("ambit-node"), f.FlagUsages())
			return err
		}
		return fmt.Errorf("%w (see ambit-node --help)", err)
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: ambit-node takes flags only, or the single argument version (see ambit-node --help)", f.Arg(0))
	}
	if err := nodecmd.CheckRequired(f); err != nil {
		return err
	}
	return c.Run(ctx, stderr)
}

func main() {
	cmdutil.Main(func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdout, os.Stderr) }, nil)
}

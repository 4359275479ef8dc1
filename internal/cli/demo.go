package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/demo"
)

func newDemoCmd() *cobra.Command {
	var (
		opts demo.Options
		mode string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Bring a whole mesh up on this machine and show it working, step by checked step",
		Long: `demo runs the real components — ambit control with a generated config folder,
two ambit node proxies, an ambit waypoint for the reviews service and ambit echo
apps as productpage, reviews v1/v2 and ratings — and walks through a call with
mTLS identities, a 90/10 canary, header routing, a denying AuthorizationPolicy,
a live policy edit and a short load run, checking each result.

As root on Linux with nftables, every node and pod is a network namespace and
the pods' traffic is captured transparently (--mode netns); otherwise every
process gets its own 127.42.x.y address and apps use the node proxies' explicit
listeners (--mode loopback). It says which, and why.

Exit status 0 means every step's result was checked and matched. Everything it
creates (processes, namespaces with their nftables rules, the run folder) is
removed when it ends, also on Ctrl-C or a failed step (then the logs stay).`,
		Example: `  go run ./cmd/ambit demo
  sudo ambit demo --keep          # then poke the mesh by hand; Ctrl-C to stop
  ambit demo --mode loopback --requests 2000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Mode = demo.Mode(mode)
			opts.Out = cmd.OutOrStdout()
			_, err := demo.Run(cmd.Context(), opts)
			if err != nil && errors.Is(cmd.Context().Err(), context.Canceled) {
				return &exitError{code: 130, err: fmt.Errorf("demo: interrupted; everything it started was stopped and removed")}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&mode, "mode", "auto", "auto, netns (root on Linux: namespaces + transparent capture) or loopback (explicit mode)")
	f.IntVar(&opts.Requests, "requests", 1000, "requests for the 90/10 canary split")
	f.DurationVar(&opts.Load, "load", 0, "length of the load run (default 3s)")
	f.BoolVar(&opts.Keep, "keep", false, "leave the mesh running after the steps, with how to reach it, until Ctrl-C")
	f.BoolVarP(&opts.Verbose, "verbose", "v", false, "print each process's command line, where it runs and its log file")
	return cmd
}

// Package cli holds ambit's cobra commands, one file per subcommand.
package cli

import (
	"errors"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a specific process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode maps an error returned by a command to the process exit code.
func ExitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// NewRoot builds the ambit root command with every subcommand attached.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "ambit",
		Short: "ambit is a sidecar-less service mesh",
		Long: `ambit secures, routes and observes traffic between services without a sidecar
in any pod: a node proxy per node, optional L7 waypoints, one control plane.
It runs the same way on Kubernetes and on plain Linux hosts.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetErr(os.Stderr)
	root.AddCommand(
		newVersionCmd(),
		newControlCmd(),
		newTranslateCmd(),
		newStatusCmd(),
		newTokenCmd(),
		newCACmd(),
		newEchoCmd(),
		newNodeCmd(),
		newGatewayCmd(), newWaypointCmd(),
		newDemoCmd(),
	)
	return root
}

package cli

import (
	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/nodecmd"
)

// newNodeCmd is `ambit node`: the node proxy's command line of
// internal/nodecmd, which the standalone ambit-node binary runs too.
func newNodeCmd() *cobra.Command {
	var c nodecmd.Command
	cmd := &cobra.Command{
		Use:     "node " + nodecmd.Synopsis,
		Short:   nodecmd.Short,
		Long:    nodecmd.Long("ambit node"),
		Example: nodecmd.Example("ambit node"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// nodecmd's check rather than cobra's MarkFlagRequired: its
			// error says where the values come from, in both binaries.
			if err := nodecmd.CheckRequired(cmd.Flags()); err != nil {
				return err
			}
			return c.Run(cmd.Context(), cmd.ErrOrStderr())
		},
	}
	c.Flags(cmd.Flags())
	return cmd
}

package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/cmdutil"
)

func newVersionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the ambit version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := cmdutil.BuildInfo()
			if output == "" {
				fmt.Fprintln(cmd.OutOrStdout(), info.Line("ambit"))
				return nil
			}
			return printObject(cmd.OutOrStdout(), output, info)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

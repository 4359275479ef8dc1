package cli

import (
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at link time: -ldflags "-X github.com/ambitmesh/ambit/internal/cli.version=v0.1.0".
var version = "dev"

// Info is what `ambit version` reports.
type Info struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Revision  string `json:"revision,omitempty"`
}

func buildInfo() Info {
	info := Info{Version: version}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info.GoVersion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				info.Revision = s.Value
			}
		}
	}
	return info
}

func newVersionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the ambit version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildInfo()
			if output == "" {
				cmd.Printf("ambit %s (%s)\n", info.Version, info.GoVersion)
				return nil
			}
			return printObject(cmd.OutOrStdout(), output, info)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

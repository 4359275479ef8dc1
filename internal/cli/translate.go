package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/control/source/file"
	"github.com/ambitmesh/ambit/internal/control/translate"
)

func newTranslateCmd() *cobra.Command {
	var dir, output string
	cmd := &cobra.Command{
		Use:   "translate -f DIR",
		Short: "Run the config pipeline offline and print the mesh model and every object's status",
		Long: `translate reads a folder of YAML exactly like 'ambit control --config-dir' does,
translates it, and prints the resulting mesh model together with the status of
every object. It exits non-zero when a file does not parse or any object is
rejected, so it fits in CI before a change reaches the mesh.`,
		Example: `  ambit translate -f ./mesh
  ambit translate -f ./mesh -o json | jq '.status'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := file.New(dir, file.Options{}).Load()
			if err != nil {
				return err
			}
			result := translate.Translate(res)
			if output == "" {
				output = "yaml"
			}
			if err := printObject(cmd.OutOrStdout(), output, result); err != nil {
				return err
			}
			return problems(result)
		},
	}
	cmd.Flags().StringVarP(&dir, "filename", "f", "", "folder of YAML files (searched recursively)")
	_ = cmd.MarkFlagRequired("filename")
	_ = cmd.MarkFlagDirname("filename")
	addOutputFlag(cmd, &output)
	return cmd
}

// problems summarises source errors and rejected objects as one error
// (exit code 1), or nil when everything was accepted.
func problems(r *translate.Result) error {
	var lines []string
	for _, e := range r.SourceErrors {
		lines = append(lines, "  "+e.Error())
	}
	for i := range r.Status {
		o := &r.Status[i]
		if o.Rejected() {
			lines = append(lines, "  "+o.String()+": "+o.Problem())
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return &exitError{code: 1, err: fmt.Errorf("%d problem(s) in the configuration:\n%s", len(lines), strings.Join(lines, "\n"))}
}

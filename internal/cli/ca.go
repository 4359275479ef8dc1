package cli

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/control"
)

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Inspect the mesh CA and rotate its root",
	}
	cmd.AddCommand(newCAStatusCmd(), newCARotateCmd())
	return cmd
}

func newCAStatusCmd() *cobra.Command {
	var addr, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the trusted roots, the CA pin and where a root rotation stands",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st control.CAStatus
			if err := adminCall(cmd, addr, http.MethodGet, "/ca", nil, &st); err != nil {
				return err
			}
			if output != "" {
				return printObject(cmd.OutOrStdout(), output, st)
			}
			printCAStatus(cmd.OutOrStdout(), &st)
			return nil
		},
	}
	addControlPlaneFlag(cmd, &addr)
	addOutputFlag(cmd, &output)
	return cmd
}

func newCARotateCmd() *cobra.Command {
	var (
		addr, output string
		force        bool
	)
	cmd := &cobra.Command{
		Use:   "rotate (prepare | activate | finish | abort)",
		Short: "Rotate the mesh's root certificate without breaking a connection",
		Long: `A root rotation has three steps; run each when the previous one has spread:

  prepare   generate a new root; every proxy now trusts the old and the new
            root (pushed over xDS); leaves are still signed by the old root
  activate  sign with the new root; proxies renew their certificates at half
            life (or sooner) and get leaves from the new root
  finish    drop the old root from the bundle. Refused until every leaf the
            old root signed has expired (one leaf TTL after activate), unless
            --force
  abort     before finish: go back to the old root alone

The CA must be the built-in one; with --plugin-certs-dir rotate by replacing
the files and restarting. Run this on the control plane's host.`,
		Example: `  ambit ca rotate prepare
  ambit ca status
  ambit ca rotate activate
  # one leaf TTL later (default 24h):
  ambit ca rotate finish`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"prepare", "activate", "finish", "abort"},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/ca/rotate/" + args[0]
			if force {
				path += "?force=true"
			}
			var st control.CAStatus
			if err := adminCall(cmd, addr, http.MethodPost, path, nil, &st); err != nil {
				return err
			}
			if output != "" {
				return printObject(cmd.OutOrStdout(), output, st)
			}
			printCAStatus(cmd.OutOrStdout(), &st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "finish: drop the old root even if leaves it signed may still be valid")
	addControlPlaneFlag(cmd, &addr)
	addOutputFlag(cmd, &output)
	return cmd
}

func printCAStatus(w io.Writer, st *control.CAStatus) {
	fmt.Fprintf(w, "trust domain:      %s\nca pin (for join): %s\nbundle generation: %d\nrotation phase:    %s\n",
		st.TrustDomain, st.CAPin, st.Generation, st.Rotation.Phase)
	if st.Rotation.Plugin {
		fmt.Fprintln(w, "plug-in CA:        yes (rotate by replacing the files and restarting)")
	}
	if !st.Rotation.FinishableAt.IsZero() {
		fmt.Fprintf(w, "finish possible:   %s\n", st.Rotation.FinishableAt.Format(time.RFC3339))
	}
	fmt.Fprintln(w, "trusted roots:")
	for _, r := range st.Roots {
		signing := ""
		if r.Pin == st.Rotation.SigningPin {
			signing = "  (signing)"
		}
		fmt.Fprintf(w, "  %s  %s  expires %s%s\n", r.Pin, r.Subject, r.NotAfter.Format("2006-01-02"), signing)
	}
}

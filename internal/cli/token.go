package cli

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/control"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens that let node proxies and gateways join the mesh",
	}
	cmd.AddCommand(newTokenCreateCmd())
	return cmd
}

func newTokenCreateCmd() *cobra.Command {
	var (
		addr, node, gateway, output string
		ttl                         time.Duration
		reusable                    bool
	)
	cmd := &cobra.Command{
		Use:   "create (--node NAME | --gateway NAMESPACE/NAME)",
		Short: "Create a join token for one node proxy or gateway",
		Long: `create asks the control plane for a join token. A node proxy (or gateway)
presents it once, over TLS, to receive its own certificate; from then on it
authenticates with that certificate and renews it itself. The token is stored
hashed, works once (unless --reusable) and expires after --ttl.

The output includes the CA pin: the proxy checks the control plane's root
against it before sending the token, like kubeadm's discovery hash. Run this on
the control plane's host (the endpoint answers on loopback only).`,
		Example: `  ambit token create --node worker-1
  ambit token create --gateway shop/reviews-waypoint --ttl 24h -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var subject string
			switch {
			case node != "" && gateway != "":
				return errors.New("give either --node or --gateway, not both")
			case node != "":
				subject = "node/" + node
			case gateway != "":
				subject = "gateway/" + gateway
			default:
				return errors.New("say who the token is for: --node NAME or --gateway NAMESPACE/NAME")
			}
			var resp control.TokenResponse
			if err := adminCall(cmd, addr, http.MethodPost, "/ca/tokens",
				control.TokenRequest{Subject: subject, TTL: ttl, Reusable: reusable}, &resp); err != nil {
				return err
			}
			if output != "" {
				return printObject(cmd.OutOrStdout(), output, resp)
			}
			use := "once"
			if resp.Reusable {
				use = "any number of times"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token:   %s\nca-pin:  %s\nfor:     %s (trust domain %s)\nexpires: %s; usable %s\n",
				resp.Token, resp.CAPin, resp.Subject, resp.TrustDomain, resp.ExpiresAt.Format(time.RFC3339), use)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "node name the token lets a node proxy join as")
	f.StringVar(&gateway, "gateway", "", "NAMESPACE/NAME of the waypoint or gateway the token is for")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	f.BoolVar(&reusable, "reusable", false, "allow the token to be used more than once until it expires")
	addControlPlaneFlag(cmd, &addr)
	addOutputFlag(cmd, &output)
	return cmd
}

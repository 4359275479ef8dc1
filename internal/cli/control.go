package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/ambitmesh/ambit/internal/control"
)

func newControlCmd() *cobra.Command {
	var (
		opts       control.Options
		tokensFile string
		logLevel   string
	)
	cmd := &cobra.Command{
		Use:   "control --config-dir DIR",
		Short: "Run the control plane: config folder -> mesh model -> delta xDS to every proxy",
		Long: `control watches a folder of Kubernetes-style YAML (Namespaces, Services,
ServiceAccounts, Gateway API objects, ambit.dev Workloads and policies),
translates it on every change and pushes each proxy the part it needs over
delta xDS. A file that stops parsing keeps its last good objects in force;
the error is logged and shown by 'ambit status'.

Proxies authenticate with a bootstrap token bound to their node ID, listed in
--bootstrap-tokens (YAML: "<node id>: <token>").`,
		Example: `  ambit control --config-dir ./mesh --bootstrap-tokens ./tokens.yaml
  ambit status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level, err := parseLogLevel(logLevel)
			if err != nil {
				return err
			}
			opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			if st, err := os.Stat(opts.ConfigDir); err != nil || !st.IsDir() {
				return fmt.Errorf("--config-dir %q is not a readable folder: create it and put your YAML there", opts.ConfigDir)
			}
			if tokensFile != "" {
				if opts.Tokens, err = readTokens(tokensFile); err != nil {
					return err
				}
			} else {
				opts.Logger.Warn("no --bootstrap-tokens given: no proxy can connect until tokens are configured")
			}
			return control.New(opts).Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.ConfigDir, "config-dir", "", "folder of YAML files to serve (watched)")
	_ = cmd.MarkFlagRequired("config-dir")
	_ = cmd.MarkFlagDirname("config-dir")
	f.StringVar(&opts.XDSAddress, "xds-address", ":15010", "address of the delta xDS gRPC server")
	f.StringVar(&opts.AdminAddress, "admin-address", ":15014", "address of /metrics, /readyz and /debug/*")
	f.StringVar(&tokensFile, "bootstrap-tokens", "", "YAML file mapping proxy node IDs to their bootstrap tokens")
	f.DurationVar(&opts.Debounce, "debounce", 100*time.Millisecond, "coalesce file changes within this window")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// readTokens reads "<node id>: <token>" pairs and inverts them.
func readTokens(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--bootstrap-tokens: %w", err)
	}
	var byNode map[string]string
	if err := yaml.UnmarshalStrict(data, &byNode); err != nil {
		return nil, fmt.Errorf("--bootstrap-tokens %s: want YAML lines like \"node/worker-1: <token>\": %w", path, err)
	}
	tokens := make(map[string]string, len(byNode))
	for node, tok := range byNode {
		if len(tok) < 16 {
			return nil, fmt.Errorf("--bootstrap-tokens %s: token of %q is shorter than 16 characters; use e.g. `openssl rand -hex 16`", path, node)
		}
		if prev, dup := tokens[tok]; dup {
			return nil, fmt.Errorf("--bootstrap-tokens %s: %q and %q share a token; each proxy needs its own", path, prev, node)
		}
		tokens[tok] = node
	}
	return tokens, nil
}

func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("--log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

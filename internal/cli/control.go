package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/ambitmesh/ambit/internal/cmdutil"
	"github.com/ambitmesh/ambit/internal/control"
)

func newControlCmd() *cobra.Command {
	var (
		opts        control.Options
		logLevel    string
		memoryLimit string
	)
	cmd := &cobra.Command{
		Use:   "control --config-dir DIR",
		Short: "Run the control plane: config folder -> mesh model -> delta xDS to every proxy",
		Long: `control watches a folder of Kubernetes-style YAML (Namespaces, Services,
ServiceAccounts, Gateway API objects, ambit.dev Workloads and policies),
translates it on every change and pushes each proxy the part it needs over
delta xDS. A file that stops parsing keeps its last good objects in force;
the error is logged and shown by 'ambit status'.

The control plane is also the mesh's SPIFFE CA: it keeps its root (or your
company's intermediate, --plugin-certs-dir) in --state-dir, signs workload
certificates for proxies, and serves xDS and the CA over TLS. Proxies join with
a token from 'ambit token create' and authenticate with their certificates
afterwards.`,
		Example: `  ambit control --config-dir ./mesh --state-dir /var/lib/ambit
  ambit token create --node worker-1
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
			if err := applyMemoryLimit(memoryLimit, opts.Logger); err != nil {
				return err
			}
			if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
				return fmt.Errorf("--state-dir %q: %w (pick a writable folder)", opts.StateDir, err)
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
	f.StringVar(&opts.StateDir, "state-dir", defaultStateDir(), "folder for the CA's root and the join tokens (kept across restarts)")
	_ = cmd.MarkFlagDirname("state-dir")
	f.StringVar(&opts.PluginCertsDir, "plugin-certs-dir", "", "bring your own CA: folder with ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem")
	f.DurationVar(&opts.LeafTTL, "leaf-ttl", 24*time.Hour, "validity of workload certificates (renewed at half life)")
	f.StringSliceVar(&opts.ServerNames, "server-name", nil, "extra DNS name or IP proxies use to reach this control plane (repeatable)")
	f.DurationVar(&opts.Debounce, "debounce", 100*time.Millisecond, "coalesce file changes within this window")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&memoryLimit, "memory-limit", "256MiB", "soft heap limit for the Go runtime (0 = none; the GOMEMLIMIT environment variable wins); raise it for meshes far above 10,000 workloads")
	return cmd
}

// applyMemoryLimit sets the Go runtime's soft memory limit. Without one, the
// heap goal doubles the live heap after the initial push to every proxy,
// and short-lived garbage then drives RSS far above steady state.
func applyMemoryLimit(v string, log *slog.Logger) error {
	if os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	// Accept GOMEMLIMIT's spelling (256MiB) as well as Kubernetes' (256Mi).
	if strings.HasSuffix(v, "iB") {
		v = strings.TrimSuffix(v, "B")
	}
	q, err := resource.ParseQuantity(v)
	if err != nil || q.Sign() < 0 {
		return fmt.Errorf("--memory-limit %q: want a size like 256MiB or 1GiB, or 0 for none", v)
	}
	if q.IsZero() {
		return nil
	}
	debug.SetMemoryLimit(q.Value())
	log.Debug("soft memory limit set", "bytes", q.Value())
	return nil
}

// defaultStateDir follows the FHS for root and XDG otherwise.
func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/ambit"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "ambit")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "ambit")
	}
	return ".ambit"
}

var parseLogLevel = cmdutil.ParseLogLevel

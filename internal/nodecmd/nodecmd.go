// Package nodecmd is the node proxy's command line: the one constructor
// behind both `ambit node` and the standalone `ambit-node` binary, so the two
// take the same flags and run the same code. The node proxy ships as its own
// binary because every package linked into a Go binary runs its init and is
// mapped around what it touches in every command (docs/benchmarks.md, "Memory
// of the proxies"): `ambit-node` links only this package's graph, not the
// control plane, Kubernetes, CEL or the CLI.
package nodecmd

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/cmdutil"
	"github.com/ambitmesh/ambit/internal/node"
	"github.com/ambitmesh/ambit/internal/node/proxy"
)

// New returns the node proxy command. invocation is how users start it,
// "ambit node" or "ambit-node": its last word names the command and the
// whole of it the examples.
func New(invocation string) *cobra.Command {
	var (
		opts     node.Options
		explicit []string
		proxies  []string
		enroll   []string
		logLevel string
		hbone    uint16
	)
	cmd := &cobra.Command{
		Use:   invocation[strings.LastIndexByte(invocation, ' ')+1:] + " --control-plane ADDR --node NAME --token T --ca-pin P",
		Short: "Run the node proxy: HBONE mTLS tunnels, L4 policy and TCP telemetry for this node's workloads",
		Long: invocation + ` joins the mesh with a token from 'ambit token create --node NAME',
obtains certificates for the workloads the control plane places on this node,
and carries their traffic as HBONE (HTTP/2 CONNECT over mutual TLS).

Inbound, it listens for HBONE on each local workload's address (--hbone-port),
checks authorization policies and connects to the workload.

Outbound, in explicit mode, apps connect to a local port per upstream:
--explicit LISTEN=TARGET[@NAMESPACE/NAME] forwards connections made to LISTEN
to TARGET (a service VIP:port or a workload ip:port) as the named local
workload (default: the local workload whose address the app connected from,
or the node's only workload). --http-proxy LISTEN[@NAMESPACE/NAME] serves the
same as an HTTP CONNECT proxy (CONNECT ip:port; 200 once the upstream is
connected, 502 when it cannot be). Destinations outside the mesh are passed
through as plain TCP.

Transparent capture (root, Linux): --enroll NAMESPACE/NAME=NETNS-PATH, or
POST /enroll (workload, netns) and /unenroll (workload) on the admin address,
installs nftables rules inside the workload's network namespace and serves it
from listeners opened there (Istio's in-pod redirection); apps need no change.
--capture-host NAMESPACE/NAME (or POST /enroll with workload and mode=host)
does the same for a Workload that is a process of this machine (a VM or bare
metal service): rules in the host's own namespace, capturing only connections
from the workload's addresses and to its addresses on the HBONE port and the
ports it serves for mesh Services, so the rest of the host (ssh included) is
untouched; every rule is removed on /unenroll and when the node stops.

Endpoints: admin on --admin-address (GET /config_dump), Prometheus metrics
on --metrics-address (/metrics), readiness on --readiness-address
(/healthz/ready, 200 once the first complete configuration arrived and the
workloads of --enroll and --capture-host are enrolled).`,
		Example: `  ambit token create --node worker-1
  ` + invocation + ` --control-plane 10.0.0.1:15010 --node worker-1 --token TOKEN --ca-pin sha256:... \
      --explicit 127.0.0.1:9080=10.96.0.10:80`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level, err := cmdutil.ParseLogLevel(logLevel)
			if err != nil {
				return err
			}
			opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			opts.HBONEPort = hbone
			for _, e := range explicit {
				x, err := proxy.ParseExplicit(e)
				if err != nil {
					return err
				}
				opts.Explicit = append(opts.Explicit, x)
			}
			for _, h := range proxies {
				x, err := proxy.ParseHTTPProxy(h)
				if err != nil {
					return err
				}
				opts.HTTPProxies = append(opts.HTTPProxies, x)
			}
			for _, e := range enroll {
				key, ns, ok := strings.Cut(e, "=")
				if !ok || ns == "" || proxy.CheckWorkloadKey(key) != nil {
					return fmt.Errorf("--enroll %q: want NAMESPACE/NAME=NETNS-PATH (one slash in NAMESPACE/NAME), e.g. shop/web-1=/run/netns/web-1", e)
				}
				if opts.Enroll == nil {
					opts.Enroll = map[string]string{}
				}
				opts.Enroll[key] = ns
			}
			for _, key := range opts.CaptureHost {
				if proxy.CheckWorkloadKey(key) != nil {
					return fmt.Errorf("--capture-host %q: want NAMESPACE/NAME (one slash), e.g. shop/billing-vm", key)
				}
			}
			n, err := node.New(opts)
			if err != nil {
				return err
			}
			return n.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.ControlPlane, "control-plane", "", "address of the control plane's xDS/CA port, host:port")
	f.StringVar(&opts.Node, "node", "", "this node's name (as in the Workloads' spec.node)")
	f.StringVar(&opts.Token, "token", "", "join token from 'ambit token create --node NAME'")
	f.StringVar(&opts.CAPin, "ca-pin", "", "CA pin printed with the token (sha256:...)")
	for _, name := range []string{"control-plane", "node", "token", "ca-pin"} {
		_ = cmd.MarkFlagRequired(name)
	}
	f.StringVar(&opts.TrustDomain, "trust-domain", "cluster.local", "the mesh's trust domain (printed with the token)")
	f.StringVar(&opts.Cluster, "cluster", "", "cluster name reported in metrics and baggage")
	f.Uint16Var(&hbone, "hbone-port", proxy.DefaultHBONEPort, "HBONE port: inbound listeners on local workload addresses, and outbound tunnels")
	f.StringArrayVar(&explicit, "explicit", nil, "explicit-mode listener LISTEN=TARGET[@NAMESPACE/NAME], e.g. 127.0.0.1:9080=10.96.0.10:80 (repeatable)")
	f.StringArrayVar(&proxies, "http-proxy", nil, "explicit-mode HTTP CONNECT proxy listener LISTEN[@NAMESPACE/NAME], e.g. 127.0.0.1:15080 (repeatable)")
	f.StringArrayVar(&opts.CaptureHost, "capture-host", nil, "capture a local workload that is a process of this host, in host mode: NAMESPACE/NAME (repeatable; needs root)")
	f.StringArrayVar(&enroll, "enroll", nil, "capture a local workload's traffic in its network namespace: NAMESPACE/NAME=NETNS-PATH (repeatable; needs root)")
	f.StringVar(&opts.AdminAddress, "admin-address", "127.0.0.1:15000", "admin endpoint (/config_dump); keep it on localhost; - disables")
	f.StringVar(&opts.MetricsAddress, "metrics-address", ":15020", "Prometheus /metrics; - disables")
	f.StringVar(&opts.ReadinessAddress, "readiness-address", ":15021", "/healthz/ready; - disables")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

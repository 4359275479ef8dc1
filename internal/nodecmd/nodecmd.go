// Package nodecmd is the node proxy's command line: the one definition of
// its flags, help and start-up behind both `ambit node` (a cobra command in
// internal/cli) and the standalone `ambit-node` binary (cmd/ambit-node), so
// the two take the same flags and run the same code. The node proxy ships as
// its own binary because every package linked into a Go binary runs its init
// and is mapped around what it touches in every command (docs/benchmarks.md,
// "Memory of the proxies"): `ambit-node` links only this package's graph, not
// the control plane, Kubernetes, CEL or the CLI. For the same reason this
// package does not use cobra (0.3 MB of every node's RSS); it binds its flags
// to a pflag.FlagSet, which is what cobra's commands hold.
package nodecmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ambitmesh/ambit/internal/cmdutil"
	"github.com/ambitmesh/ambit/internal/node"
	"github.com/ambitmesh/ambit/internal/node/proxy"
)

// Short is the one-line description.
const Short = "Run the node proxy: HBONE mTLS tunnels, L4 policy and TCP telemetry for this node's workloads"

// Required are the flags without which the proxy cannot join the mesh.
var Required = []string{"control-plane", "node", "token", "ca-pin"}

// Synopsis follows the command's name in usage lines.
const Synopsis = "--control-plane ADDR --node NAME --token T --ca-pin P"

// Long is the help text for invocation ("ambit node" or "ambit-node").
func Long(invocation string) string {
	return invocation + ` joins the mesh with a token from 'ambit token create --node NAME',
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
workloads of --enroll and --capture-host are enrolled).`
}

// Example is the help's example for invocation.
func Example(invocation string) string {
	return `  ambit token create --node worker-1
  ` + invocation + ` --control-plane 10.0.0.1:15010 --node worker-1 --token TOKEN --ca-pin sha256:... \
      --explicit 127.0.0.1:9080=10.96.0.10:80`
}

// Command is the node proxy's command line: Flags binds its flags, Run
// starts the proxy with their values.
type Command struct {
	opts     node.Options
	explicit []string
	proxies  []string
	enroll   []string
	logLevel string
	hbone    uint16
}

// Flags registers the node proxy's flags on f.
func (c *Command) Flags(f *pflag.FlagSet) {
	opts := &c.opts
	f.StringVar(&opts.ControlPlane, "control-plane", "", "address of the control plane's xDS/CA port, host:port")
	f.StringVar(&opts.Node, "node", "", "this node's name (as in the Workloads' spec.node)")
	f.StringVar(&opts.Token, "token", "", "join token from 'ambit token create --node NAME'")
	f.StringVar(&opts.CAPin, "ca-pin", "", "CA pin printed with the token (sha256:...)")
	f.StringVar(&opts.TrustDomain, "trust-domain", "cluster.local", "the mesh's trust domain (printed with the token)")
	f.StringVar(&opts.Cluster, "cluster", "", "cluster name reported in metrics and baggage")
	f.Uint16Var(&c.hbone, "hbone-port", proxy.DefaultHBONEPort, "HBONE port: inbound listeners on local workload addresses, and outbound tunnels")
	f.StringArrayVar(&c.explicit, "explicit", nil, "explicit-mode listener LISTEN=TARGET[@NAMESPACE/NAME], e.g. 127.0.0.1:9080=10.96.0.10:80 (repeatable)")
	f.StringArrayVar(&c.proxies, "http-proxy", nil, "explicit-mode HTTP CONNECT proxy listener LISTEN[@NAMESPACE/NAME], e.g. 127.0.0.1:15080 (repeatable)")
	f.StringArrayVar(&opts.CaptureHost, "capture-host", nil, "capture a local workload that is a process of this host, in host mode: NAMESPACE/NAME (repeatable; needs root)")
	f.StringArrayVar(&c.enroll, "enroll", nil, "capture a local workload's traffic in its network namespace: NAMESPACE/NAME=NETNS-PATH (repeatable; needs root)")
	f.StringVar(&opts.AdminAddress, "admin-address", "127.0.0.1:15000", "admin endpoint (/config_dump); keep it on localhost; - disables")
	f.StringVar(&opts.MetricsAddress, "metrics-address", ":15020", "Prometheus /metrics; - disables")
	f.StringVar(&opts.ReadinessAddress, "readiness-address", ":15021", "/healthz/ready; - disables")
	f.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
}

// CheckRequired returns an error naming every Required flag that was not
// set, as cobra words it, and where their values come from.
func CheckRequired(f *pflag.FlagSet) error {
	var missing []string
	for _, name := range Required {
		if !f.Changed(name) {
			missing = append(missing, `"`+name+`"`)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("required flag(s) %s not set: 'ambit token create --node NAME' on the control plane prints the --token, --ca-pin and --trust-domain to use; --control-plane is its xDS address (port 15010)", strings.Join(missing, ", "))
}

// Run checks the flags' values and runs the node proxy until ctx ends,
// logging to logs.
func (c *Command) Run(ctx context.Context, logs io.Writer) error {
	opts := c.opts
	level, err := cmdutil.ParseLogLevel(c.logLevel)
	if err != nil {
		return err
	}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	opts.HBONEPort = c.hbone
	for _, e := range c.explicit {
		x, err := proxy.ParseExplicit(e)
		if err != nil {
			return err
		}
		opts.Explicit = append(opts.Explicit, x)
	}
	for _, h := range c.proxies {
		x, err := proxy.ParseHTTPProxy(h)
		if err != nil {
			return err
		}
		opts.HTTPProxies = append(opts.HTTPProxies, x)
	}
	for _, e := range c.enroll {
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
	return n.Run(ctx)
}

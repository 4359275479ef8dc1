package cli

import (
	"fmt"
	"log/slog"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/waypoint"
	"github.com/ambitmesh/ambit/internal/waypoint/proxy"
)

func newGatewayCmd() *cobra.Command {
	return gatewayCmd(false)
}

func newWaypointCmd() *cobra.Command {
	return gatewayCmd(true)
}

// gatewayCmd is `ambit gateway` (ingress) or `ambit waypoint`: the same
// join and L7 engine, serving Listener ports or HBONE.
func gatewayCmd(isWaypoint bool) *cobra.Command {
	var (
		opts     waypoint.Options
		logLevel string
		access   bool
		portMap  map[string]string
	)
	cmd := &cobra.Command{
		Use:   "gateway --control-plane ADDR --gateway NAMESPACE/NAME --token T --ca-pin P",
		Short: "Run an ingress gateway: the HTTP, HTTPS, TLS and TCP listeners of a Gateway with gatewayClassName ambit",
		Long: `gateway joins the mesh as the Gateway NAMESPACE/NAME with a token from
'ambit token create --gateway NAMESPACE/NAME', subscribes to its listeners,
routes, backends and serving certificates, and serves every listener of
the Gateway on --listen-address (all interfaces by default): HTTP and
HTTPS (TLS terminated with the certificates of its Secrets, chosen by SNI,
HTTP/2 by ALPN) with HTTPRoute/GRPCRoute routing, filters, weighted
backends, retries and timeouts; TLS listeners by SNI with TLSRoutes
(Passthrough forwards the encrypted bytes); TCP listeners with TCPRoutes.
Listeners added to or removed from the Gateway are opened or closed at
runtime; route and certificate changes apply without dropping
connections.

Endpoints: admin on --admin-address (GET /config_dump), Prometheus metrics
on --metrics-address (/metrics, istio_requests_total and friends),
readiness on --readiness-address (/healthz/ready, 200 once the first
complete configuration is applied and its listeners are open).`,
		Example: `  ambit token create --gateway infra/edge
  ambit gateway --control-plane 10.0.0.1:15010 --gateway infra/edge --token TOKEN --ca-pin sha256:...`,
	}
	if isWaypoint {
		cmd.Use = "waypoint --control-plane ADDR --gateway NAMESPACE/NAME --token T --ca-pin P"
		cmd.Short = "Run a waypoint: L7 routing and policy for the services bound to a Gateway with gatewayClassName ambit-waypoint"
		cmd.Long = `waypoint joins the mesh as the Gateway NAMESPACE/NAME (class ambit-waypoint)
with a token from 'ambit token create --gateway NAMESPACE/NAME' and accepts
HBONE (HTTP/2 CONNECT over mutual TLS) from node proxies on --hbone-port.
The CONNECT authority is the original destination, a bound service's
VIP:port; the HTTP inside the tunnel is routed with the HTTPRoutes whose
parentRef is that Service.

Endpoints as for 'ambit gateway'.`
		cmd.Example = `  ambit token create --gateway shop/reviews-waypoint
  ambit waypoint --control-plane 10.0.0.1:15010 --gateway shop/reviews-waypoint --token TOKEN --ca-pin sha256:...`
	}
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		level, err := parseLogLevel(logLevel)
		if err != nil {
			return err
		}
		opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
		if access {
			opts.AccessLog = slog.New(slog.NewJSONHandler(cmd.OutOrStdout(), nil))
		}
		opts.Waypoint = isWaypoint
		if opts.PortMap, err = parsePortMap(portMap); err != nil {
			return err
		}
		switch {
		case opts.TCPIdleTimeout < 0:
			return fmt.Errorf("--tcp-idle-timeout %v: want a duration >= 0 (0 never closes idle connections)", opts.TCPIdleTimeout)
		case opts.TCPIdleTimeout == 0:
			opts.TCPIdleTimeout = -1 // Options: negative is never, zero the default
		}
		g, err := waypoint.New(opts)
		if err != nil {
			return err
		}
		return g.Run(cmd.Context())
	}
	f := cmd.Flags()
	f.StringVar(&opts.ControlPlane, "control-plane", "", "address of the control plane's xDS/CA port, host:port")
	f.StringVar(&opts.Gateway, "gateway", "", "the Gateway this process runs, NAMESPACE/NAME")
	f.StringVar(&opts.Token, "token", "", "join token from 'ambit token create --gateway NAMESPACE/NAME'")
	f.StringVar(&opts.CAPin, "ca-pin", "", "CA pin printed with the token (sha256:...)")
	for _, name := range []string{"control-plane", "gateway", "token", "ca-pin"} {
		_ = cmd.MarkFlagRequired(name)
	}
	f.StringVar(&opts.TrustDomain, "trust-domain", "cluster.local", "the mesh's trust domain (printed with the token)")
	f.StringVar(&opts.Cluster, "cluster", "", "cluster name reported in metrics")
	if isWaypoint {
		f.Uint16Var(&opts.HBONEPort, "hbone-port", waypoint.DefaultHBONEPort, "HBONE port node proxies connect to")
		f.StringVar(&opts.HBONEAddress, "hbone-address", "", "host to accept HBONE on; empty is every interface")
	} else {
		f.StringVar(&opts.ListenAddress, "listen-address", "", "host the Gateway's listener ports are opened on; empty is every interface")
		f.BoolVar(&opts.MeshUpstreams, "mesh-upstreams", false, "reach endpoints that have a mesh identity over HBONE through their node proxy (mutual TLS, needed under STRICT mTLS); others stay plain TCP")
		f.StringToStringVar(&portMap, "port-map", nil, "open listener ports on other local ports, LISTENER=LOCAL (e.g. 80=8080,443=8443): run unprivileged behind a port forward; redirects keep the listener's port")
	}
	f.DurationVar(&opts.ShutdownGrace, "shutdown-grace", waypoint.DefaultShutdownGrace, "how long in-flight requests may finish when a listener closes")
	f.DurationVar(&opts.ReadHeaderTimeout, "read-header-timeout", proxy.DefaultReadHeaderTimeout, "how long a client may take to send a request head; slower clients are disconnected")
	f.DurationVar(&opts.IdleTimeout, "idle-timeout", proxy.DefaultIdleTimeout, "close client connections idle for this long")
	f.DurationVar(&opts.TCPIdleTimeout, "tcp-idle-timeout", telemetry.DefaultTCPIdleTimeout, "close a relayed TCP connection (TCP and TLS listeners, a waypoint's TCP pass-through) after this long without a byte either way, as Envoy's TCP proxy idle_timeout; 0 never does")
	f.IntVar(&opts.MaxHeaderBytes, "max-header-bytes", proxy.DefaultMaxHeaderBytes, "largest request head accepted; larger ones are answered 431")
	f.Uint32Var(&opts.MaxConcurrentStreams, "max-concurrent-streams", proxy.DefaultMaxConcurrentStreams, "HTTP/2 streams one client connection may have open")
	f.BoolVar(&access, "access-log", true, "write one JSON line per request to stdout")
	f.StringVar(&opts.AdminAddress, "admin-address", "127.0.0.1:15000", "admin endpoint (/config_dump); keep it on localhost; - disables")
	f.StringVar(&opts.MetricsAddress, "metrics-address", ":15020", "Prometheus /metrics; - disables")
	f.StringVar(&opts.ReadinessAddress, "readiness-address", ":15021", "/healthz/ready; - disables")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// parsePortMap reads --port-map's LISTENER=LOCAL pairs.
func parsePortMap(m map[string]string) (map[uint32]uint32, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[uint32]uint32, len(m))
	for k, v := range m {
		from, err1 := strconv.ParseUint(k, 10, 16)
		to, err2 := strconv.ParseUint(v, 10, 16)
		if err1 != nil || err2 != nil || from == 0 || to == 0 {
			return nil, fmt.Errorf("--port-map %s=%s: want LISTENER=LOCAL with ports 1-65535, e.g. 80=8080", k, v)
		}
		out[uint32(from)] = uint32(to)
	}
	return out, nil
}

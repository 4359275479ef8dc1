package cli

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/echo"
)

// echoFlags are the flags of `ambit echo`.
type echoFlags struct {
	listen                      string
	httpPort, grpcPort, tcpPort int
	ctx                         echo.Context
	maxDelay                    time.Duration
	maxSize                     int64
	shutdownTimeout             time.Duration
	logLevel                    string
	tlsCert, tlsKey             string
}

func newEchoCmd() *cobra.Command {
	cmd, _ := newEchoCommand()
	return cmd
}

// newEchoCommand also returns the flag values, for tests.
func newEchoCommand() (*cobra.Command, *echoFlags) {
	var f echoFlags
	cmd := &cobra.Command{
		Use:   "echo",
		Short: "Run the echo app used by tests, the demo and benchmarks (HTTP/1.1, h2c, gRPC, TCP)",
		Long: `echo answers every request with what it saw of it, so you can check what the
mesh delivered: HTTP/1.1 and h2c (prior knowledge) on --http-port with the JSON
of the Gateway API conformance echo server plus the client address it saw;
gRPC on --grpc-port (ambit.echo.v1.EchoService, the conformance GrpcEcho
service, health and reflection); raw TCP echo on --tcp-port. A port of 0
disables that listener.

HTTP paths and queries:
  /status/NNN       answer with status NNN (200-599), no body
  ?delay=250ms      wait before answering (up to --max-delay; stops if the client leaves)
  ?size=N           answer with exactly N bytes instead of JSON (up to --max-size)
  /health           "OK"
  /ws               WebSocket echo
  X-Echo-Set-Header: Name: value, Other: value   sets response headers

The namespace, pod, service and ingress in every answer come from the flags or,
when a flag is not given, from NAMESPACE, POD_NAME, SERVICE_NAME and
INGRESS_NAME, as for the conformance echo server in a pod.`,
		Example: `  ambit echo --namespace demo --pod echo-0 --service echo
  curl -s localhost:8080/hello
  curl -s --http2-prior-knowledge localhost:8080/hello
  curl -s -o /dev/null -w '%{http_code}\n' localhost:8080/status/503
  echo hi | nc -N localhost 9090
  ambit echo --tls-cert tls.crt --tls-key tls.key   # HTTPS (HTTP/1.1, h2) on 8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := f.options(cmd)
			if err != nil {
				return err
			}
			return echo.New(opts).Run(cmd.Context())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.listen, "listen", "", "address (IP or host) to listen on; all interfaces when empty")
	fs.IntVar(&f.httpPort, "http-port", 8080, "HTTP/1.1 and h2c port (0 disables)")
	fs.IntVar(&f.grpcPort, "grpc-port", 7070, "gRPC port (0 disables)")
	fs.IntVar(&f.tcpPort, "tcp-port", 9090, "raw TCP echo port (0 disables)")
	fs.StringVar(&f.ctx.Namespace, "namespace", "", "namespace reported in answers (default $NAMESPACE)")
	fs.StringVar(&f.ctx.Pod, "pod", "", "pod name reported in answers (default $POD_NAME)")
	fs.StringVar(&f.ctx.Service, "service", "", "service name reported in answers (default $SERVICE_NAME)")
	fs.StringVar(&f.ctx.Ingress, "ingress", "", "ingress/gateway name reported in answers (default $INGRESS_NAME)")
	fs.DurationVar(&f.maxDelay, "max-delay", echo.DefaultMaxDelay, "largest ?delay= accepted")
	fs.Int64Var(&f.maxSize, "max-size", echo.DefaultMaxSize, "largest ?size= accepted, in bytes")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", echo.DefaultShutdownTimeout, "how long in-flight requests may finish on shutdown")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS instead of HTTP on --http-port (with --tls-key)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key file of --tls-cert")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug (one line per request), info, warn or error")
	return cmd, &f
}

// options validates the flags and fills what was not given from the
// environment.
func (f *echoFlags) options(cmd *cobra.Command) (echo.Options, error) {
	level, err := parseLogLevel(f.logLevel)
	if err != nil {
		return echo.Options{}, err
	}
	if f.maxDelay <= 0 {
		return echo.Options{}, fmt.Errorf("--max-delay %s: want a positive duration, e.g. 30s", f.maxDelay)
	}
	if f.maxSize <= 0 {
		return echo.Options{}, fmt.Errorf("--max-size %d: want a positive byte count", f.maxSize)
	}
	if f.shutdownTimeout <= 0 {
		return echo.Options{}, fmt.Errorf("--shutdown-timeout %s: want a positive duration, e.g. 5s", f.shutdownTimeout)
	}
	addr := func(flag string, port int) (string, error) {
		if port < 0 || port > 65535 {
			return "", fmt.Errorf("--%s %d: want a port from 1 to 65535, or 0 to disable", flag, port)
		}
		if port == 0 {
			return "", nil
		}
		return net.JoinHostPort(f.listen, strconv.Itoa(port)), nil
	}
	opts := echo.Options{
		Context:         f.ctx,
		Logger:          slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})),
		MaxDelay:        f.maxDelay,
		MaxSize:         f.maxSize,
		ShutdownTimeout: f.shutdownTimeout,
	}
	if opts.HTTPAddress, err = addr("http-port", f.httpPort); err != nil {
		return echo.Options{}, err
	}
	if opts.GRPCAddress, err = addr("grpc-port", f.grpcPort); err != nil {
		return echo.Options{}, err
	}
	if opts.TCPAddress, err = addr("tcp-port", f.tcpPort); err != nil {
		return echo.Options{}, err
	}
	if opts.HTTPAddress == "" && opts.GRPCAddress == "" && opts.TCPAddress == "" {
		return echo.Options{}, fmt.Errorf("--http-port, --grpc-port and --tcp-port are all 0: enable at least one")
	}
	if f.tlsCert != "" || f.tlsKey != "" {
		if f.tlsCert == "" || f.tlsKey == "" || opts.HTTPAddress == "" {
			return echo.Options{}, fmt.Errorf("--tls-cert %q --tls-key %q --http-port %d: HTTPS needs both files and an HTTP port", f.tlsCert, f.tlsKey, f.httpPort)
		}
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return echo.Options{}, fmt.Errorf("--tls-cert %s --tls-key %s: %w", f.tlsCert, f.tlsKey, err)
		}
		opts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	env := echo.ContextFromEnv()
	for _, v := range []struct {
		flag string
		dst  *string
		env  string
	}{
		{"namespace", &opts.Context.Namespace, env.Namespace},
		{"pod", &opts.Context.Pod, env.Pod},
		{"service", &opts.Context.Service, env.Service},
		{"ingress", &opts.Context.Ingress, env.Ingress},
	} {
		if !cmd.Flags().Changed(v.flag) {
			*v.dst = v.env
		}
	}
	return opts, nil
}

// Package cmdutil holds what ambit's command binaries share besides their
// commands: the process entry point, the --log-level flag's parsing and the
// build's version. It is deliberately tiny and free of cobra: the node proxy's
// own binary links it, and everything linked there is mapped into every
// node's memory.
package cmdutil

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// Main runs run until it returns or SIGINT/SIGTERM cancels its context, and
// exits with exitCode(err) on an error (1 when exitCode is nil).
func Main(run func(context.Context) error, exitCode func(error) int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err == nil {
		return
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "Error:", msg)
	}
	code := 1
	if exitCode != nil {
		code = exitCode(err)
	}
	os.Exit(code)
}

// ParseLogLevel parses a --log-level value.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("--log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// version is set at link time: -ldflags "-X github.com/ambitmesh/ambit/internal/cmdutil.version=v0.1.0".
var version = "dev"

// Info is what `ambit version` and `ambit-node version` report.
type Info struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Revision  string `json:"revision,omitempty"`
}

// BuildInfo returns the version and what the Go toolchain recorded.
func BuildInfo() Info {
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

// Line is the one-line form `BINARY VERSION (GO VERSION)`.
func (i Info) Line(binary string) string {
	return fmt.Sprintf("%s %s (%s)", binary, i.Version, i.GoVersion)
}

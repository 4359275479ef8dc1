package benchproc

import (
	"context"
	"os"
	"os/exec"
)

// ReleaseBuild is the command that builds the binary cmd/<binary> ("ambit"
// or "ambit-node") into out the way the Makefile's build target does, so the
// benchmarks measure the binary users run: static (CGO_ENABLED=0, no libc or
// dynamic loader mapped into every proxy), path-independent (-trimpath) and
// without gRPC's x/net/trace (-tags grpcnotrace: ambit never enables gRPC
// tracing, and linking it costs every node proxy 3.4 MB). Run it inside the
// module.
func ReleaseBuild(ctx context.Context, out, binary string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "grpcnotrace", "-o", out, "github.com/ambitmesh/ambit/cmd/"+binary)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	return cmd
}

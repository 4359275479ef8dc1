// Command ambit is the single binary of the ambit mesh: control plane,
// node proxy, waypoint, demo and operator CLI. The node proxy also ships as
// its own smaller binary, cmd/ambit-node.
package main

import (
	"github.com/ambitmesh/ambit/internal/cli"
	"github.com/ambitmesh/ambit/internal/cmdutil"
)

func main() {
	cmdutil.Main(cli.NewRoot().ExecuteContext, cli.ExitCode)
}

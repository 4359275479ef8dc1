//go:build linux

package demo

import (
	"context"
	"errors"
	"os"

	"github.com/ambitmesh/ambit/internal/lab"
	"github.com/ambitmesh/ambit/internal/node/capture"
)

// probeCapture installs the node proxy's real capture rules in a throw-away namespace: the same
// nftables and TPROXY features the netns mode will need.
func probeCapture(ctx context.Context) error {
	ns, err := lab.NewNS("demo-probe")
	if err != nil {
		return err
	}
	return errors.Join(capture.Install(ctx, ns.Path, capture.DefaultConfig()), lab.DeleteNS(ns.Name))
}

func isRoot() bool { return os.Geteuid() == 0 }

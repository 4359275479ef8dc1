package demo

import (
	"context"
	"fmt"
	"runtime"
)

// Mode is how the demo lays the mesh out.
type Mode string

const (
	ModeAuto     Mode = "auto"
	ModeNetns    Mode = "netns"
	ModeLoopback Mode = "loopback"
)

// host describes the machine for chooseMode (injectable for tests).
type host struct {
	goos string
	root bool
	// probe checks that transparent capture works here (nftables, TPROXY); nil error = it does.
	probe func(ctx context.Context) error
}

// chooseMode resolves the requested mode against what this machine can do, with the reason the
// demo prints. Asking for netns where it cannot run is an error; auto falls back to loopback.
func chooseMode(ctx context.Context, want Mode, h host) (Mode, string, error) {
	switch want {
	case ModeLoopback:
		return ModeLoopback, "asked for with --mode loopback: explicit mode, every process on its own 127.42.x.y address", nil
	case ModeAuto, ModeNetns, "":
	default:
		return "", "", fmt.Errorf("demo: --mode %q: use auto, netns or loopback", want)
	}
	why := ""
	switch {
	case h.goos != "linux":
		why = "not Linux (" + h.goos + "): network namespaces and nftables capture need Linux"
	case !h.root:
		why = "not root: network namespaces and nftables capture need CAP_NET_ADMIN (run with sudo for transparent capture)"
	default:
		if err := h.probe(ctx); err != nil {
			why = fmt.Sprintf("nftables capture is not available here (%v)", err)
		}
	}
	if why == "" {
		return ModeNetns, "root on Linux with nftables: network namespaces per node and pod, transparent capture (--enroll)", nil
	}
	if want == ModeNetns {
		return "", "", fmt.Errorf("demo: --mode netns: %s; use --mode auto or loopback", why)
	}
	return ModeLoopback, why + "; falling back to explicit mode on loopback", nil
}

func thisHost(probe func(ctx context.Context) error) host {
	if probe == nil {
		probe = probeCapture
	}
	return host{goos: runtime.GOOS, root: isRoot(), probe: probe}
}

package node

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ambitmesh/ambit/internal/node/netns"
)

// With --capture-host the join is marked before any rule of this run
// exists: host rules left by a killed run must not capture it.
func TestDialControlMarkedWithCaptureHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs root")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	mark := func(opts Options) int {
		t.Helper()
		n, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		c, err := n.dialControl(t.Context(), lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var m int
		var serr error
		if err := raw.Control(func(fd uintptr) { m, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
		return m
	}
	base := Options{ControlPlane: "127.0.0.1:1", Node: "vm-1", Token: "t", CAPin: "sha256:00"}
	if got := mark(base); got != 0 {
		t.Errorf("without host capture: SO_MARK %#x, want none", got)
	}
	base.CaptureHost = []string{"shop/billing"}
	if got := mark(base); got != int(netns.Mark) {
		t.Errorf("with --capture-host: SO_MARK %#x, want %#x", got, netns.Mark)
	}
}

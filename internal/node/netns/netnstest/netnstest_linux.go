//go:build linux

// Package netnstest wraps package lab for tests: throw-away network namespaces joined by veth pairs,
// with addresses and routes, failing the test on error and always removed by t.Cleanup, even when
// the test fails. The e2e lab and the capture tests share it.
//
// A typical "pod behind a node" topology:
//
//	outside := netnstest.NewNS(t, "out")
//	pod := netnstest.NewNS(t, "pod")
//	netnstest.Veth(t, outside, "veth-pod", netip.MustParsePrefix("10.77.1.1/24"),
//		pod, "eth0", netip.MustParsePrefix("10.77.1.2/24"))
//	netnstest.Route(t, pod, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.77.1.1"))
//
// Two nodes with pods behind them (nodes joined by a veth, forwarding on, routes to each other's pod
// subnets) is what Topology builds from a lab.Spec; TestTwoNodesWithPods spells it out. IPv6 addresses are added without duplicate address detection,
// so they are usable at once. Names are unique per process and call ("ambit-<prefix>-<pid>-<n>"), so
// packages testing in parallel do not collide.
package netnstest

import (
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ambitmesh/ambit/internal/lab"
	"github.com/ambitmesh/ambit/internal/node/capture"
)

// NS is a named network namespace created for a test.
type NS = lab.NS

// RequireRoot skips the test with a clear message unless it runs as root (network namespaces, veth,
// nftables and TPROXY all need CAP_NET_ADMIN; CI runs these tests as root).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to create network namespaces, veth pairs and nftables rules; CI runs it as root")
	}
}

// NewNS creates a uniquely named network namespace with its loopback up, removed when the test ends.
func NewNS(t testing.TB, prefix string) NS {
	t.Helper()
	RequireRoot(t)
	ns, err := lab.NewNS(prefix)
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.DeleteNS(ns.Name); err != nil {
			t.Errorf("netnstest: %v", err)
		}
	})
	return ns
}

// Handle returns a netlink handle operating inside ns, closed when the test ends.
func Handle(t testing.TB, ns NS) *netlink.Handle {
	t.Helper()
	fd, err := netns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatalf("netnstest: open %s: %v", ns.Path, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		t.Fatalf("netnstest: netlink handle in %s: %v", ns.Name, err)
	}
	t.Cleanup(h.Close)
	return h
}

// Veth joins a and b with a veth pair named aIf (in a) and bIf (in b), gives each end its address (a
// zero prefix leaves that end without one) and brings both up. The pair disappears with either
// namespace.
func Veth(t testing.TB, a NS, aIf string, aAddr netip.Prefix, b NS, bIf string, bAddr netip.Prefix) {
	t.Helper()
	must(t, lab.Veth(a, aIf, aAddr, b, bIf, bAddr))
}

// Addr adds an address to an interface of ns (e.g. an extra /32 on "lo" for a fake remote service).
func Addr(t testing.TB, ns NS, ifName string, addr netip.Prefix) {
	t.Helper()
	must(t, lab.Addr(ns, ifName, addr))
}

// Route adds a route in ns to dst via gw.
func Route(t testing.TB, ns NS, dst netip.Prefix, gw netip.Addr) {
	t.Helper()
	must(t, lab.Route(ns, dst, gw))
}

// Forwarding turns on IPv4 (and IPv6) forwarding in ns, for namespaces that play a node or router.
func Forwarding(t testing.TB, ns NS) {
	t.Helper()
	must(t, lab.Forwarding(ns))
}

// Topology builds a lab.Spec (two nodes with pods), removed when the test ends.
func Topology(t testing.TB, spec lab.Spec) *lab.Topology {
	t.Helper()
	RequireRoot(t)
	topo, err := lab.Build(spec)
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("netnstest: %v", err)
		}
	})
	return topo
}

// HasCaptureTable reports whether ns holds the nftables table of ambit's
// capture rules (capture.TableName, family inet).
func HasCaptureTable(t testing.TB, ns NS) bool {
	t.Helper()
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("netnstest: list nftables tables in %s: %v", ns.Name, err)
	}
	return slices.ContainsFunc(tables, func(tb *nftables.Table) bool { return tb.Name == capture.TableName })
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
}

// WithoutNetAdmin runs fn on an OS thread that dropped CAP_NET_ADMIN from its effective set, as an
// unprivileged user would run it; the rest of the test keeps root. Only what fn does on its own
// goroutine is unprivileged: goroutines it starts run on other threads.
func WithoutNetAdmin(t testing.TB, fn func()) {
	t.Helper()
	RequireRoot(t)
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, its capabilities dropped, ends with the goroutine.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[unix.CAP_NET_ADMIN/32].Effective &^= 1 << (unix.CAP_NET_ADMIN % 32)
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		fn()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("drop CAP_NET_ADMIN: %v", err)
	}
}

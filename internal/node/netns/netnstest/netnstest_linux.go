//go:build linux

// Package netnstest builds throw-away network topologies for tests: named network namespaces joined by
// veth pairs, with addresses and routes, created through netlink (no shelling out) and always removed
// by t.Cleanup, even when the test fails. The e2e lab and the capture tests share it.
//
// A typical "pod behind a node" topology:
//
//	outside := netnstest.NewNS(t, "out")
//	pod := netnstest.NewNS(t, "pod")
//	netnstest.Veth(t, outside, "veth-pod", netip.MustParsePrefix("10.77.1.1/24"),
//		pod, "eth0", netip.MustParsePrefix("10.77.1.2/24"))
//	netnstest.Route(t, pod, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.77.1.1"))
//
// Two nodes with a pod each (nodes joined by a veth, Forwarding on, routes to each other's pod
// subnet) is in TestTwoNodesWithPods. IPv6 addresses are added without duplicate address detection,
// so they are usable at once. Names are unique per process and call ("ambit-<prefix>-<pid>-<n>"), so
// packages testing in parallel do not collide.
package netnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	ambitnetns "github.com/ambitmesh/ambit/internal/node/netns"
)

// NS is a named network namespace created for a test.
type NS struct {
	Name string // name under /run/netns (what `ip netns exec` takes)
	Path string // /run/netns/<Name>, what the netns and capture packages take
}

// RequireRoot skips the test with a clear message unless it runs as root (network namespaces, veth,
// nftables and TPROXY all need CAP_NET_ADMIN; CI runs these tests as root).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to create network namespaces, veth pairs and nftables rules; CI runs it as root")
	}
}

var seq atomic.Uint32

// NewNS creates a uniquely named network namespace with its loopback up, removed when the test ends.
func NewNS(t testing.TB, prefix string) NS {
	t.Helper()
	RequireRoot(t)
	name := fmt.Sprintf("ambit-%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer origin.Close()
		created, err := netns.NewNamed(name) // moves this thread into the new namespace
		if err != nil {
			if setErr := netns.Set(origin); setErr == nil {
				runtime.UnlockOSThread()
			} // else: exit locked, the runtime kills the thread
			errc <- err
			return
		}
		created.Close()
		if err := netns.Set(origin); err != nil {
			errc <- fmt.Errorf("return to the original namespace: %w", err)
			return // exit locked: the thread is discarded
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("netnstest: create netns %s: %v", name, err)
	}
	ns := NS{Name: name, Path: filepath.Join("/run/netns", name)}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netnstest: delete netns %s: %v", name, err)
		}
	})
	withHandle(t, ns, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
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

func withHandle(t testing.TB, ns NS, fn func(h *netlink.Handle) error) {
	t.Helper()
	h := Handle(t, ns)
	if err := fn(h); err != nil {
		t.Fatalf("netnstest: in %s: %v", ns.Name, err)
	}
}

// Veth joins a and b with a veth pair named aIf (in a) and bIf (in b), gives each end its address (a
// zero prefix leaves that end without one) and brings both up. The pair disappears with either
// namespace.
func Veth(t testing.TB, a NS, aIf string, aAddr netip.Prefix, b NS, bIf string, bAddr netip.Prefix) {
	t.Helper()
	bfd, err := netns.GetFromPath(b.Path)
	if err != nil {
		t.Fatalf("netnstest: open %s: %v", b.Path, err)
	}
	defer bfd.Close()
	withHandle(t, a, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: aIf},
			PeerName:      bIf,
			PeerNamespace: netlink.NsFd(int(bfd)),
		})
	})
	up := func(ns NS, ifName string, addr netip.Prefix) {
		withHandle(t, ns, func(h *netlink.Handle) error {
			link, err := h.LinkByName(ifName)
			if err != nil {
				return err
			}
			if addr.IsValid() {
				if err := h.AddrAdd(link, nlAddr(addr)); err != nil {
					return fmt.Errorf("add %s to %s: %w", addr, ifName, err)
				}
			}
			return h.LinkSetUp(link)
		})
	}
	up(a, aIf, aAddr)
	up(b, bIf, bAddr)
}

// Addr adds an address to an interface of ns (e.g. an extra /32 on "lo" for a fake remote service).
func Addr(t testing.TB, ns NS, ifName string, addr netip.Prefix) {
	t.Helper()
	withHandle(t, ns, func(h *netlink.Handle) error {
		link, err := h.LinkByName(ifName)
		if err != nil {
			return err
		}
		return h.AddrAdd(link, nlAddr(addr))
	})
}

// Route adds a route in ns to dst via gw.
func Route(t testing.TB, ns NS, dst netip.Prefix, gw netip.Addr) {
	t.Helper()
	withHandle(t, ns, func(h *netlink.Handle) error {
		return h.RouteAdd(&netlink.Route{Dst: ipNet(dst), Gw: gw.AsSlice()})
	})
}

// Forwarding turns on IPv4 (and IPv6) forwarding in ns, for namespaces that play a node or router.
func Forwarding(t testing.TB, ns NS) {
	t.Helper()
	err := ambitnetns.Do(ns.Path, func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		return errors.Join(
			os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644),
			os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644),
		)
	})
	if err != nil {
		t.Fatalf("netnstest: forwarding in %s: %v", ns.Name, err)
	}
}

// nlAddr skips duplicate address detection for IPv6, so the address is usable at once rather than
// "tentative" for a second or two.
func nlAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

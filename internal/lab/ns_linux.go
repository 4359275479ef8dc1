//go:build linux

package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	ambitnetns "github.com/ambitmesh/ambit/internal/node/netns"
)

// NetnsDir is where named network namespaces live (what `ip netns` uses).
const NetnsDir = "/run/netns"

// NS is a named network namespace.
type NS struct {
	Name string // name under /run/netns (what `ip netns exec` takes)
	Path string // /run/netns/<Name>, what the netns and capture packages take
}

var seq atomic.Uint32

// NewNS creates a uniquely named network namespace ("ambit-<prefix>-<pid>-<n>") with its loopback
// up. The caller removes it with DeleteNS.
func NewNS(prefix string) (NS, error) {
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
		return NS{}, fmt.Errorf("lab: create netns %s: %w", name, err)
	}
	ns := NS{Name: name, Path: filepath.Join(NetnsDir, name)}
	err := withHandle(ns, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	})
	if err != nil {
		return NS{}, errors.Join(err, DeleteNS(name))
	}
	return ns, nil
}

// DeleteNS removes a named namespace; one already gone is not an error. Its veth pairs, nftables
// rules and routes go with it once no process is left inside.
func DeleteNS(name string) error {
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lab: delete netns %s: %w", name, err)
	}
	return nil
}

// handle returns a netlink handle operating inside ns.
func handle(ns NS) (*netlink.Handle, error) {
	fd, err := netns.GetFromPath(ns.Path)
	if err != nil {
		return nil, fmt.Errorf("lab: open %s: %w", ns.Path, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return nil, fmt.Errorf("lab: netlink handle in %s: %w", ns.Name, err)
	}
	return h, nil
}

func withHandle(ns NS, fn func(h *netlink.Handle) error) error {
	h, err := handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := fn(h); err != nil {
		return fmt.Errorf("lab: in %s: %w", ns.Name, err)
	}
	return nil
}

// Veth joins a and b with a veth pair named aIf (in a) and bIf (in b), gives each end its address (a
// zero prefix leaves that end without one) and brings both up. The pair disappears with either
// namespace.
func Veth(a NS, aIf string, aAddr netip.Prefix, b NS, bIf string, bAddr netip.Prefix) error {
	bfd, err := netns.GetFromPath(b.Path)
	if err != nil {
		return fmt.Errorf("lab: open %s: %w", b.Path, err)
	}
	defer bfd.Close()
	err = withHandle(a, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: aIf},
			PeerName:      bIf,
			PeerNamespace: netlink.NsFd(int(bfd)),
		})
	})
	if err != nil {
		return err
	}
	up := func(ns NS, ifName string, addr netip.Prefix) error {
		return withHandle(ns, func(h *netlink.Handle) error {
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
	if err := up(a, aIf, aAddr); err != nil {
		return err
	}
	return up(b, bIf, bAddr)
}

// Addr adds an address to an interface of ns (e.g. an extra /32 on "lo" for a fake remote service).
func Addr(ns NS, ifName string, addr netip.Prefix) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		link, err := h.LinkByName(ifName)
		if err != nil {
			return err
		}
		return h.AddrAdd(link, nlAddr(addr))
	})
}

// Route adds a route in ns to dst via gw.
func Route(ns NS, dst netip.Prefix, gw netip.Addr) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		return h.RouteAdd(&netlink.Route{Dst: ipNet(dst), Gw: gw.AsSlice()})
	})
}

// Forwarding turns on IPv4 (and IPv6) forwarding in ns, for namespaces that play a node or router.
func Forwarding(ns NS) error {
	err := ambitnetns.Do(ns.Path, func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		return errors.Join(
			os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644),
			os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644),
		)
	})
	if err != nil {
		return fmt.Errorf("lab: forwarding in %s: %w", ns.Name, err)
	}
	return nil
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

//go:build linux

package netns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that is inside the network namespace at nsPath, then moves the thread
// back. An empty nsPath runs fn directly in the caller's namespace. fn must not start goroutines that
// expect to inherit the namespace: they run on other threads.
func Do(nsPath string, fn func() error) error {
	return do(nsPath, func(func() error) error { return fn() })
}

// do is Do where fn may call leave to return to the original namespace early — the dialer does so as
// soon as its socket exists, so the wait for connect does not pin an OS thread.
func do(nsPath string, fn func(leave func() error) error) error {
	if nsPath == "" {
		return fn(func() error { return nil })
	}
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("netns: open %s: %w", nsPath, err)
	}
	defer target.Close()

	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	// A dedicated goroutine: if the thread cannot be moved back, this goroutine exits still locked
	// and the runtime destroys the thread rather than reusing it in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns: read the thread's namespace: %w", err)}
			return
		}
		defer origin.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns: enter %s: %w", nsPath, err)}
			return
		}
		left := false
		leave := func() error {
			if left {
				return nil
			}
			if err := netns.Set(origin); err != nil {
				return fmt.Errorf("netns: return from %s: %w", nsPath, err)
			}
			left = true
			runtime.UnlockOSThread()
			return nil
		}
		var r result
		func() {
			defer func() { r.panic = recover() }()
			r.err = fn(leave)
		}()
		r.err = errors.Join(r.err, leave())
		done <- r
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// Listen opens a listener whose socket lives in the network namespace at nsPath ("" = current), with
// the proxy's mark and, if asked, IP_TRANSPARENT. addr must be a literal ip:port (or :port).
func Listen(ctx context.Context, nsPath, network, addr string, opts ListenOptions) (net.Listener, error) {
	if err := checkLiteral(addr); err != nil {
		return nil, err
	}
	so := opts.sockopts()
	lc := net.ListenConfig{Control: so.control}
	var ln net.Listener
	err := Do(nsPath, func() error {
		var err error
		ln, err = lc.Listen(ctx, network, addr)
		return err
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, fmt.Errorf("netns: listen %s %s in %s: %w", network, addr, nsName(nsPath), err)
	}
	return ln, nil
}

// DialContext connects to addr (a literal ip:port) from inside d.NetNS. The socket is created in the
// namespace; the thread leaves it before the connect wait.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := checkLiteral(addr); err != nil {
		return nil, err
	}
	so := d.sockopts()
	var conn net.Conn
	err := do(d.NetNS, func(leave func() error) error {
		nd := net.Dialer{
			Timeout: d.Timeout,
			Control: func(network, address string, c syscall.RawConn) error {
				if err := so.control(network, address, c); err != nil {
					return err
				}
				return leave()
			},
		}
		if d.LocalAddr.IsValid() {
			nd.LocalAddr = net.TCPAddrFromAddrPort(d.LocalAddr)
		}
		var err error
		conn, err = nd.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		from := ""
		if d.LocalAddr.IsValid() {
			from = " from " + d.LocalAddr.String()
		}
		return nil, fmt.Errorf("netns: dial %s %s%s in %s: %w", network, addr, from, nsName(d.NetNS), err)
	}
	return conn, nil
}

// MarkControl is a net.Dialer Control function that sets SO_MARK mark, for
// the proxy's sockets that are dialled by name (no namespace, no literal IP).
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return sockopts{mark: mark}.control
}

func (o sockopts) control(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = o.apply(int(fd), network) })
	return errors.Join(err, serr)
}

func (o sockopts) apply(fd int, network string) error {
	if o.mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(o.mark)); err != nil {
			return fmt.Errorf("set SO_MARK %#x: %w", o.mark, err)
		}
	}
	v6 := strings.HasSuffix(network, "6")
	if o.transparent {
		level, opt, name := unix.SOL_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT"
		if v6 {
			level, opt, name = unix.SOL_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT"
		}
		if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	if o.bindNoPort {
		// Only an optimisation (port chosen by connect from the full 4-tuple); old kernels lack it.
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil && !errors.Is(err, unix.ENOPROTOOPT) {
			return fmt.Errorf("set IP_BIND_ADDRESS_NO_PORT: %w", err)
		}
	}
	return nil
}

// OriginalDst returns the destination a connection had before nat REDIRECT sent it to the proxy
// (SO_ORIGINAL_DST; IP6T_SO_ORIGINAL_DST for IPv6). c must be a TCP connection accepted by a
// listener in the namespace where the redirect happened.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("netns: original destination: %T is not a socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netns: original destination: %w", err)
	}
	// A dual-stack socket carries IPv4 connections as v4-mapped: ask the IPv4 table first for those.
	v4first := true
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok && la.IP.To4() == nil {
		v4first = false
	}
	var dst netip.AddrPort
	var gerr error
	err = rc.Control(func(fd uintptr) {
		if v4first {
			if dst, gerr = origDst4(int(fd)); gerr == nil {
				return
			}
			var err6 error
			if dst, err6 = origDst6(int(fd)); err6 == nil {
				gerr = nil
			}
			return
		}
		dst, gerr = origDst6(int(fd))
	})
	if err == nil {
		err = gerr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netns: original destination of %s -> %s: %w", c.RemoteAddr(), c.LocalAddr(), err)
	}
	return dst, nil
}

func origDst4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); err != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", err)
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h (same number as
// SO_ORIGINAL_DST, at level SOL_IPV6).
const ip6tSOOriginalDst = 80

func origDst6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); err != nil {
		return netip.AddrPort{}, fmt.Errorf("IP6T_SO_ORIGINAL_DST: %w", err)
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), nil
}

func getsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// HasNetAdmin reports whether this process holds CAP_NET_ADMIN in its effective set: marking
// sockets (SO_MARK) and installing nftables rules need it.
func HasNetAdmin() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_NET_ADMIN/32].Effective&(1<<(unix.CAP_NET_ADMIN%32)) != 0
}

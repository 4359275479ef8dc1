package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Mark is the SO_MARK every socket of the node proxy carries; the capture rules never touch packets
// whose mark has these bits (under MarkMask), so the proxy's own connections are never redirected back
// to it. The value is Istio's, so rules written for ztunnel read the same.
const Mark uint32 = 0x539

// MarkMask is the part of the packet mark ambit owns; bits outside it belong to other software (CNIs
// use the high bits).
const MarkMask uint32 = 0xfff

// ErrUnsupported is returned on systems without Linux network namespaces.
var ErrUnsupported = errors.New("netns: network namespaces and transparent sockets need Linux; use explicit mode")

// ListenOptions are the socket options of a listener opened by Listen.
type ListenOptions struct {
	// Transparent sets IP_TRANSPARENT (IPV6_TRANSPARENT), which a TPROXY listener needs to be handed
	// connections addressed to other ip:ports.
	Transparent bool
	// Mark overrides the SO_MARK (default Mark).
	Mark uint32
	// Unmarked leaves SO_MARK unset. Only tests and simulated workloads use it: a socket of the proxy
	// without the mark would be captured by the proxy's own rules.
	Unmarked bool
}

// Dialer dials TCP from inside a network namespace, with the proxy's mark and optionally from a
// transparent (non-local) source address such as the original client IP.
type Dialer struct {
	// NetNS is the path of the network namespace (e.g. /var/run/netns/pod1 or /proc/<pid>/ns/net);
	// empty means the caller's own namespace.
	NetNS string
	// Mark overrides the SO_MARK (default Mark).
	Mark uint32
	// Unmarked leaves SO_MARK unset (tests and simulated workloads only; see ListenOptions.Unmarked).
	Unmarked bool
	// Transparent sets IP_TRANSPARENT so LocalAddr may be an address the namespace does not own.
	Transparent bool
	// LocalAddr, when valid, is the source address to bind (port 0 = any port).
	LocalAddr netip.AddrPort
	// Timeout bounds the connect; zero means only the context bounds it.
	Timeout time.Duration
}

func (o ListenOptions) sockopts() sockopts {
	return sockopts{mark: effectiveMark(o.Mark, o.Unmarked), transparent: o.Transparent}
}

func (d *Dialer) sockopts() sockopts {
	return sockopts{
		mark:        effectiveMark(d.Mark, d.Unmarked),
		transparent: d.Transparent,
		bindNoPort:  d.LocalAddr.IsValid() && d.LocalAddr.Port() == 0,
	}
}

type sockopts struct {
	mark        uint32 // 0 = leave unset
	transparent bool
	bindNoPort  bool
}

func effectiveMark(m uint32, unmarked bool) uint32 {
	switch {
	case unmarked:
		return 0
	case m == 0:
		return Mark
	}
	return m
}

// checkLiteral rejects host names: resolving one may run on another OS thread, outside the namespace.
func checkLiteral(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("netns: address %q: %w (want ip:port)", addr, err)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("netns: address %q: host must be a literal IP, not a name (names would be resolved outside the namespace)", addr)
	}
	return nil
}

func nsName(nsPath string) string {
	if nsPath == "" {
		return "current netns"
	}
	return "netns " + nsPath
}

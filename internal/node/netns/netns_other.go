//go:build !linux

package netns

import (
	"context"
	"net"
	"net/netip"
	"syscall"
)

// MarkControl is unsupported outside Linux: the returned function fails.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error { return ErrUnsupported }
}

// Do is unsupported outside Linux.
func Do(nsPath string, fn func() error) error { return ErrUnsupported }

// Listen is unsupported outside Linux.
func Listen(ctx context.Context, nsPath, network, addr string, opts ListenOptions) (net.Listener, error) {
	return nil, ErrUnsupported
}

// DialContext is unsupported outside Linux.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return nil, ErrUnsupported
}

// OriginalDst is unsupported outside Linux.
func OriginalDst(c net.Conn) (netip.AddrPort, error) { return netip.AddrPort{}, ErrUnsupported }

// HasNetAdmin is false outside Linux: nothing here can mark sockets.
func HasNetAdmin() bool { return false }

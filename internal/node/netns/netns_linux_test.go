//go:build linux

package netns_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	vnetns "github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDoRunsInsideAndReturns(t *testing.T) {
	ns := netnstest.NewNS(t, "do")
	want, err := vnetns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()

	runtime.LockOSThread() // so the before/after reads are of the same thread
	defer runtime.UnlockOSThread()
	before, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	sentinel := errors.New("from fn")
	var inside bool
	err = netns.Do(ns.Path, func() error {
		cur, err := vnetns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		inside = cur.Equal(want)
		return sentinel
	})
	if !errors.Is(err, sentinel) {
		t.Errorf("Do returned %v; want fn's error", err)
	}
	if !inside {
		t.Error("fn did not run inside the namespace")
	}
	after, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Error("the caller's thread changed namespace")
	}
	if err := netns.Do("/nonexistent/netns", func() error { return nil }); err == nil || !strings.Contains(err.Error(), "/nonexistent/netns") {
		t.Errorf("Do with a bad path = %v; want an error naming the path", err)
	}
}

func TestListenAndDialStayInTheirNamespace(t *testing.T) {
	ns := netnstest.NewNS(t, "ln")
	ln, err := netns.Listen(context.Background(), ns.Path, "tcp", "127.0.0.1:0", netns.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, err = c.Write([]byte("hi"))
			c.Close()
		}
		done <- err
	}()
	addr := ln.Addr().String()

	// From the test's own namespace the port is someone else's loopback: nothing there.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("dial %s from the test's namespace succeeded; the listener leaked out of its namespace", addr)
	}
	c, err := (&netns.Dialer{NetNS: ns.Path, Timeout: 3 * time.Second}).DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v; want hi", buf, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type opts struct {
	Mark        int
	Transparent int
}

func sockOpts(t *testing.T, c syscall.Conn, v6 bool) opts {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var o opts
	var gerr error
	rc.Control(func(fd uintptr) {
		o.Mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
		if gerr != nil {
			return
		}
		if v6 {
			o.Transparent, gerr = unix.GetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT)
		} else {
			o.Transparent, gerr = unix.GetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT)
		}
	})
	if gerr != nil {
		t.Fatal(gerr)
	}
	return o
}

func TestSocketOptions(t *testing.T) {
	ns := netnstest.NewNS(t, "opt")
	tests := []struct {
		name string
		opts netns.ListenOptions
		addr string
		want opts
	}{
		{"default carries the proxy mark", netns.ListenOptions{}, "127.0.0.1:0", opts{Mark: 0x539}},
		{"TPROXY listener", netns.ListenOptions{Transparent: true}, "0.0.0.0:0", opts{Mark: 0x539, Transparent: 1}},
		{"IPv6 TPROXY listener", netns.ListenOptions{Transparent: true}, "[::]:0", opts{Mark: 0x539, Transparent: 1}},
		{"mark override", netns.ListenOptions{Mark: 0x77}, "127.0.0.1:0", opts{Mark: 0x77}},
		{"unmarked (simulated app)", netns.ListenOptions{Unmarked: true}, "127.0.0.1:0", opts{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := netns.Listen(context.Background(), ns.Path, "tcp", tc.addr, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if diff := cmp.Diff(tc.want, sockOpts(t, ln.(*net.TCPListener), strings.HasPrefix(tc.addr, "["))); diff != "" {
				t.Errorf("listener options (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("dialer: mark and transparent source bind", func(t *testing.T) {
		ln, err := netns.Listen(context.Background(), ns.Path, "tcp", "127.0.0.1:0", netns.ListenOptions{Unmarked: true})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Addr, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				accepted <- nil
				return
			}
			accepted <- c.RemoteAddr()
			c.Close()
		}()
		// 127.0.0.2 is local (all of 127/8 is), so this shows the bind without needing routes.
		d := netns.Dialer{NetNS: ns.Path, Transparent: true, LocalAddr: netip.MustParseAddrPort("127.0.0.2:0"), Timeout: 3 * time.Second}
		c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if diff := cmp.Diff(opts{Mark: 0x539, Transparent: 1}, sockOpts(t, c.(*net.TCPConn), false)); diff != "" {
			t.Errorf("dialed socket options (-want +got):\n%s", diff)
		}
		if got := (<-accepted).(*net.TCPAddr).AddrPort().Addr(); got != netip.MustParseAddr("127.0.0.2") {
			t.Errorf("server saw the client as %s; want 127.0.0.2", got)
		}
	})
}

func TestAddressesMustBeLiteral(t *testing.T) {
	// No namespace needed: the check comes before any system call.
	for _, addr := range []string{"localhost:80", "example.com:443", "10.0.0.1"} {
		if _, err := netns.Listen(context.Background(), "", "tcp", addr, netns.ListenOptions{}); err == nil {
			t.Errorf("Listen(%q) succeeded; want an error (literal ip:port required)", addr)
		}
		if _, err := (&netns.Dialer{}).DialContext(context.Background(), "tcp", addr); err == nil {
			t.Errorf("Dial(%q) succeeded; want an error (literal ip:port required)", addr)
		}
	}
}

func TestOriginalDstOfNonSocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := netns.OriginalDst(a); err == nil {
		t.Error("OriginalDst(net.Pipe) succeeded; want an error")
	}
}

func TestHasNetAdmin(t *testing.T) {
	netnstest.RequireRoot(t)
	if !netns.HasNetAdmin() {
		t.Error("HasNetAdmin() = false as root; want true")
	}
	netnstest.WithoutNetAdmin(t, func() {
		if netns.HasNetAdmin() {
			t.Error("HasNetAdmin() = true without CAP_NET_ADMIN; want false")
		}
	})
}

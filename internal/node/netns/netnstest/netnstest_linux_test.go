//go:build linux

package netnstest_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Two "nodes" joined by a veth, one "pod" behind each: the shape of the e2e lab. A pod reaches the
// other node's pod only through both nodes' forwarding and routes.
func TestTwoNodesWithPods(t *testing.T) {
	node1, node2 := netnstest.NewNS(t, "node1"), netnstest.NewNS(t, "node2")
	pod1, pod2 := netnstest.NewNS(t, "pod1"), netnstest.NewNS(t, "pod2")
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	netnstest.Veth(t, node1, "eth0", p("192.168.77.1/24"), node2, "eth0", p("192.168.77.2/24"))
	netnstest.Veth(t, node1, "veth-pod1", p("10.1.0.1/24"), pod1, "eth0", p("10.1.0.2/24"))
	netnstest.Veth(t, node2, "veth-pod2", p("10.2.0.1/24"), pod2, "eth0", p("10.2.0.2/24"))
	netnstest.Forwarding(t, node1)
	netnstest.Forwarding(t, node2)
	netnstest.Route(t, pod1, p("0.0.0.0/0"), a("10.1.0.1"))
	netnstest.Route(t, pod2, p("0.0.0.0/0"), a("10.2.0.1"))
	netnstest.Route(t, node1, p("10.2.0.0/24"), a("192.168.77.2"))
	netnstest.Route(t, node2, p("10.1.0.0/24"), a("192.168.77.1"))

	ln, err := netns.Listen(context.Background(), pod2.Path, "tcp", "10.2.0.2:8080", netns.ListenOptions{Unmarked: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			seen <- "accept: " + err.Error()
			return
		}
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	c, err := (&netns.Dialer{NetNS: pod1.Path, Unmarked: true, Timeout: 3 * time.Second}).DialContext(context.Background(), "tcp", "10.2.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := <-seen; got != "10.1.0.2" {
		t.Errorf("pod2 saw the client as %s; want pod1's 10.1.0.2 (routed, not NATed)", got)
	}
}

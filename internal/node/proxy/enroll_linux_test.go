package proxy_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

// TestInPodCapture: two nodes, a pod on each; the app in pod 1 dials the
// service VIP unchanged, its connection is captured in its own namespace,
// tunnelled over HBONE to pod 2's proxy listener and reaches the echo from
// pod 1's address.
func TestInPodCapture(t *testing.T) {
	netnstest.RequireRoot(t)
	node1, node2 := netnstest.NewNS(t, "node1"), netnstest.NewNS(t, "node2")
	pod1, pod2 := netnstest.NewNS(t, "pod1"), netnstest.NewNS(t, "pod2")
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	netnstest.Veth(t, node1, "eth0", p("192.168.77.1/24"), node2, "eth0", p("192.168.77.2/24"))
	netnstest.Veth(t, node1, "veth-pod1", p("10.1.0.1/24"), pod1, "eth0", p("10.1.0.2/24"))
	netnstest.Veth(t, node2, "veth-pod2", p("10.2.0.1/24"), pod2, "eth0", p("10.2.0.2/24"))
	netnstest.Forwarding(t, node1)
	netnstest.Forwarding(t, node2)
	netnstest.Route(t, pod1, p("0.0.0.0/0"), a("10.1.0.1"))
	netnstest.Route(t, pod2, p("0.0.0.0/0"), a("10.2.0.1"))
	netnstest.Route(t, node1, p("10.2.0.0/24"), a("192.168.77.2"))
	netnstest.Route(t, node2, p("10.1.0.0/24"), a("192.168.77.1"))

	ctx := t.Context()

	// The app in pod 2: echo on 10.2.0.2:8080, a plain (unmarked) socket.
	serveEchoIn(t, ctx, pod2.Path, "10.2.0.2:8080", "")

	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", meshYAML("10.1.0.2", "web-1", "10.2.0.2", 8080))
	cp := controltest.Start(t, dir)

	na := joinNode(t, cp, "node-a", 15008, nil, nil)
	nb := joinNode(t, cp, "node-b", 15008, nil, nil)
	na.run(t, ctx)
	nb.run(t, ctx)
	<-na.proxy.Ready()
	<-nb.proxy.Ready()
	eventually(t, "both nodes to know their workloads", func() bool {
		return na.proxy.Config().WorkloadByKey("node-a", "shop/client-1") != nil &&
			nb.proxy.Config().WorkloadByKey("node-b", "shop/web-1") != nil &&
			na.proxy.Config().Service(netip.MustParseAddrPort("10.96.0.10:80")) != nil
	})
	if err := na.proxy.Enroll(ctx, "shop/client-1", pod1.Path); err != nil {
		t.Fatal(err)
	}
	if err := nb.proxy.Enroll(ctx, "shop/web-1", pod2.Path); err != nil {
		t.Fatal(err)
	}

	app := netns.Dialer{NetNS: pod1.Path, Unmarked: true, Timeout: 5 * time.Second}
	for _, target := range []string{"10.96.0.10:80", "10.2.0.2:8080"} {
		c, err := app.DialContext(ctx, "tcp", target)
		if err != nil {
			t.Fatalf("app dial %s: %v", target, err)
		}
		got := get(t, c, bufio.NewReader(c))
		c.Close()
		host, _, _ := net.SplitHostPort(got.RemoteAddr)
		if host != "10.1.0.2" || got.Path != "/hello" {
			t.Errorf("via %s the echo saw %q from %s; want /hello from pod 1's 10.1.0.2", target, got.Path, got.RemoteAddr)
		}
	}

	td := nb.sess.Bundle.TrustDomain()
	clientID := spiffeid.RequireFromPath(td, "/ns/shop/sa/client")
	eventually(t, "node-b's access log of the tunnelled connections", func() bool {
		n := 0
		for _, l := range nb.access.Records(t) {
			src, _ := l["src"].(map[string]any)
			if l["direction"] == "inbound" && src["identity"] == clientID.String() && l["response_flags"] == "-" {
				n++
			}
		}
		return n == 2
	})

	// Unenrolling removes the rules: the app's connection to the VIP no
	// longer reaches anything (nothing routes the VIP).
	if err := na.proxy.Unenroll(ctx, "shop/client-1"); err != nil {
		t.Fatal(err)
	}
	short := netns.Dialer{NetNS: pod1.Path, Unmarked: true, Timeout: 300 * time.Millisecond}
	if c, err := short.DialContext(ctx, "tcp", "10.96.0.10:80"); err == nil {
		c.Close()
		t.Error("after unenroll the VIP is still captured")
	}
	// Pod 1's direct traffic now leaves as plain TCP; pod 2's capture sends
	// it to the plaintext inbound port, and on to the app from pod 1's IP.
	c, err := app.DialContext(ctx, "tcp", "10.2.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	got := get(t, c, bufio.NewReader(c))
	c.Close()
	if host, _, _ := net.SplitHostPort(got.RemoteAddr); host != "10.1.0.2" {
		t.Errorf("plaintext inbound: echo saw %s, want 10.1.0.2", got.RemoteAddr)
	}
	eventually(t, "node-b's access log of the plaintext connection", func() bool {
		for _, l := range nb.access.Records(t) {
			src, _ := l["src"].(map[string]any)
			dst, _ := l["dst"].(map[string]any)
			_, hasID := src["identity"]
			if l["direction"] == "inbound" && !hasID && dst["hbone_addr"] == nil &&
				fmt.Sprint(src["addr"]) != "" && dst["addr"] == "10.2.0.2:8080" && l["response_flags"] == "-" {
				return true
			}
		}
		return false
	})
}

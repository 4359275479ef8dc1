package proxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
	"github.com/ambitmesh/ambit/internal/node/proxy"
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

// TestConcurrentEnrolment: an in-pod and a host enrolment of the same
// workload racing each other; exactly one wins, the other is refused as
// already enrolled, and the rules in force are the winner's only.
func TestConcurrentEnrolment(t *testing.T) {
	netnstest.RequireRoot(t)
	host, pod := netnstest.NewNS(t, "host"), netnstest.NewNS(t, "pod")
	ctx := t.Context()
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", meshYAML("10.1.0.2", "web-1", "10.2.0.2", 8080))
	cp := controltest.Start(t, dir)
	nb := joinNode(t, cp, "node-b", 15008, nil, nil, func(o *proxy.Options) { o.HostNetNS = host.Path })
	nb.run(t, ctx)
	<-nb.proxy.Ready()
	// Known, so host mode installs rules for it.
	eventually(t, "node-b to know web-1", func() bool { return nb.proxy.Config().WorkloadByKey("node-b", "shop/web-1") != nil })

	const key = "shop/web-1"
	for round := range 3 {
		var inPod, inHost error
		var wg sync.WaitGroup
		wg.Go(func() { inPod = nb.proxy.Enroll(ctx, key, pod.Path) })
		wg.Go(func() { inHost = nb.proxy.EnrollHost(ctx, key) })
		wg.Wait()
		if (inPod == nil) == (inHost == nil) {
			t.Fatalf("round %d: in-pod enrol = %v, host enrol = %v; want exactly one to succeed", round, inPod, inHost)
		}
		want, lost := pod.Path, inHost
		if inHost == nil {
			want, lost = "host", inPod
		}
		if !errors.Is(lost, proxy.ErrEnrolled) {
			t.Errorf("round %d: the losing enrolment failed with %v; want ErrEnrolled", round, lost)
		}
		if got := nb.proxy.Enrolled()[key]; got != want {
			t.Errorf("round %d: Enrolled()[%s] = %q; want %q", round, key, got, want)
		}
		if netnstest.HasCaptureTable(t, pod) != (inPod == nil) || netnstest.HasCaptureTable(t, host) != (inHost == nil) {
			t.Errorf("round %d: capture tables: pod %v, host %v; want only the winner's (%s)", round,
				netnstest.HasCaptureTable(t, pod), netnstest.HasCaptureTable(t, host), want)
		}
		if err := nb.proxy.Unenroll(ctx, key); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if netnstest.HasCaptureTable(t, pod) || netnstest.HasCaptureTable(t, host) {
			t.Fatalf("round %d: capture rules left after Unenroll", round)
		}
	}
}

// TestFailedReEnrolmentForgetsThePod: a re-enrolment that cannot open its
// listeners has already stopped the previous one; the workload is then no
// longer listed as enrolled (nor dialled into), and can be enrolled again.
func TestFailedReEnrolmentForgetsThePod(t *testing.T) {
	netnstest.RequireRoot(t)
	pod, busy := netnstest.NewNS(t, "pod"), netnstest.NewNS(t, "busy")
	ctx := t.Context()
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", meshYAML("10.1.0.2", "web-1", "10.2.0.2", 8080))
	cp := controltest.Start(t, dir)
	nb := joinNode(t, cp, "node-b", 15008, nil, nil)
	nb.run(t, ctx)
	<-nb.proxy.Ready()

	// The outbound port is taken in busy: enrolling there fails.
	lis, err := netns.Listen(ctx, busy.Path, "tcp", "[::]:15001", netns.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()

	const key = "shop/web-1"
	if err := nb.proxy.Enroll(ctx, key, pod.Path); err != nil {
		t.Fatal(err)
	}
	err = nb.proxy.Enroll(ctx, key, busy.Path)
	if err == nil || !strings.Contains(err.Error(), "previous enrolment in "+pod.Path+" is stopped") {
		t.Fatalf("re-enrol into a netns whose port 15001 is taken = %v; want an error saying the previous enrolment stopped", err)
	}
	if ns, ok := nb.proxy.Enrolled()[key]; ok {
		t.Errorf("after the failed re-enrolment Enrolled()[%s] = %q; want it gone", key, ns)
	}
	if err := nb.proxy.Unenroll(ctx, key); !errors.Is(err, proxy.ErrNotEnrolled) {
		t.Errorf("Unenroll after the failed re-enrolment = %v; want ErrNotEnrolled", err)
	}
	if err := nb.proxy.Enroll(ctx, key, pod.Path); err != nil {
		t.Fatalf("enrol again after the failure: %v", err)
	}
	if err := nb.proxy.Unenroll(ctx, key); err != nil {
		t.Fatal(err)
	}
}

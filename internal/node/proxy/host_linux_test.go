package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
	"github.com/ambitmesh/ambit/internal/node/proxy"
)

// TestHostModeCapture: node-b's proxy serves web-vm, a process of its host
// (a namespace playing that host, 10.2.0.2), in host mode. A pod of node-a
// reaches it over HBONE by the service VIP; plaintext to its service port is
// captured; its own outbound connections are tunnelled with its identity;
// the host's other ports are left alone; unenrolling and stopping the proxy
// remove every rule.
func TestHostModeCapture(t *testing.T) {
	netnstest.RequireRoot(t)
	router, pod1, hostB := netnstest.NewNS(t, "router"), netnstest.NewNS(t, "pod1"), netnstest.NewNS(t, "hostb")
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	netnstest.Veth(t, router, "veth-pod1", p("10.1.0.1/24"), pod1, "eth0", p("10.1.0.2/24"))
	netnstest.Veth(t, router, "veth-hostb", p("10.2.0.1/24"), hostB, "eth0", p("10.2.0.2/24"))
	netnstest.Forwarding(t, router)
	netnstest.Route(t, pod1, p("0.0.0.0/0"), a("10.1.0.1"))
	netnstest.Route(t, hostB, p("0.0.0.0/0"), a("10.2.0.1"))

	ctx := t.Context()
	serveEchoIn(t, ctx, hostB.Path, "0.0.0.0:8080", "web-vm")   // the host workload
	serveEchoIn(t, ctx, hostB.Path, "0.0.0.0:2222", "host-ssh") // the host's own service
	serveEchoIn(t, ctx, pod1.Path, "10.1.0.2:9090", "client-1") // something for web-vm to call

	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", meshYAML("10.1.0.2", "web-vm", "10.2.0.2", 8080))
	cp := controltest.Start(t, dir)
	na := joinNode(t, cp, "node-a", 15008, nil, nil)
	nb := joinNode(t, cp, "node-b", 15008, nil, nil, func(o *proxy.Options) { o.HostNetNS = hostB.Path })
	nbCtx, nbStop := context.WithCancel(ctx)
	na.run(t, ctx)
	nbWait := nb.run(t, nbCtx)
	<-na.proxy.Ready()
	<-nb.proxy.Ready()
	eventually(t, "both nodes to know the workloads", func() bool {
		return na.proxy.Config().Service(netip.MustParseAddrPort("10.96.0.10:80")) != nil &&
			nb.proxy.Config().WorkloadByKey("node-b", "shop/web-vm") != nil
	})
	if err := na.proxy.Enroll(ctx, "shop/client-1", pod1.Path); err != nil {
		t.Fatal(err)
	}
	if err := nb.proxy.EnrollHost(ctx, "shop/client-1"); err == nil {
		t.Error("EnrollHost accepted a workload of another node")
	}
	if err := nb.proxy.EnrollHost(ctx, "shop/web-vm"); err != nil {
		t.Fatal(err)
	}
	if !netnstest.HasCaptureTable(t, hostB) {
		t.Fatal("no table inet ambit in the host after EnrollHost")
	}

	call := func(ns, target string) (echo.Response, error) {
		d := netns.Dialer{NetNS: ns, Unmarked: true, Timeout: 3 * time.Second}
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return echo.Response{}, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return get(t, c, bufio.NewReader(c)), nil
	}
	inbound := func(n *node, srcID string, dst string) int {
		count := 0
		for _, l := range n.access.Records(t) {
			src, _ := l["src"].(map[string]any)
			d, _ := l["dst"].(map[string]any)
			id, _ := src["identity"].(string)
			hb, _ := d["hbone_addr"].(string)
			addr, _ := d["addr"].(string)
			if l["direction"] == "inbound" && id == srcID && (hb == dst || addr == dst) && l["response_flags"] == "-" {
				count++
			}
		}
		return count
	}
	const clientID, webID = "spiffe://cluster.local/ns/shop/sa/client", "spiffe://cluster.local/ns/shop/sa/web"

	t.Run("pod to host workload over HBONE", func(t *testing.T) {
		r, err := call(pod1.Path, "10.96.0.10:80")
		if err != nil {
			t.Fatal(err)
		}
		if r.Pod != "web-vm" || hostOf(r.RemoteAddr) != "10.1.0.2" {
			t.Errorf("the VIP reached %q, which saw %s; want web-vm seeing client-1's 10.1.0.2", r.Pod, r.RemoteAddr)
		}
		eventually(t, "node-b's inbound access log line with client-1's identity", func() bool { return inbound(nb, clientID, "10.2.0.2:8080") == 1 })
	})
	t.Run("plaintext to the workload port is captured", func(t *testing.T) {
		r, err := call(router.Path, "10.2.0.2:8080")
		if err != nil {
			t.Fatal(err)
		}
		if hostOf(r.RemoteAddr) != "10.2.0.1" {
			t.Errorf("echo saw %s; want the router's 10.2.0.1 (client IP preserved)", r.RemoteAddr)
		}
		eventually(t, "node-b's plaintext access log line", func() bool { return inbound(nb, "", "10.2.0.2:8080") == 1 })
	})
	t.Run("host workload outbound carries its identity", func(t *testing.T) {
		r, err := call(hostB.Path, "10.1.0.2:9090")
		if err != nil {
			t.Fatal(err)
		}
		if hostOf(r.RemoteAddr) != "10.2.0.2" {
			t.Errorf("client-1's echo saw %s; want web-vm's 10.2.0.2", r.RemoteAddr)
		}
		eventually(t, "node-a's inbound access log line with web-vm's identity", func() bool { return inbound(na, webID, "10.1.0.2:9090") == 1 })
	})
	t.Run("the host's other ports are left alone", func(t *testing.T) {
		before := len(nb.access.Records(t))
		r, err := call(router.Path, "10.2.0.2:2222")
		if err != nil || r.Pod != "host-ssh" {
			t.Fatalf("host port 2222: %+v, %v; want the host's own service", r, err)
		}
		if after := len(nb.access.Records(t)); after != before {
			t.Errorf("node-b logged %d connections for the host's own port; want none", after-before)
		}
	})

	if err := nb.proxy.Unenroll(ctx, "shop/web-vm"); err != nil {
		t.Fatal(err)
	}
	if netnstest.HasCaptureTable(t, hostB) {
		t.Error("table inet ambit still in the host after Unenroll")
	}
	before := inbound(nb, "", "10.2.0.2:8080")
	if r, err := call(router.Path, "10.2.0.2:8080"); err != nil || r.Pod != "web-vm" {
		t.Fatalf("after unenroll: %+v, %v; want web-vm directly", r, err)
	}
	if inbound(nb, "", "10.2.0.2:8080") != before {
		t.Error("after unenroll a plaintext connection still went through the proxy")
	}

	// Stopping the proxy removes the rules of a host enrolment.
	if err := nb.proxy.EnrollHost(ctx, "shop/web-vm"); err != nil {
		t.Fatal(err)
	}
	if !netnstest.HasCaptureTable(t, hostB) {
		t.Fatal("no table inet ambit after enrolling again")
	}
	nbStop()
	nbWait()
	if netnstest.HasCaptureTable(t, hostB) {
		t.Error("table inet ambit still in the host after the proxy stopped")
	}
}

// serveEchoIn serves the echo named pod on addr in the network namespace
// ns, from a plain (unmarked) socket, until the test ends.
func serveEchoIn(t *testing.T, ctx context.Context, ns, addr, pod string) {
	t.Helper()
	ln, err := netns.Listen(ctx, ns, "tcp", addr, netns.ListenOptions{Unmarked: true})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: echo.New(echo.Options{Logger: discard, Context: echo.Context{Pod: pod}}).Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { _ = hs.Serve(ln); close(done) }()
	t.Cleanup(func() { hs.Close(); <-done })
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprint(addr)
	}
	return h
}

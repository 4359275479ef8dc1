//go:build linux

package capture_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/ambitmesh/ambit/internal/node/capture"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Topology of every test (fresh namespaces per test):
//
//	[out] veth-pod 10.77.1.1/24 ====== eth0 10.77.1.2/24 [pod]   default routes via out
//	               fd77:1::1/64               fd77:1::2/64
//	      lo 10.77.2.1/32, fd77:2::1/128 ("a remote service": real servers on :80 and :53)
//
// In pod: the app on [::]:80 (unmarked), the fake node proxy on [::]:15001/15006/15008 (dual-stack,
// opened with netns.Listen, marked, 15006/15008 transparent).
var (
	outIP     = netip.MustParseAddr("10.77.1.1")
	podIP     = netip.MustParseAddr("10.77.1.2")
	remoteIP  = netip.MustParseAddr("10.77.2.1")
	outIP6    = netip.MustParseAddr("fd77:1::1")
	podIP6    = netip.MustParseAddr("fd77:1::2")
	remoteIP6 = netip.MustParseAddr("fd77:2::1")
)

// seen is what a server answers: who accepted, and the connection as that server saw it.
type seen struct {
	Who      string
	Local    string // ip:port the server's socket has
	RemoteIP string // the client IP the server sees
	Orig     string `json:",omitempty"` // SO_ORIGINAL_DST (outbound proxy)
	Upstream *seen  `json:",omitempty"` // what the app saw when the inbound proxy connected to it
}

type lab struct {
	t        *testing.T
	out, pod netnstest.NS
	wg       sync.WaitGroup
}

func newLab(t *testing.T) *lab {
	netnstest.RequireRoot(t)
	l := &lab{t: t, out: netnstest.NewNS(t, "out"), pod: netnstest.NewNS(t, "pod")}
	netnstest.Veth(t, l.out, "veth-pod", netip.PrefixFrom(outIP, 24), l.pod, "eth0", netip.PrefixFrom(podIP, 24))
	netnstest.Route(t, l.pod, netip.MustParsePrefix("0.0.0.0/0"), outIP)
	netnstest.Addr(t, l.out, "lo", netip.PrefixFrom(remoteIP, 32))
	netnstest.Addr(t, l.out, "veth-pod", netip.PrefixFrom(outIP6, 64))
	netnstest.Addr(t, l.pod, "eth0", netip.PrefixFrom(podIP6, 64))
	netnstest.Route(t, l.pod, netip.MustParsePrefix("::/0"), outIP6)
	netnstest.Addr(t, l.out, "lo", netip.PrefixFrom(remoteIP6, 128))
	t.Cleanup(l.wg.Wait) // registered first, so it runs after every listener is closed
	return l
}

// serve accepts on ln until the test ends; handle writes the answer.
func (l *lab) serve(ln net.Listener, handle func(c net.Conn) seen) {
	l.t.Cleanup(func() { ln.Close() })
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				json.NewEncoder(c).Encode(handle(c))
			}()
		}
	}()
}

func (l *lab) listen(nsPath, addr string, opts netns.ListenOptions) net.Listener {
	l.t.Helper()
	ln, err := netns.Listen(context.Background(), nsPath, "tcp", addr, opts)
	if err != nil {
		l.t.Fatal(err)
	}
	return ln
}

func plain(who string) func(net.Conn) seen {
	return func(c net.Conn) seen {
		return seen{Who: who, Local: c.LocalAddr().String(), RemoteIP: remoteIPOf(c)}
	}
}

func remoteIPOf(c net.Conn) string {
	return c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
}

// startServers runs the real remote servers, the app and the fake node proxy.
func (l *lab) startServers(withProxy bool) {
	l.serve(l.listen(l.out.Path, remoteIP.String()+":80", netns.ListenOptions{Unmarked: true}), plain("remote"))
	l.serve(l.listen(l.out.Path, remoteIP.String()+":53", netns.ListenOptions{Unmarked: true}), plain("remote"))
	l.serve(l.listen(l.out.Path, ap(remoteIP6, 80), netns.ListenOptions{Unmarked: true}), plain("remote"))
	l.serve(l.listen(l.pod.Path, "[::]:80", netns.ListenOptions{Unmarked: true}), plain("app"))
	if !withProxy {
		return
	}
	l.serve(l.listen(l.pod.Path, "[::]:15001", netns.ListenOptions{}), func(c net.Conn) seen {
		s := plain("outbound")(c)
		orig, err := netns.OriginalDst(c)
		if err != nil {
			s.Orig = "error: " + err.Error()
		} else {
			s.Orig = orig.String()
		}
		return s
	})
	// The inbound proxy connects to the app as the original client (transparent source), as the node
	// proxy does, and reports what the app saw.
	l.serve(l.listen(l.pod.Path, "[::]:15006", netns.ListenOptions{Transparent: true}), func(c net.Conn) seen {
		s := plain("inbound")(c)
		client := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		d := netns.Dialer{NetNS: l.pod.Path, Transparent: true, LocalAddr: netip.AddrPortFrom(client, 0), Timeout: 3 * time.Second}
		up, err := d.DialContext(context.Background(), "tcp", c.LocalAddr().String())
		if err != nil {
			s.Upstream = &seen{Who: "error: " + err.Error()}
			return s
		}
		defer up.Close()
		s.Upstream = read(up)
		return s
	})
	l.serve(l.listen(l.pod.Path, "[::]:15008", netns.ListenOptions{Transparent: true}), plain("hbone"))
}

func read(c net.Conn) *seen {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var s seen
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return &seen{Who: "read error: " + err.Error()}
	}
	if err := json.Unmarshal(line, &s); err != nil {
		return &seen{Who: "bad answer: " + string(line)}
	}
	return &s
}

// dial connects from nsPath with d's options and returns the answer.
func dial(t *testing.T, d netns.Dialer, addr string) (*seen, error) {
	t.Helper()
	if d.Timeout == 0 {
		d.Timeout = 3 * time.Second
	}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return read(c), nil
}

func install(t *testing.T, nsPath string, cfg capture.Config) {
	t.Helper()
	if err := capture.Install(context.Background(), nsPath, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := capture.Remove(context.Background(), nsPath, cfg); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

func ap(ip netip.Addr, port uint16) string { return netip.AddrPortFrom(ip, port).String() }

func TestOutboundAndInboundCapture(t *testing.T) {
	l := newLab(t)
	cfg := capture.DefaultConfig()
	cfg.IPv6 = true
	install(t, l.pod.Path, cfg)
	l.startServers(true)

	app := netns.Dialer{NetNS: l.pod.Path, Unmarked: true}
	proxy := netns.Dialer{NetNS: l.pod.Path} // marked 0x539
	outside := netns.Dialer{NetNS: l.out.Path, Unmarked: true}
	tests := []struct {
		name string
		d    netns.Dialer
		addr string
		want seen
	}{
		{"app to a remote service is redirected to 15001 with its original destination", app, ap(remoteIP, 80),
			// REDIRECT in the output hook rewrites the destination to 127.0.0.1.
			seen{Who: "outbound", Local: "127.0.0.1:15001", RemoteIP: podIP.String(), Orig: ap(remoteIP, 80)}},
		{"app to DNS port 53 is not redirected", app, ap(remoteIP, 53),
			seen{Who: "remote", Local: ap(remoteIP, 53), RemoteIP: podIP.String()}},
		{"proxy's own dial (mark 0x539) reaches the real destination", proxy, ap(remoteIP, 80),
			seen{Who: "remote", Local: ap(remoteIP, 80), RemoteIP: podIP.String()}},
		{"app to loopback is not redirected", app, "127.0.0.1:80",
			seen{Who: "app", Local: "127.0.0.1:80", RemoteIP: "127.0.0.1"}},
		{"app to its own pod IP is not redirected", app, ap(podIP, 80),
			seen{Who: "app", Local: ap(podIP, 80), RemoteIP: podIP.String()}},
		{"outside to pod:80 lands on 15006 by TPROXY; the app sees the client IP", outside, ap(podIP, 80),
			seen{Who: "inbound", Local: ap(podIP, 80), RemoteIP: outIP.String(),
				Upstream: &seen{Who: "app", Local: ap(podIP, 80), RemoteIP: outIP.String()}}},
		{"outside to pod:15008 lands on the HBONE listener", outside, ap(podIP, 15008),
			seen{Who: "hbone", Local: ap(podIP, 15008), RemoteIP: outIP.String()}},
		{"IPv6: app to a remote service is redirected with its original destination", app, ap(remoteIP6, 80),
			seen{Who: "outbound", Local: "[::1]:15001", RemoteIP: podIP6.String(), Orig: ap(remoteIP6, 80)}},
		{"IPv6: proxy's own dial reaches the real destination", proxy, ap(remoteIP6, 80),
			seen{Who: "remote", Local: ap(remoteIP6, 80), RemoteIP: podIP6.String()}},
		{"IPv6: outside to pod:80 lands on 15006; the app sees the client IP", outside, ap(podIP6, 80),
			seen{Who: "inbound", Local: ap(podIP6, 80), RemoteIP: outIP6.String(),
				Upstream: &seen{Who: "app", Local: ap(podIP6, 80), RemoteIP: outIP6.String()}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dial(t, tc.d, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&tc.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInboundFailsClosedWithoutProxy(t *testing.T) {
	l := newLab(t)
	install(t, l.pod.Path, capture.DefaultConfig())
	l.startServers(false) // the app listens on :80, no proxy listens

	got, err := dial(t, netns.Dialer{NetNS: l.out.Path, Unmarked: true, Timeout: 300 * time.Millisecond}, ap(podIP, 80))
	if err == nil {
		t.Fatalf("connection reached %+v; want it dropped while no proxy listens on 15006", got)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("dial error = %v; want a timeout (SYN dropped)", err)
	}
}

// state is what the rules leave in a namespace: the ambit table's chains and rule counts, and the
// policy routing of table 100.
type state struct {
	Tables []string
	Rules  map[string]int // chain -> rules in table inet ambit
	IPRule []string
	Routes []string
}

func readState(t *testing.T, ns netnstest.NS, cfg capture.Config) state {
	t.Helper()
	fd, err := os.Open(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	var s state
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		s.Tables = append(s.Tables, tb.Name)
		if tb.Name != capture.TableName {
			continue
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		s.Rules = map[string]int{}
		for _, ch := range chains {
			if ch.Table.Name != capture.TableName {
				continue
			}
			rules, err := c.GetRules(tb, ch)
			if err != nil {
				t.Fatal(err)
			}
			s.Rules[ch.Name] = len(rules)
		}
	}
	h := netnstest.Handle(t, ns)
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Table == cfg.RouteTable || r.Mark == cfg.TProxyMark {
			s.IPRule = append(s.IPRule, r.String())
		}
	}
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: cfg.RouteTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		s.Routes = append(s.Routes, r.String())
	}
	return s
}

// foreign adds a table and an ip rule that are not ambit's; Remove must leave them alone.
func foreign(t *testing.T, ns netnstest.NS) {
	t.Helper()
	fd, err := os.Open(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	c.AddTable(&nftables.Table{Name: "keep", Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	r := netlink.NewRule()
	r.Family, r.Mark, r.Table, r.Priority = unix.AF_INET, 0x42, 200, 1000
	if err := netnstest.Handle(t, ns).RuleAdd(r); err != nil {
		t.Fatal(err)
	}
}

func TestInstallIdempotentAndRemoveLeavesNothing(t *testing.T) {
	l := newLab(t)
	cfg := capture.DefaultConfig()
	foreign(t, l.pod)
	before := readState(t, l.pod, cfg)
	if diff := cmp.Diff(state{Tables: []string{"keep"}}, before); diff != "" {
		t.Fatalf("state before install (-want +got):\n%s", diff)
	}

	if err := capture.Install(context.Background(), l.pod.Path, cfg); err != nil {
		t.Fatal(err)
	}
	once := readState(t, l.pod, cfg)
	if len(once.IPRule) != 1 || len(once.Routes) != 1 || once.Rules["prerouting"] == 0 || once.Rules["output"] != 1 || once.Rules["output-nat"] == 0 {
		t.Fatalf("after one Install: %+v; want 1 ip rule, 1 route and the three chains with rules", once)
	}
	if err := capture.Install(context.Background(), l.pod.Path, cfg); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(once, readState(t, l.pod, cfg)); diff != "" {
		t.Errorf("second Install changed the state (-once +twice):\n%s", diff)
	}

	// `nft list ruleset` is the operator's view: check it names the redirect and both TPROXY targets.
	out, err := exec.Command("ip", "netns", "exec", l.pod.Name, "nft", "list", "table", "inet", capture.TableName).CombinedOutput()
	if err != nil {
		t.Logf("nft list (informational, nft CLI unavailable?): %v: %s", err, out)
	} else {
		for _, want := range []string{"redirect to :15001", "tproxy to :15006", "tproxy to :15008", "0x00000539"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("nft list table inet ambit lacks %q:\n%s", want, out)
			}
		}
		t.Logf("rule set:\n%s", out)
	}

	for i := 0; i < 2; i++ { // Remove is idempotent too
		if err := capture.Remove(context.Background(), l.pod.Path, cfg); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
		if diff := cmp.Diff(before, readState(t, l.pod, cfg)); diff != "" {
			t.Errorf("after Remove #%d (-before install +now):\n%s", i+1, diff)
		}
	}
}

func TestReinstallAppliesNewConfigAndRemoveStopsCapture(t *testing.T) {
	l := newLab(t)
	l.startServers(true)
	app := netns.Dialer{NetNS: l.pod.Path, Unmarked: true}
	who := func() string {
		t.Helper()
		got, err := dial(t, app, ap(remoteIP, 80))
		if err != nil {
			t.Fatal(err)
		}
		return got.Who
	}
	cfg := capture.DefaultConfig()
	install(t, l.pod.Path, cfg)
	if got := who(); got != "outbound" {
		t.Fatalf("with default rules, app -> remote:80 reached %q; want outbound", got)
	}
	cfg.ExcludeOutboundPorts = []uint16{80}
	install(t, l.pod.Path, cfg)
	if got := who(); got != "remote" {
		t.Errorf("with port 80 excluded, app -> remote:80 reached %q; want remote", got)
	}
	if err := capture.Remove(context.Background(), l.pod.Path, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.ExcludeOutboundPorts = nil
	if got := who(); got != "remote" {
		t.Errorf("after Remove, app -> remote:80 reached %q; want remote", got)
	}
}

// Host mode: the "pod" namespace plays a host whose process Workload has the IPv4 address and listens
// on :80. Only that address's outbound connections (to the included destinations) and inbound
// connections to it on :80 and the HBONE port are captured; everything else of the host is left alone.
func TestHostMode(t *testing.T) {
	l := newLab(t)
	cfg := capture.DefaultConfig()
	cfg.Mode = capture.ModeHost
	cfg.OutboundSources = []netip.Prefix{netip.PrefixFrom(podIP, 32)}
	cfg.InboundDestinations = []netip.Prefix{netip.PrefixFrom(podIP, 32)}
	cfg.OutboundInclude = []netip.Prefix{netip.PrefixFrom(remoteIP, 32), netip.PrefixFrom(remoteIP6, 128)}
	cfg.InboundPorts = []uint16{80}
	install(t, l.pod.Path, cfg)
	l.startServers(true)
	l.serve(l.listen(l.pod.Path, "0.0.0.0:2222", netns.ListenOptions{Unmarked: true}), plain("host-sshd"))
	l.serve(l.listen(l.out.Path, ap(outIP, 80), netns.ListenOptions{Unmarked: true}), plain("out"))

	host := netns.Dialer{NetNS: l.pod.Path, Unmarked: true}
	outside := netns.Dialer{NetNS: l.out.Path, Unmarked: true}
	tests := []struct {
		name string
		d    netns.Dialer
		addr string
		want string
	}{
		{"workload address to an included destination is redirected", host, ap(remoteIP, 80), "outbound"},
		{"workload address to another destination is not", host, ap(outIP, 80), "out"},
		{"another host address to an included destination is not", host, ap(remoteIP6, 80), "remote"},
		{"inbound to the workload port is captured", outside, ap(podIP, 80), "inbound"},
		{"inbound to the workload port on another host address is not", outside, ap(podIP6, 80), "app"},
		{"inbound to another host port is not", outside, ap(podIP, 2222), "host-sshd"},
		{"inbound HBONE is captured", outside, ap(podIP, 15008), "hbone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dial(t, tc.d, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got.Who != tc.want {
				t.Errorf("reached %+v; want %s", got, tc.want)
			}
		})
	}
}

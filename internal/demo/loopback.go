package demo

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Loopback addresses: 127.42.<node>.1 for a host's endpoints, 127.42.<node>.<10+i> for its pods.
// Linux routes all of 127/8 to lo; other systems need aliases (docs/quickstart.md).
var (
	loControl  = netip.MustParseAddr("127.42.0.1")
	loWaypoint = netip.MustParseAddr("127.42.3.10")
)

func loHost(node int) netip.Addr { return netip.AddrFrom4([4]byte{127, 42, byte(node), 1}) }

// explicitPort is where an app of the loopback layout dials service: its own address, port
// 9080 + the service's index (productpage 9080, reviews 9081, ... ratings 9084).
func explicitPort(service string) uint16 {
	return uint16(vip(service).Addr().As4()[3]-10) + servicePort
}

// appCalls are the calls the scenarios make: caller -> services.
var appCalls = map[string][]string{
	"productpage-1": {"reviews", "ratings"},
	"reviews-v1-1":  {"ratings"},
}

// loopbackLayout runs every process on this host in explicit mode.
func loopbackLayout() *layout {
	l := &layout{
		mode: ModeLoopback, waypointIP: loWaypoint, appNote: "its node proxy's explicit listener for it",
		control: place{name: "control"}, xds: net.JoinHostPort(loControl.String(), "15010"),
		controlAdmin: net.JoinHostPort(loControl.String(), "15014"),
		nodes:        map[string]place{}, nodeEP: map[string]endpoints{}, explicit: map[string][]string{},
		waypoint: place{name: waypoint}, waypointHBONE: loWaypoint.String(),
		podPlace: map[string]place{}, echoListen: map[string]string{},
	}
	l.waypointEP = hostEndpoints(3)
	l.ports = append(l.ports, binding{l.xds, "control plane xDS"}, binding{l.controlAdmin, "control plane admin"},
		binding{net.JoinHostPort(loWaypoint.String(), "15008"), "waypoint HBONE"})
	l.ports = append(l.ports, endpointPorts(waypoint, l.waypointEP)...)
	next := map[string]byte{}
	for _, w := range workloads() {
		n := map[string]int{"node-1": 1, "node-2": 2}[w.node]
		w.ip = netip.AddrFrom4([4]byte{127, 42, byte(n), 10 + next[w.node]})
		next[w.node]++
		l.pods = append(l.pods, w)
		l.podPlace[w.name] = place{name: w.name}
		l.echoListen[w.name] = w.ip.String()
		l.ports = append(l.ports, binding{net.JoinHostPort(w.ip.String(), fmt.Sprint(appPort)), w.name + " echo"},
			binding{net.JoinHostPort(w.ip.String(), "15008"), w.node + " HBONE for " + w.name})
		for _, svc := range appCalls[w.name] {
			listen := netip.AddrPortFrom(w.ip, explicitPort(svc))
			l.explicit[w.node] = append(l.explicit[w.node], fmt.Sprintf("%s=%s@%s/%s", listen, vip(svc), namespace, w.name))
			l.ports = append(l.ports, binding{listen.String(), w.node + " explicit listener " + w.name + " -> " + svc})
		}
	}
	for i, n := range []string{"node-1", "node-2"} {
		l.nodes[n] = place{name: n}
		l.nodeEP[n] = hostEndpoints(i + 1)
		l.ports = append(l.ports, endpointPorts(n, l.nodeEP[n])...)
	}
	l.app = func(from, service string) (dialFunc, string) {
		ip := l.pod(from).ip
		addr := netip.AddrPortFrom(ip, explicitPort(service)).String()
		// From the pod's own address, as an app on that "host" would.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip.AsSlice()}}
		return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, addr
	}
	l.tool = func(_ place, addr string) dialFunc {
		return func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	l.curl = func(_ place, args string) string { return "curl -s " + args }
	l.close = func() error { return nil }
	return l
}

func hostEndpoints(n int) endpoints {
	h := loHost(n).String()
	return endpoints{admin: net.JoinHostPort(h, "15000"), metrics: net.JoinHostPort(h, "15020"), ready: net.JoinHostPort(h, "15021")}
}

func endpointPorts(who string, e endpoints) []binding {
	return []binding{{e.admin, who + " admin"}, {e.metrics, who + " metrics"}, {e.ready, who + " readiness"}}
}

// checkPorts fails on the first address something else already listens on, naming it.
func checkPorts(ports []binding) error {
	for _, p := range ports {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("demo: %s (%s) is not free: %w; stop whatever listens there (ss -ltnp 'sport = :%s') or, as root, use --mode netns",
				p.addr, p.what, err, portOf(p.addr))
		}
		ln.Close()
	}
	return nil
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

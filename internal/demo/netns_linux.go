//go:build linux

package demo

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/ambitmesh/ambit/internal/lab"
	"github.com/ambitmesh/ambit/internal/node/netns"
)

// nsPrefix starts the name of every namespace the demo makes ("ambit-demo-<pod>-<pid>-<n>"),
// which is how leftovers of a killed run are recognised.
const nsPrefix = "demo"

// Addresses of the netns layout: node-1 and node-2 joined on 192.168.42.0/24, each pod on its own
// /24 behind its node (10.<node>.<i>.2), the waypoint's pod behind node-2.
var (
	nsNodeIP   = map[string]netip.Prefix{"node-1": netip.MustParsePrefix("192.168.42.1/24"), "node-2": netip.MustParsePrefix("192.168.42.2/24")}
	nsWaypoint = netip.MustParseAddr("10.2.9.2")
)

// netnsLayout builds the namespaces: the control plane and node-1's proxy in node-1's, node-2's
// proxy in node-2's, each pod (echo app, captured) and the waypoint in their own.
func netnsLayout() (*layout, error) {
	spec := lab.Spec{Prefix: nsPrefix}
	l := &layout{
		mode: ModeNetns, waypointIP: nsWaypoint, appNote: "the service VIP, captured in the pod",
		nodes: map[string]place{}, nodeEP: map[string]endpoints{}, enroll: map[string][]string{},
		podPlace: map[string]place{}, echoListen: map[string]string{},
	}
	next := map[string]byte{}
	for _, w := range workloads() {
		n := map[string]int{"node-1": 0, "node-2": 1}[w.node]
		w.ip = netip.AddrFrom4([4]byte{10, byte(n + 1), 1 + next[w.node], 2})
		next[w.node]++
		l.pods = append(l.pods, w)
		spec.Nodes[n].Pods = append(spec.Nodes[n].Pods, lab.Pod{Name: w.name, IP: w.ip})
	}
	spec.Nodes[1].Pods = append(spec.Nodes[1].Pods, lab.Pod{Name: waypoint, IP: nsWaypoint})
	for i, n := range []string{"node-1", "node-2"} {
		spec.Nodes[i].Name, spec.Nodes[i].Link = n, nsNodeIP[n]
	}
	topo, err := lab.Build(spec)
	if err != nil {
		return nil, err
	}
	l.close = topo.Close
	node1 := topo.Nodes["node-1"]
	l.control = place{name: "control", netns: node1.Path}
	l.xds = net.JoinHostPort(nsNodeIP["node-1"].Addr().String(), "15010")
	l.controlAdmin, l.serverName = "127.0.0.1:15014", nsNodeIP["node-1"].Addr().String()
	inNS := endpoints{admin: "127.0.0.1:15000", metrics: ":15020", ready: ":15021"}
	for _, n := range []string{"node-1", "node-2"} {
		l.nodes[n] = place{name: n, netns: topo.Nodes[n].Path}
		l.nodeEP[n] = inNS
	}
	for _, w := range l.pods {
		p := topo.Pods[w.name]
		l.podPlace[w.name] = place{name: w.name, netns: p.Path}
		l.enroll[w.node] = append(l.enroll[w.node], namespace+"/"+w.name+"="+p.Path)
	}
	l.waypoint, l.waypointEP = place{name: waypoint, netns: topo.Pods[waypoint].Path}, inNS
	l.app = func(from, service string) (dialFunc, string) {
		d := &netns.Dialer{NetNS: l.podPlace[from].netns, Unmarked: true}
		addr := vip(service).String()
		return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, addr
	}
	l.tool = func(p place, addr string) dialFunc {
		d := &netns.Dialer{NetNS: p.netns}
		return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", localize(addr)) }
	}
	l.curl = func(p place, args string) string {
		return "ip netns exec " + filepath.Base(p.netns) + " curl -s " + args
	}
	return l, nil
}

// cleanLeftoverNamespaces removes the namespaces of demos that were killed (their pid is gone) and says so.
func cleanLeftoverNamespaces(dir string, say func(string, ...any)) error {
	left, err := lab.Leftovers(dir, nsPrefix, nil)
	if err != nil || len(left) == 0 {
		return err
	}
	if !isRoot() {
		say("found %d network namespaces left by a killed demo (e.g. %s); removing them needs root: sudo ip netns delete NAME", len(left), left[0].Name)
		return nil
	}
	for _, n := range left {
		if err := lab.DeleteNS(n.Name); err != nil {
			return err
		}
		say("removed network namespace %s, left by a demo that was killed (pid %d is gone)", n.Name, n.PID)
	}
	return nil
}

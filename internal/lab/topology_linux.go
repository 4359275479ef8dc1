//go:build linux

package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Spec describes two "nodes" joined by one link, each with "pods" behind it — the shape of a
// two-host mesh on one machine:
//
//	pod ──veth── node-1 ──veth(link)── node-2 ──veth── pod
//
// Each pod gets its address as a /24 whose .1 is the node's end of the pod's veth and its default
// route; each node forwards, and routes the other node's pod /24s via the other node's link address.
type Spec struct {
	// Prefix starts every namespace name: "ambit-<Prefix>-<node or pod>-<pid>-<n>".
	Prefix string
	Nodes  [2]Node
}

// Node is a namespace playing a host.
type Node struct {
	Name string
	// Link is the node's address on the link to the other node (e.g. 192.168.77.1/24); its
	// interface there is eth0.
	Link netip.Prefix
	Pods []Pod
}

// Pod is a namespace behind a node; its interface is eth0.
type Pod struct {
	Name string
	IP   netip.Addr // x.y.z.2 style: x.y.z.1 must be free for the node's end
}

// Topology is a built Spec.
type Topology struct {
	Nodes map[string]NS // by Node.Name
	Pods  map[string]NS // by Pod.Name
	made  []NS          // creation order, removed in reverse
}

// Build creates every namespace, link, address and route of spec. On error it removes what it made.
func Build(spec Spec) (_ *Topology, err error) {
	t := &Topology{Nodes: map[string]NS{}, Pods: map[string]NS{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()
	newNS := func(name string) (NS, error) {
		ns, err := NewNS(spec.Prefix + "-" + name)
		if err == nil {
			t.made = append(t.made, ns)
		}
		return ns, err
	}
	var nodes [2]NS
	for i, n := range spec.Nodes {
		if nodes[i], err = newNS(n.Name); err != nil {
			return nil, err
		}
		t.Nodes[n.Name] = nodes[i]
		if err := Forwarding(nodes[i]); err != nil {
			return nil, err
		}
	}
	if err := Veth(nodes[0], "eth0", spec.Nodes[0].Link, nodes[1], "eth0", spec.Nodes[1].Link); err != nil {
		return nil, err
	}
	veth := 0
	for i, n := range spec.Nodes {
		other := spec.Nodes[1-i]
		for _, p := range n.Pods {
			pod, err := newNS(p.Name)
			if err != nil {
				return nil, err
			}
			t.Pods[p.Name] = pod
			gw := p.IP.Prev()
			if err := Veth(nodes[i], fmt.Sprintf("veth%d", veth), netip.PrefixFrom(gw, 24), pod, "eth0", netip.PrefixFrom(p.IP, 24)); err != nil {
				return nil, err
			}
			veth++
			if err := Route(pod, netip.MustParsePrefix("0.0.0.0/0"), gw); err != nil {
				return nil, err
			}
		}
		for _, p := range other.Pods {
			if err := Route(nodes[i], netip.PrefixFrom(p.IP, 24).Masked(), other.Link.Addr()); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// Close removes every namespace of the topology (pods first), and with them their links, routes
// and nftables rules.
func (t *Topology) Close() error {
	var errs []error
	for _, ns := range slices.Backward(t.made) {
		errs = append(errs, DeleteNS(ns.Name))
	}
	t.made = nil
	return errors.Join(errs...)
}

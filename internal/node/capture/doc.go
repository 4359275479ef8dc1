// Package capture installs and removes ambit's transparent-capture rules inside a network namespace:
// Istio's "in-pod redirection", written with github.com/google/nftables and netlink (no iptables or nft
// binaries at run time).
//
// The node proxy opens its listeners inside the same namespace (package netns), every socket it makes
// carries mark 0x539, and these rules send the workload's TCP to those listeners:
//
//   - outbound: nat REDIRECT to 15001; the proxy reads the original destination with SO_ORIGINAL_DST.
//   - inbound: TPROXY to 15008 for HBONE (destination port 15008) and to 15006 for everything else;
//     the connection keeps its original destination as its local address and the client's IP as its
//     remote address.
//   - the proxy connects to the local app from the client's IP (IP_TRANSPARENT); the app's replies go
//     to a non-local address, so the connection is marked (ct mark 0x111) when the proxy opens it, the
//     mark is copied to each reply in output (a route chain, so the packet is re-routed), and policy
//     routing sends marked packets to the local stack.
//
// The policy routing, made with netlink (TPROXY'd packets need it too, for destinations that are not
// local):
//
//	ip rule add fwmark 0x111/0xfff lookup 100 pref 32764
//	ip route add local 0.0.0.0/0 dev lo table 100      (and ::/0 when Config.IPv6)
//
// Everything lives in one table, inet ambit, so Remove deletes exactly what Install made; Install
// replaces the table atomically (add+delete+add in one netlink batch), so it is idempotent and is also
// how a new Config is applied. DefaultConfig in a pod produces (nft list table inet ambit):
//
//	table inet ambit {
//		chain prerouting {
//			type filter hook prerouting priority mangle; policy accept;
//			meta mark & 0x00000fff == 0x00000539 ct mark set ct mark & 0xfffff111 | 0x00000111  # proxy -> local app: remember for replies
//			iifname "lo" accept                                              # traffic inside the namespace
//			meta l4proto tcp ct state established,related accept            # existing connections keep their socket
//			tcp dport 15008 meta mark & 0x00000fff != 0x00000539 meta mark set meta mark & 0xfffff111 | 0x00000111 tproxy to :15008 accept
//			tcp dport 15008 meta mark & 0x00000fff != 0x00000539 drop       # no proxy listening: fail closed
//			meta l4proto tcp meta mark & 0x00000fff != 0x00000539 meta mark set meta mark & 0xfffff111 | 0x00000111 tproxy to :15006 accept
//			meta l4proto tcp meta mark & 0x00000fff != 0x00000539 drop      # no proxy listening: fail closed
//		}
//		chain output {
//			type route hook output priority mangle; policy accept;
//			ct mark & 0x00000fff == 0x00000111 meta mark set meta mark & 0xfffff111 | 0x00000111  # app replies -> back to the proxy
//		}
//		chain output-nat {
//			type nat hook output priority -100; policy accept;
//			oifname "lo" accept                                  # loopback and the pod's own addresses
//			meta mark & 0x00000fff == 0x00000539 accept          # the proxy's own sockets
//			meta mark & 0x00000fff == 0x00000111 accept          # connections the proxy made to local apps
//			tcp dport 15001 accept                               # the proxy's ports
//			tcp dport 15006 accept
//			tcp dport 15008 accept
//			tcp dport 53 accept                                  # DNS, unless Config.CaptureDNS
//			meta l4proto tcp redirect to :15001
//		}
//	}
//
// (The real rules carry these explanations as nft comments.) Only bits 0xfff of the packet and
// connection marks are touched; the others belong to the CNI. Config adds excluded ports and source
// prefixes. ModeHost puts the same rules in the node's own namespace for Workloads that are processes
// on the node, scoped so the host stays reachable whatever the proxy does: outbound only from
// Config.OutboundSources (the workloads' addresses; to Config.OutboundInclude when set), inbound only
// to Config.InboundDestinations (the same addresses) on the HBONE port and on Config.InboundPorts
// (none listed: HBONE only). The host's other addresses and ports, ssh included, are left alone.
//
// TPROXY, unlike iptables' target, falls through in nftables when no socket listens; the drop after
// each tproxy rule makes inbound traffic fail closed while the proxy is down instead of reaching the
// app unchecked.
//
// On systems other than Linux, Install and Remove return ErrUnsupported: use explicit mode there.
package capture

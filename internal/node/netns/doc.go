// Package netns gives the node proxy sockets that live inside another network namespace.
//
// This is the socket half of Istio's "in-pod redirection": the capture rules (package capture) are
// installed inside each workload's network namespace, and the node proxy — which itself stays in the
// node's namespace — opens its listeners *inside* that namespace so the redirected connections reach it
// without crossing a veth. A socket belongs to the network namespace of the thread that created it, for
// its whole life; so every socket here is created on a locked OS thread that has been moved into the
// target namespace with setns(2), and the thread is moved back (and unlocked) as soon as the socket
// exists. If moving back fails, the thread is left locked and its goroutine exits, which makes the Go
// runtime terminate the thread instead of reusing it in the wrong namespace.
//
// Socket options, and why:
//
//	SO_MARK 0x539 (Mark)    on every socket the proxy creates (listeners and dials). The capture rules
//	                        skip packets with this mark, so the proxy never captures its own traffic.
//	IP_TRANSPARENT          on TPROXY listeners (15006/15008), so the kernel hands them connections
//	                        addressed to any ip:port; and on upstream sockets that bind the original
//	                        client IP (a non-local address) so the workload sees the real client.
//	IP_BIND_ADDRESS_NO_PORT on sockets bound to an address with port 0, so the port is picked at
//	                        connect time from the full 4-tuple (many upstream connections per client IP).
//
// OriginalDst reads the pre-REDIRECT destination of an outbound connection with SO_ORIGINAL_DST
// (IP6T_SO_ORIGINAL_DST for IPv6). A TPROXY connection keeps its original destination as its local
// address, so inbound code uses conn.LocalAddr() (OriginalDst also works there: conntrack's original
// tuple is the same address).
//
// Addresses given to Listen and Dialer must be literal IPs: resolving a name could run on another
// thread, outside the namespace.
//
// Everything here needs CAP_NET_ADMIN (setns, SO_MARK) and CAP_NET_RAW/NET_ADMIN (IP_TRANSPARENT) on
// Linux; on other systems every function returns ErrUnsupported.
package netns

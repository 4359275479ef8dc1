package demo

import (
	"context"
	"net"
	"net/netip"
)

// dialFunc opens a connection; which address it reaches is decided by whoever made it.
type dialFunc func(ctx context.Context) (net.Conn, error)

// place is where a process runs: the network namespace at netns, or this host's ("").
type place struct {
	name  string
	netns string
}

// endpoints are the admin, metrics and readiness addresses of a proxy, as seen from its place.
type endpoints struct{ admin, metrics, ready string }

// binding is an address a process of the mesh listens on, and what for.
type binding struct{ addr, what string }

// layout is where every piece of the mesh runs and how the demo reaches it; loopback.go and
// netns_linux.go make one.
type layout struct {
	mode       Mode
	pods       []workload // with addresses
	waypointIP netip.Addr

	control      place
	xds          string // the control plane's xDS/CA address, as nodes reach it
	controlAdmin string // its admin address, from its place (token endpoint: loopback only)
	serverName   string // extra SAN for the xDS certificate ("" = none)

	nodes    map[string]place     // node name -> where its proxy runs
	nodeEP   map[string]endpoints // node name -> its endpoints
	explicit map[string][]string  // node name -> --explicit flags (loopback mode)
	enroll   map[string][]string  // node name -> --enroll flags (netns mode)

	waypoint      place
	waypointHBONE string // --hbone-address ("" = every interface)
	waypointEP    endpoints

	podPlace   map[string]place // workload -> where its echo runs
	echoListen map[string]string

	// app dials service from workload from, as that workload's app would; addr is what it dials.
	app     func(from, service string) (dial dialFunc, addr string)
	appNote string // what an app's addr is
	// tool dials addr from inside p (admin, metrics, readiness; never captured).
	tool func(p place, addr string) dialFunc
	// curl is the command line that runs curl with args from inside p, for the user to type.
	curl func(p place, args string) string
	// ports lists the host addresses the layout will bind, for the port-in-use check (none in
	// netns mode: fresh namespaces have every port free).
	ports []binding
	close func() error
}

func (l *layout) pod(name string) workload {
	for _, w := range l.pods {
		if w.name == name {
			return w
		}
	}
	panic("demo: unknown pod " + name)
}

// localize turns ":15020" into "127.0.0.1:15020" (dialable inside the namespace).
func localize(addr string) string {
	if h, port, err := net.SplitHostPort(addr); err == nil && h == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

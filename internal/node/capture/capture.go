package capture

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ambitmesh/ambit/internal/node/netns"
)

// TableName is the nftables table (family inet) that holds every capture rule ambit makes. Remove
// deletes this table and nothing else.
const TableName = "ambit"

// Mode says whose traffic the rules capture.
type Mode int

const (
	// ModePod captures all TCP of a workload's own network namespace (Istio's in-pod redirection).
	ModePod Mode = iota
	// ModeHost puts the rules in the node's namespace for Workloads that are processes on the node.
	// The namespace is shared with everything else on the host, so host mode only captures outbound
	// traffic from Config.OutboundSources (and to Config.OutboundInclude when set) and inbound
	// traffic to Config.InboundDestinations on the HBONE port and Config.InboundPorts.
	ModeHost
)

func (m Mode) String() string {
	switch m {
	case ModePod:
		return "pod"
	case ModeHost:
		return "host"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Config describes the capture rules of one network namespace. Start from DefaultConfig.
type Config struct {
	Mode Mode

	// OutboundPort receives outbound TCP (nat REDIRECT); default 15001.
	OutboundPort uint16
	// InboundPlaintextPort receives inbound TCP (TPROXY) for every port but the HBONE port; default 15006.
	InboundPlaintextPort uint16
	// InboundHBONEPort receives inbound TCP to this same port (TPROXY); default 15008.
	InboundHBONEPort uint16

	// ProxyMark is the SO_MARK of the proxy's sockets (default netns.Mark, 0x539); packets carrying
	// it are never captured.
	ProxyMark uint32
	// TProxyMark marks TPROXY'd packets and the replies of connections the proxy made to local apps
	// from the client's IP, and routes them to the local stack (policy routing); default 0x111.
	TProxyMark uint32
	// RouteTable holds the "local 0.0.0.0/0 dev lo" route the TProxyMark rule points at; default 100.
	RouteTable int
	// RulePriority is the ip rule's priority; default 32764 (before the main table's 32766).
	RulePriority int

	// CaptureDNS redirects TCP to port 53 like other traffic; by default it is left alone so the
	// workload's resolver keeps working whatever the proxy does.
	CaptureDNS bool
	// ExcludeOutboundPorts are destination ports never redirected outbound (the proxy's own ports
	// 15001/15006/15008 always are).
	ExcludeOutboundPorts []uint16
	// ExcludeInboundPorts are destination ports never captured inbound.
	ExcludeInboundPorts []uint16
	// InboundExcludeSources are source prefixes never captured inbound (e.g. the node's health
	// probe address).
	InboundExcludeSources []netip.Prefix

	// OutboundInclude limits outbound capture to these destinations (e.g. the mesh's pod and service
	// CIDRs); empty means every destination.
	OutboundInclude []netip.Prefix
	// OutboundSources limits outbound capture to connections from these source addresses. ModeHost
	// requires it (the host workloads' addresses): the rest of the host's connections are left alone.
	OutboundSources []netip.Prefix
	// InboundDestinations limits inbound capture to these destination addresses. ModeHost requires
	// it (the host workloads' addresses): traffic to the host's other addresses is left alone.
	InboundDestinations []netip.Prefix
	// InboundPorts limits plaintext inbound capture to these destination ports (HBONE is always
	// captured). In ModePod empty means every port; in ModeHost empty means none (only HBONE), so a
	// host's own services (ssh included) are never captured unless listed.
	InboundPorts []uint16

	// IPv6 also installs the IPv6 policy routing TPROXY needs (the nftables rules always cover both
	// families). Leave it off in namespaces with IPv6 disabled.
	IPv6 bool
}

// DefaultConfig is Istio's in-pod rule set: ports 15001/15006/15008, mark 0x539, TPROXY mark 0x111,
// table 100, rule priority 32764.
func DefaultConfig() Config {
	return Config{
		Mode:                 ModePod,
		OutboundPort:         15001,
		InboundPlaintextPort: 15006,
		InboundHBONEPort:     15008,
		ProxyMark:            netns.Mark,
		TProxyMark:           0x111,
		RouteTable:           100,
		RulePriority:         32764,
	}
}

// Sentinel errors of Validate.
var (
	ErrInvalidConfig = errors.New("capture: invalid config")
	// ErrUnsupported is returned by Install and Remove outside Linux.
	ErrUnsupported = errors.New("capture: transparent capture needs Linux (nftables, TPROXY, network namespaces); use explicit mode")
)

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.Mode != ModePod && c.Mode != ModeHost {
		bad("Mode %d: want ModePod or ModeHost", int(c.Mode))
	}
	ports := map[string]uint16{"OutboundPort": c.OutboundPort, "InboundPlaintextPort": c.InboundPlaintextPort, "InboundHBONEPort": c.InboundHBONEPort}
	for _, name := range []string{"OutboundPort", "InboundPlaintextPort", "InboundHBONEPort"} {
		if ports[name] == 0 {
			bad("%s is 0: want the proxy's listener port (DefaultConfig has 15001/15006/15008)", name)
		}
	}
	if c.OutboundPort != 0 && (c.OutboundPort == c.InboundPlaintextPort || c.OutboundPort == c.InboundHBONEPort) ||
		c.InboundPlaintextPort != 0 && c.InboundPlaintextPort == c.InboundHBONEPort {
		bad("OutboundPort %d, InboundPlaintextPort %d and InboundHBONEPort %d must differ", c.OutboundPort, c.InboundPlaintextPort, c.InboundHBONEPort)
	}
	for _, m := range []struct {
		name string
		v    uint32
	}{{"ProxyMark", c.ProxyMark}, {"TProxyMark", c.TProxyMark}} {
		if m.v == 0 || m.v&^netns.MarkMask != 0 {
			bad("%s %#x: want a non-zero value within the mask %#x", m.name, m.v, netns.MarkMask)
		}
	}
	if c.ProxyMark == c.TProxyMark {
		bad("ProxyMark and TProxyMark are both %#x: they must differ", c.ProxyMark)
	}
	// 0 is unspec; 253-255 are default, main and local: ours must be a table of its own.
	if c.RouteTable <= 0 || c.RouteTable >= 253 && c.RouteTable <= 255 {
		bad("RouteTable %d: want a dedicated table (1-252 or >255; DefaultConfig has 100)", c.RouteTable)
	}
	if c.RulePriority <= 0 || c.RulePriority >= 32766 {
		bad("RulePriority %d: want 1-32765, before the main table's rule (DefaultConfig has 32764)", c.RulePriority)
	}
	for _, l := range []struct {
		name string
		ps   []netip.Prefix
	}{{"OutboundInclude", c.OutboundInclude}, {"OutboundSources", c.OutboundSources}, {"InboundDestinations", c.InboundDestinations}, {"InboundExcludeSources", c.InboundExcludeSources}} {
		for i, p := range l.ps {
			if !p.IsValid() {
				bad("%s[%d] is not a valid prefix", l.name, i)
			}
		}
	}
	for i, p := range c.InboundPorts {
		if p == 0 || p == c.OutboundPort || p == c.InboundPlaintextPort || p == c.InboundHBONEPort {
			bad("InboundPorts[%d] = %d: want a workload port, not 0 or one of the proxy's ports", i, p)
		}
	}
	if c.Mode == ModeHost {
		if len(c.OutboundSources) == 0 {
			bad("Mode host: OutboundSources is empty: host mode must list the host workloads' addresses, or it would redirect every connection the host makes")
		}
		if len(c.InboundDestinations) == 0 {
			bad("Mode host: InboundDestinations is empty: host mode must list the host workloads' addresses, or it would capture connections to every address of the host")
		}
	}
	return errors.Join(errs...)
}

// outboundSkipPorts are the destination ports the outbound rule leaves alone.
func (c Config) outboundSkipPorts() []uint16 {
	ports := []uint16{c.OutboundPort, c.InboundPlaintextPort, c.InboundHBONEPort}
	if !c.CaptureDNS {
		ports = append(ports, 53)
	}
	return append(ports, c.ExcludeOutboundPorts...)
}

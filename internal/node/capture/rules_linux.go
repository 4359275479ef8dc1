//go:build linux

package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ambitmesh/ambit/internal/node/netns"
)

// Install puts the capture rules and the TPROXY policy routing into the network namespace at nsPath
// ("" = the caller's namespace, for ModeHost). Installing again replaces the previous rule set
// atomically, so it is also how a changed Config is applied.
func Install(ctx context.Context, nsPath string, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("capture: install in %s: %w", where(nsPath), err)
	}
	h, nft, closeAll, err := open(nsPath)
	if err != nil {
		return err
	}
	defer closeAll()
	// Routing first: once the rules mark packets, the route they need must already be there.
	if err := installRouting(h, cfg); err != nil {
		return fmt.Errorf("capture: install policy routing in %s: %w", where(nsPath), err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	// add+delete+add in one batch: replaces an existing table atomically and works when there is none.
	nft.AddTable(t)
	nft.DelTable(t)
	nft.AddTable(t)
	addRules(nft, t, cfg)
	if err := nft.Flush(); err != nil {
		return fmt.Errorf("capture: install nftables table inet %s in %s: %w", TableName, where(nsPath), err)
	}
	return nil
}

// Remove deletes the table inet ambit and the policy routing Install made, and nothing else. It is
// idempotent: removing from a namespace without the rules succeeds. Pass the Config used to install
// (its RouteTable, RulePriority and TProxyMark identify the routing).
func Remove(ctx context.Context, nsPath string, cfg Config) error {
	h, nft, closeAll, err := open(nsPath)
	if err != nil {
		return err
	}
	defer closeAll()
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	nft.AddTable(t)
	nft.DelTable(t)
	var errs []error
	if err := nft.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("delete nftables table inet %s: %w", TableName, err))
	}
	if err := removeRouting(h, cfg); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("capture: remove from %s: %w", where(nsPath), err)
	}
	return nil
}

func where(nsPath string) string {
	if nsPath == "" {
		return "the current netns"
	}
	return "netns " + nsPath
}

func open(nsPath string) (*netlink.Handle, *nftables.Conn, func(), error) {
	if nsPath == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("capture: netlink: %w", err)
		}
		nft, err := nftables.New()
		if err != nil {
			h.Close()
			return nil, nil, nil, fmt.Errorf("capture: nftables: %w", err)
		}
		return h, nft, h.Close, nil
	}
	ns, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("capture: open netns %s: %w", nsPath, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, nil, nil, fmt.Errorf("capture: netlink in netns %s: %w", nsPath, err)
	}
	nft, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		h.Close()
		ns.Close()
		return nil, nil, nil, fmt.Errorf("capture: nftables in netns %s: %w", nsPath, err)
	}
	return h, nft, func() { h.Close(); ns.Close() }, nil
}

// --- policy routing ---

type family struct {
	af  int
	any *net.IPNet
}

func families(all bool) []family {
	fs := []family{{unix.AF_INET, &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}}
	if all {
		fs = append(fs, family{unix.AF_INET6, &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}})
	}
	return fs
}

func ourRule(cfg Config, af int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = af
	r.Mark = cfg.TProxyMark
	mask := netns.MarkMask
	r.Mask = &mask
	r.Table = cfg.RouteTable
	r.Priority = cfg.RulePriority
	return r
}

func isOurRule(r netlink.Rule, cfg Config) bool {
	return r.Table == cfg.RouteTable && r.Mark == cfg.TProxyMark && r.Priority == cfg.RulePriority
}

func ourRoute(cfg Config, f family, lo int) *netlink.Route {
	return &netlink.Route{
		LinkIndex: lo,
		Dst:       f.any,
		Table:     cfg.RouteTable,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
	}
}

func installRouting(h *netlink.Handle, cfg Config) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("bring lo up: %w", err)
		}
	}
	for _, f := range families(cfg.IPv6) {
		if err := h.RouteReplace(ourRoute(cfg, f, lo.Attrs().Index)); err != nil {
			return fmt.Errorf("route local %s dev lo table %d: %w", f.any, cfg.RouteTable, err)
		}
		rules, err := h.RuleList(f.af)
		if err != nil {
			return fmt.Errorf("list ip rules: %w", err)
		}
		have := false
		for _, r := range rules {
			if isOurRule(r, cfg) {
				have = true
				break
			}
		}
		if !have {
			if err := h.RuleAdd(ourRule(cfg, f.af)); err != nil {
				return fmt.Errorf("ip rule fwmark %#x/%#x lookup %d pref %d: %w", cfg.TProxyMark, netns.MarkMask, cfg.RouteTable, cfg.RulePriority, err)
			}
		}
	}
	return nil
}

func removeRouting(h *netlink.Handle, cfg Config) error {
	var errs []error
	// Both families, whatever cfg.IPv6 says now: an earlier Install may have used the other value.
	for _, f := range families(true) {
		rules, err := h.RuleList(f.af)
		if err != nil {
			if f.af == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
				continue
			}
			errs = append(errs, fmt.Errorf("list ip rules: %w", err))
			continue
		}
		for _, r := range rules {
			if isOurRule(r, cfg) {
				r := r
				if err := h.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("delete ip rule fwmark %#x lookup %d: %w", cfg.TProxyMark, cfg.RouteTable, err))
				}
			}
		}
		routes, err := h.RouteListFiltered(f.af, &netlink.Route{Table: cfg.RouteTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			if f.af == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
				continue
			}
			errs = append(errs, fmt.Errorf("list routes of table %d: %w", cfg.RouteTable, err))
			continue
		}
		for _, r := range routes {
			ones := -1
			if r.Dst != nil {
				ones, _ = r.Dst.Mask.Size()
			}
			// Only the default local route we add; anything else in the table is someone else's.
			if r.Type != unix.RTN_LOCAL || (r.Dst != nil && ones != 0) {
				continue
			}
			r := r
			if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route local %s table %d: %w", f.any, cfg.RouteTable, err))
			}
		}
	}
	return errors.Join(errs...)
}

// --- nftables rules ---

const reg = 1 // every rule uses one register at a time

func addRules(c *nftables.Conn, t *nftables.Table, cfg Config) {
	pre := c.AddChain(&nftables.Chain{
		Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle,
	})
	outMangle := c.AddChain(&nftables.Chain{
		Name: "output", Table: t, Type: nftables.ChainTypeRoute,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle,
	})
	outNAT := c.AddChain(&nftables.Chain{
		Name: "output-nat", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
	})
	add := func(ch *nftables.Chain, comment string, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all, UserData: userdata.AppendString(nil, userdata.TypeComment, comment)})
	}
	host := cfg.Mode == ModeHost

	// prerouting (inbound).
	add(pre, "proxy's own connections to local apps: remember them so replies are routed back to the proxy",
		markIs(expr.CmpOpEq, cfg.ProxyMark), setCtMark(cfg.TProxyMark))
	add(pre, "traffic inside the namespace is never captured inbound", ifname(expr.MetaKeyIIFNAME, "lo"), verdict(expr.VerdictAccept))
	for _, p := range cfg.InboundExcludeSources {
		add(pre, "excluded source", addrIn(p, 12, 8), verdict(expr.VerdictAccept))
	}
	add(pre, "connections already accepted (or made by the proxy) keep their socket",
		tcp(), ctEstablished(), verdict(expr.VerdictAccept))
	// Each TPROXY rule is followed by a drop with the same match: nft's tproxy falls through when no
	// proxy listens, and inbound traffic must then fail closed, not reach the app unchecked.
	tproxyTo := func(comment string, port uint16, match ...[]expr.Any) {
		add(pre, comment, append(match, setMark(cfg.TProxyMark), tproxy(port), verdict(expr.VerdictAccept))...)
		add(pre, comment+" (no proxy listening: drop)", append(match, verdict(expr.VerdictDrop))...)
	}
	// In a pod every destination is the workload's; on a host only the listed addresses are.
	dsts := []scope{{}}
	if len(cfg.InboundDestinations) > 0 {
		dsts = scopes(cfg.InboundDestinations, 16, 24, "to ")
	}
	for _, d := range dsts {
		tproxyTo(fmt.Sprintf("HBONE %sto the proxy's %d", d.comment, cfg.InboundHBONEPort), cfg.InboundHBONEPort,
			tcp(), dport(expr.CmpOpEq, cfg.InboundHBONEPort), markIs(expr.CmpOpNeq, cfg.ProxyMark), d.match)
	}
	for _, p := range cfg.ExcludeInboundPorts {
		add(pre, "excluded inbound port", tcp(), dport(expr.CmpOpEq, p), verdict(expr.VerdictAccept))
	}
	for _, d := range dsts {
		if len(cfg.InboundPorts) == 0 && !host {
			tproxyTo(fmt.Sprintf("inbound plaintext %sto the proxy's %d", d.comment, cfg.InboundPlaintextPort), cfg.InboundPlaintextPort,
				tcp(), markIs(expr.CmpOpNeq, cfg.ProxyMark), d.match)
		}
		for _, p := range cfg.InboundPorts {
			tproxyTo(fmt.Sprintf("inbound plaintext %sport %d to the proxy's %d", d.comment, p, cfg.InboundPlaintextPort), cfg.InboundPlaintextPort,
				tcp(), dport(expr.CmpOpEq, p), markIs(expr.CmpOpNeq, cfg.ProxyMark), d.match)
		}
	}

	// output, type route (a mark change re-routes the packet).
	add(outMangle, "replies of apps to connections the proxy made from the client's IP: route them back to the proxy",
		ctMarkIs(cfg.TProxyMark), setMark(cfg.TProxyMark))

	// output-nat (outbound).
	add(outNAT, "traffic inside the namespace", ifname(expr.MetaKeyOIFNAME, "lo"), verdict(expr.VerdictAccept))
	add(outNAT, "the proxy's own sockets", markIs(expr.CmpOpEq, cfg.ProxyMark), verdict(expr.VerdictAccept))
	add(outNAT, "connections the proxy made to local apps", markIs(expr.CmpOpEq, cfg.TProxyMark), verdict(expr.VerdictAccept))
	for _, p := range cfg.outboundSkipPorts() {
		add(outNAT, "excluded outbound port", tcp(), dport(expr.CmpOpEq, p), verdict(expr.VerdictAccept))
	}
	srcs, incl := []scope{{}}, []scope{{}}
	if len(cfg.OutboundSources) > 0 {
		srcs = scopes(cfg.OutboundSources, 12, 8, "from ")
	}
	if len(cfg.OutboundInclude) > 0 {
		incl = scopes(cfg.OutboundInclude, 16, 24, "to ")
	}
	for _, s := range srcs {
		for _, d := range incl {
			add(outNAT, fmt.Sprintf("outbound %s%sto the proxy's %d", s.comment, d.comment, cfg.OutboundPort), tcp(), s.match, d.match, redirect(cfg.OutboundPort))
		}
	}
}

// scope is an address match of a rule (none: any address) and the words naming it in the comment.
type scope struct {
	match   []expr.Any
	comment string
}

// scopes matches each prefix at IP header offsets v4Off/v6Off (see addrIn).
func scopes(ps []netip.Prefix, v4Off, v6Off uint32, word string) []scope {
	out := make([]scope, len(ps))
	for i, p := range ps {
		out[i] = scope{addrIn(p, v4Off, v6Off), word + p.String() + " "}
	}
	return out
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func tcp() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{unix.IPPROTO_TCP}},
	}
}

func dport(op expr.CmpOp, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: op, Register: reg, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// markIs compares the packet mark under netns.MarkMask.
func markIs(op expr.CmpOp, v uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: native32(netns.MarkMask), Xor: native32(0)},
		&expr.Cmp{Op: op, Register: reg, Data: native32(v)},
	}
}

func ctMarkIs(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: native32(netns.MarkMask), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: native32(v)},
	}
}

// setMark sets the bits under netns.MarkMask of the packet mark to v, keeping the others (CNIs own them).
func setMark(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: native32(^netns.MarkMask), Xor: native32(v)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg, SourceRegister: true},
	}
}

func setCtMark(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: native32(^netns.MarkMask), Xor: native32(v)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg, SourceRegister: true},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4,
			Mask: native32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: native32(0)},
	}
}

func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: b},
	}
}

// addrIn matches the source or destination address (offsets v4Off/v6Off into the IP header) in p.
func addrIn(p netip.Prefix, v4Off, v6Off uint32) []expr.Any {
	p = p.Masked()
	proto, off, n := byte(unix.NFPROTO_IPV4), v4Off, uint32(4)
	if p.Addr().Is6() {
		proto, off, n = unix.NFPROTO_IPV6, v6Off, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{proto}},
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: n,
			Mask: net.CIDRMask(p.Bits(), int(n*8)), Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: p.Addr().AsSlice()},
	}
}

func redirect(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: reg},
	}
}

// tproxy without an address: the packet's own destination address with the proxy's port, for IPv4
// and IPv6 alike (the proxy listens on the wildcard address).
func tproxy(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.TProxy{Family: byte(unix.NFPROTO_UNSPEC), TableFamily: byte(unix.NFPROTO_INET), RegPort: reg},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

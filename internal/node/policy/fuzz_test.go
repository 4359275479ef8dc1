package policy

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	authzv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
)

// FuzzCheck builds policies from fuzzed parts and compares Check with
// refCheck, a deliberately naive evaluator written straight from the
// semantics in the package documentation (no index, no precompilation),
// over arbitrary identities, addresses, patterns and malformed values.
func FuzzCheck(f *testing.F) {
	f.Add(uint8(1), uint8(2), "cluster.local/ns/foo/*", "foo", []byte{10, 0, 0, 0}, uint8(8), uint16(8000), uint8(0), "10.0.1.0/24", "spiffe://cluster.local/ns/foo/sa/sleep", []byte{10, 0, 1, 5}, uint16(8000), uint8(0))
	f.Add(uint8(2), uint8(1), "*", "*oo", []byte{10, 0, 0}, uint8(40), uint16(0), uint8(3), "8000", "", []byte{10, 0, 1, 5}, uint16(22), uint8(0xff))
	f.Add(uint8(3), uint8(3), "a*b", "", []byte{}, uint8(0), uint16(22), uint8(6), "GET", "spiffe://td/vm/x", []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 5}, uint16(1), uint8(0x55))
	f.Add(uint8(9), uint8(0), "td/ns/a/sa/b", "bar", []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint8(128), uint16(9000), uint8(4), "td/*", "td/ns/a/sa/b", []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(9000), uint8(0xaa))
	f.Fuzz(func(t *testing.T, action, scope uint8, principal, namespace string, block []byte, bits uint8, port uint16,
		whenKey uint8, whenValue, srcID string, srcIPBytes []byte, dstPort uint16, flags uint8) {
		keys := []string{"source.ip", "destination.ip", "source.namespace", "source.principal", "destination.port", "request.headers[x]", "connection.sni", "bogus"}
		src := &authzv1.Source{}
		op := &authzv1.Operation{}
		// flags picks which fields are set and whether they are negated.
		neg := flags&1 != 0
		if flags&2 != 0 {
			if neg {
				src.NotPrincipals = []string{principal}
			} else {
				src.Principals = []string{principal}
			}
		}
		if flags&4 != 0 {
			if neg {
				src.NotNamespaces = []string{namespace}
			} else {
				src.Namespaces = []string{namespace}
			}
		}
		if flags&8 != 0 {
			p := &authzv1.Prefix{Address: block, Length: uint32(bits)}
			if neg {
				src.NotIpBlocks = []*authzv1.Prefix{p}
			} else {
				src.IpBlocks = []*authzv1.Prefix{p}
			}
		}
		if flags&16 != 0 {
			if neg {
				op.NotPorts = []uint32{uint32(port)}
			} else {
				op.Ports = []uint32{uint32(port)}
			}
		}
		if flags&32 != 0 {
			op.Methods = []string{"GET"}
		}
		r := &authzv1.Rule{}
		if flags&(2|4|8) != 0 {
			r.From = []*authzv1.Source{src}
		}
		if flags&(16|32) != 0 {
			r.To = []*authzv1.Operation{op}
		}
		if flags&64 != 0 {
			c := &authzv1.Condition{Key: keys[int(whenKey)%len(keys)]}
			if neg {
				c.NotValues = []string{whenValue}
			} else {
				c.Values = []string{whenValue}
			}
			r.When = []*authzv1.Condition{c}
		}
		if flags&128 != 0 {
			r.Invalid = "fuzzed"
		}
		p := &authzv1.Authorization{
			Namespace: "bar", Name: "p", Action: authzv1.Action(action % 5), Scope: authzv1.Scope(scope % 6),
			Workloads: []string{"bar/httpbin", principal}, Rules: []*authzv1.Rule{r},
		}
		// A second, fixed policy exercises the ALLOW/DENY interplay.
		second := nsPolicy("bar", "allow-foo", allow, from(&authzv1.Source{Namespaces: []string{"foo"}}))
		policies := []*authzv1.Authorization{p, second}

		srcIP, _ := netip.AddrFromSlice(srcIPBytes)
		c := Conn{SrcIdentity: srcID, SrcIP: srcIP, DstNamespace: "bar", DstName: "httpbin", DstIP: netip.MustParseAddr("10.0.2.7"), DstPort: dstPort}

		got := New(policies).Check(c)
		wantAllowed, wantRef := refCheck(policies, c)
		if got.Allowed != wantAllowed || got.Policy != wantRef {
			t.Fatalf("Check = %+v, reference says allowed=%v policy=%v\npolicy: %v\nconn: %+v", got, wantAllowed, wantRef, p, c)
		}
	})
}

// refCheck is the reference evaluator for FuzzCheck.
func refCheck(ps []*authzv1.Authorization, c Conn) (bool, Ref) {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b *authzv1.Authorization) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	var allows, denies []*authzv1.Authorization
	for _, p := range ps {
		applies := false
		switch p.Scope {
		case authzv1.Scope_SCOPE_MESH:
			applies = true
		case authzv1.Scope_SCOPE_NAMESPACE:
			applies = p.Namespace == c.DstNamespace
		case authzv1.Scope_SCOPE_WORKLOADS:
			applies = slices.Contains(p.Workloads, c.DstNamespace+"/"+c.DstName)
		}
		if !applies {
			continue
		}
		switch p.Action {
		case authzv1.Action_ACTION_ALLOW:
			allows = append(allows, p)
		case authzv1.Action_ACTION_AUDIT:
		default:
			denies = append(denies, p)
		}
	}
	for _, p := range denies {
		if refPolicy(p, false, c) {
			return false, Ref{p.Namespace, p.Name}
		}
	}
	for _, p := range allows {
		if refPolicy(p, true, c) {
			return true, Ref{p.Namespace, p.Name}
		}
	}
	return len(allows) == 0, Ref{}
}

func refPolicy(p *authzv1.Authorization, isAllow bool, c Conn) bool {
	for _, r := range p.Rules {
		m, ok := refRule(r, isAllow, c)
		if !ok { // malformed: fail closed
			m = !isAllow
		}
		if m {
			return true
		}
	}
	return false
}

// refRule returns whether r matches, and false for ok when a value is
// malformed.
func refRule(r *authzv1.Rule, isAllow bool, c Conn) (match, ok bool) {
	if r.Invalid != "" {
		return !isAllow, true
	}
	principal, ns, hasID := "", "", c.SrcIdentity != ""
	if hasID {
		principal = strings.TrimPrefix(c.SrcIdentity, "spiffe://")
		parts := strings.Split(principal, "/")
		if len(parts) == 5 && parts[1] == "ns" && parts[3] == "sa" && parts[2] != "" && parts[4] != "" {
			ns = parts[2]
		}
	}
	result := true
	if len(r.From) > 0 {
		any := false
		for _, s := range r.From {
			m, ok := refStrings(s.Principals, s.NotPrincipals, hasID, principal)
			if !ok {
				return false, false
			}
			m2, ok := refStrings(s.Namespaces, s.NotNamespaces, ns != "", ns)
			if !ok {
				return false, false
			}
			m3, ok := refBlocks(s.IpBlocks, s.NotIpBlocks, c.SrcIP)
			if !ok {
				return false, false
			}
			any = any || (m && m2 && m3)
		}
		result = result && any
	}
	if len(r.To) > 0 {
		any := false
		for _, o := range r.To {
			if isAllow && len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths)+len(o.Hosts)+len(o.NotHosts) > 0 {
				return false, true
			}
			for _, p := range slices.Concat(o.Ports, o.NotPorts) {
				if p == 0 || p > 65535 {
					return false, false
				}
			}
			m := (len(o.Ports) == 0 || slices.Contains(o.Ports, uint32(c.DstPort))) && !slices.Contains(o.NotPorts, uint32(c.DstPort))
			any = any || m
		}
		result = result && any
	}
	for _, w := range r.When {
		var m, ok bool
		switch w.Key {
		case "source.ip":
			m, ok = refIPs(w.Values, w.NotValues, c.SrcIP)
		case "destination.ip":
			m, ok = refIPs(w.Values, w.NotValues, c.DstIP)
		case "source.namespace":
			m, ok = refStrings(w.Values, w.NotValues, ns != "", ns)
		case "source.principal":
			m, ok = refStrings(w.Values, w.NotValues, hasID, principal)
		case "destination.port":
			m, ok = true, true
			for i, vs := range [][]string{w.Values, w.NotValues} {
				hit := false
				for _, v := range vs {
					n, err := strconv.Atoi(v)
					if v == "" || strings.Trim(v, "0123456789") != "" || err != nil || n < 1 || n > 65535 {
						return false, false
					}
					hit = hit || n == int(c.DstPort)
				}
				if i == 0 && len(vs) > 0 && !hit || i == 1 && hit {
					m = false
				}
			}
		default:
			if isAllow {
				return false, true
			}
			m, ok = true, true
		}
		if !ok {
			return false, false
		}
		result = result && m
	}
	return result, true
}

func refStrings(pos, neg []string, present bool, v string) (bool, bool) {
	hit := func(pats []string) (bool, bool) {
		h := false
		for _, p := range pats {
			stars := strings.Count(p, "*")
			if p == "" || stars > 1 || stars == 1 && !strings.HasPrefix(p, "*") && !strings.HasSuffix(p, "*") {
				return false, false
			}
			switch {
			case p == "*":
				h = h || present
			case strings.HasPrefix(p, "*"):
				h = h || present && strings.HasSuffix(v, p[1:])
			case strings.HasSuffix(p, "*"):
				h = h || present && strings.HasPrefix(v, p[:len(p)-1])
			default:
				h = h || present && v == p
			}
		}
		return h, true
	}
	ph, ok := hit(pos)
	if !ok {
		return false, false
	}
	nh, ok := hit(neg)
	if !ok {
		return false, false
	}
	return (len(pos) == 0 || ph) && !nh, true
}

func refBlocks(pos, neg []*authzv1.Prefix, a netip.Addr) (bool, bool) {
	conv := func(ps []*authzv1.Prefix) ([]string, bool) {
		var out []string
		for _, p := range ps {
			addr, ok := netip.AddrFromSlice(p.Address)
			if !ok || int(p.Length) > addr.BitLen() {
				return nil, false
			}
			out = append(out, netip.PrefixFrom(addr, int(p.Length)).String())
		}
		return out, true
	}
	ps, ok1 := conv(pos)
	ns, ok2 := conv(neg)
	if !ok1 || !ok2 {
		return false, false
	}
	return refIPs(ps, ns, a)
}

func refIPs(pos, neg []string, a netip.Addr) (bool, bool) {
	a = a.Unmap()
	hit := func(vs []string) (bool, bool) {
		h := false
		for _, v := range vs {
			if !strings.Contains(v, "/") {
				ad, err := netip.ParseAddr(v)
				if err != nil || ad.Zone() != "" {
					return false, false
				}
				v = netip.PrefixFrom(ad, ad.BitLen()).String()
			}
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return false, false
			}
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			h = h || p.Masked().Contains(a)
		}
		return h, true
	}
	ph, ok := hit(pos)
	if !ok {
		return false, false
	}
	nh, ok := hit(neg)
	if !ok {
		return false, false
	}
	return (len(pos) == 0 || ph) && !nh, true
}

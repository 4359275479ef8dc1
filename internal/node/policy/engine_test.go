package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	authzv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
)

const (
	allow = authzv1.Action_ACTION_ALLOW
	deny  = authzv1.Action_ACTION_DENY
	audit = authzv1.Action_ACTION_AUDIT
)

// Builders keep the tables close to the YAML a user writes.

func nsPolicy(ns, name string, action authzv1.Action, rules ...*authzv1.Rule) *authzv1.Authorization {
	return &authzv1.Authorization{Namespace: ns, Name: name, Action: action, Scope: authzv1.Scope_SCOPE_NAMESPACE, Rules: rules}
}

func meshPolicy(name string, action authzv1.Action, rules ...*authzv1.Rule) *authzv1.Authorization {
	return &authzv1.Authorization{Namespace: "ambit-system", Name: name, Action: action, Scope: authzv1.Scope_SCOPE_MESH, Rules: rules}
}

func wlPolicy(ns, name string, action authzv1.Action, workloads []string, rules ...*authzv1.Rule) *authzv1.Authorization {
	return &authzv1.Authorization{Namespace: ns, Name: name, Action: action, Scope: authzv1.Scope_SCOPE_WORKLOADS, Workloads: workloads, Rules: rules}
}

func from(s ...*authzv1.Source) *authzv1.Rule { return &authzv1.Rule{From: s} }

func to(o ...*authzv1.Operation) *authzv1.Rule { return &authzv1.Rule{To: o} }

func when(c ...*authzv1.Condition) *authzv1.Rule { return &authzv1.Rule{When: c} }

func cond(key string, values ...string) *authzv1.Condition {
	return &authzv1.Condition{Key: key, Values: values}
}

func notCond(key string, values ...string) *authzv1.Condition {
	return &authzv1.Condition{Key: key, NotValues: values}
}

func pfx(s string) *authzv1.Prefix {
	p := netip.MustParsePrefix(s)
	return &authzv1.Prefix{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}
}

var anyRule = &authzv1.Rule{}

// conn is the connection most cases check: sleep in foo (10.0.1.5) to
// httpbin in bar (10.0.2.7:8000) over mTLS.
func conn(mods ...func(*Conn)) Conn {
	c := Conn{
		SrcIdentity:  "spiffe://cluster.local/ns/foo/sa/sleep",
		SrcIP:        netip.MustParseAddr("10.0.1.5"),
		DstNamespace: "bar",
		DstName:      "httpbin",
		DstIP:        netip.MustParseAddr("10.0.2.7"),
		DstPort:      8000,
	}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func plaintext(c *Conn) { c.SrcIdentity = "" }

func identity_(id string) func(*Conn) { return func(c *Conn) { c.SrcIdentity = id } }

func srcIP(ip string) func(*Conn) { return func(c *Conn) { c.SrcIP = netip.MustParseAddr(ip) } }

func port(p uint16) func(*Conn) { return func(c *Conn) { c.DstPort = p } }

func dst(ns, name string) func(*Conn) {
	return func(c *Conn) { c.DstNamespace, c.DstName = ns, name }
}

var (
	noPolicies = Decision{Allowed: true, Reason: ReasonNoAllowPolicies}
	noMatch    = Decision{Reason: ReasonNoAllowMatch}
)

func allowedBy(ns, name string) Decision {
	return Decision{Allowed: true, Reason: ReasonAllowed, Policy: Ref{ns, name}}
}

func deniedBy(ns, name string) Decision {
	return Decision{Reason: ReasonDenied, Policy: Ref{ns, name}}
}

func withAudit(d Decision, ns, name string) Decision {
	d.Audit = Ref{ns, name}
	return d
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		policies []*authzv1.Authorization
		conn     Conn
		want     Decision
	}{
		// Actions and their combination.
		{"no policies allow", nil, conn(), noPolicies},
		{"ALLOW without rules allows nothing (Istio allow-nothing)",
			[]*authzv1.Authorization{nsPolicy("bar", "allow-nothing", allow)}, conn(), noMatch},
		{"ALLOW with an empty rule allows all (Istio allow-all)",
			[]*authzv1.Authorization{nsPolicy("bar", "allow-all", allow, anyRule)}, conn(), allowedBy("bar", "allow-all")},
		{"DENY with an empty rule denies all (Istio deny-all)",
			[]*authzv1.Authorization{nsPolicy("bar", "allow-all", allow, anyRule), nsPolicy("bar", "deny-all", deny, anyRule)},
			conn(), deniedBy("bar", "deny-all")},
		{"DENY without rules denies nothing",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny)}, conn(), noPolicies},
		{"DENY that does not match, no ALLOW: allowed",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, from(&authzv1.Source{Namespaces: []string{"dev"}}))}, conn(), noPolicies},
		{"ALLOW that does not match denies; another that matches allows",
			[]*authzv1.Authorization{
				nsPolicy("bar", "a1", allow, from(&authzv1.Source{Namespaces: []string{"dev"}})),
				nsPolicy("bar", "a2", allow, from(&authzv1.Source{Namespaces: []string{"foo"}})),
			}, conn(), allowedBy("bar", "a2")},
		{"first matching ALLOW by namespace/name decides",
			[]*authzv1.Authorization{nsPolicy("bar", "b", allow, anyRule), nsPolicy("bar", "a", allow, anyRule)},
			conn(), allowedBy("bar", "a")},
		{"first matching DENY by namespace/name decides",
			[]*authzv1.Authorization{nsPolicy("bar", "z", deny, anyRule), meshPolicy("m", deny, anyRule)},
			conn(), deniedBy("ambit-system", "m")},
		{"AUDIT is reported and does not deny",
			[]*authzv1.Authorization{nsPolicy("bar", "aud", audit, anyRule)}, conn(), withAudit(noPolicies, "bar", "aud")},
		{"AUDIT is reported alongside a deny",
			[]*authzv1.Authorization{nsPolicy("bar", "aud", audit, anyRule), nsPolicy("bar", "d", deny, anyRule)},
			conn(), withAudit(deniedBy("bar", "d"), "bar", "aud")},
		{"AUDIT that does not match is not reported",
			[]*authzv1.Authorization{nsPolicy("bar", "aud", audit, from(&authzv1.Source{Namespaces: []string{"dev"}}))}, conn(), noPolicies},
		{"AUDIT does not count as an ALLOW",
			[]*authzv1.Authorization{nsPolicy("bar", "aud", audit, from(&authzv1.Source{Namespaces: []string{"dev"}})), nsPolicy("bar", "none", allow)},
			conn(), noMatch},

		// Scope.
		{"namespace policy of another namespace does not apply",
			[]*authzv1.Authorization{nsPolicy("foo", "deny-all", deny, anyRule)}, conn(), noPolicies},
		{"mesh policy applies everywhere",
			[]*authzv1.Authorization{meshPolicy("deny-all", deny, anyRule)}, conn(dst("elsewhere", "x")), deniedBy("ambit-system", "deny-all")},
		{"workload policy applies to the workloads it lists",
			[]*authzv1.Authorization{wlPolicy("bar", "w", deny, []string{"bar/other", "bar/httpbin"}, anyRule)}, conn(), deniedBy("bar", "w")},
		{"workload policy does not apply to other workloads",
			[]*authzv1.Authorization{wlPolicy("bar", "w", deny, []string{"bar/other"}, anyRule)}, conn(), noPolicies},
		{"workload policy does not apply to a same-named workload elsewhere",
			[]*authzv1.Authorization{wlPolicy("bar", "w", deny, []string{"bar/httpbin"}, anyRule)}, conn(dst("baz", "httpbin")), noPolicies},
		{"workload set includes namespace and mesh policies",
			[]*authzv1.Authorization{
				wlPolicy("bar", "w", allow, []string{"bar/httpbin"}, from(&authzv1.Source{Namespaces: []string{"dev"}})),
				nsPolicy("bar", "n", allow, from(&authzv1.Source{Namespaces: []string{"foo"}})),
				meshPolicy("m", deny, from(&authzv1.Source{Namespaces: []string{"evil"}})),
			}, conn(), allowedBy("bar", "n")},
		{"mesh DENY applies to a workload with its own policies",
			[]*authzv1.Authorization{
				wlPolicy("bar", "w", allow, []string{"bar/httpbin"}, anyRule),
				meshPolicy("m", deny, from(&authzv1.Source{Namespaces: []string{"foo"}})),
			}, conn(), deniedBy("ambit-system", "m")},
		{"workload listed twice is evaluated once",
			[]*authzv1.Authorization{wlPolicy("bar", "w", allow, []string{"bar/httpbin", "bar/httpbin"}, anyRule)}, conn(), allowedBy("bar", "w")},
		{"targets scope is a waypoint's business",
			[]*authzv1.Authorization{{Namespace: "bar", Name: "t", Action: deny, Scope: authzv1.Scope_SCOPE_TARGETS, Rules: []*authzv1.Rule{anyRule}}},
			conn(), noPolicies},

		// principals.
		{"principal exact", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"cluster.local/ns/foo/sa/sleep"}}))}, conn(), allowedBy("bar", "a")},
		{"principal exact mismatch", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"cluster.local/ns/foo/sa/sleepy"}}))}, conn(), noMatch},
		{"principal prefix", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"cluster.local/ns/foo/*"}}))}, conn(), allowedBy("bar", "a")},
		{"principal prefix mismatch", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"cluster.local/ns/fo/*"}}))}, conn(), noMatch},
		{"principal suffix", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"*/sa/sleep"}}))}, conn(), allowedBy("bar", "a")},
		{"principal suffix mismatch", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"*/sa/other"}}))}, conn(), noMatch},
		{"principal * matches any mTLS peer", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"*"}}))}, conn(), allowedBy("bar", "a")},
		{"principal * does not match plaintext", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"*"}}))}, conn(plaintext), noMatch},
		{"any of several principals", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"x/ns/y/sa/z", "cluster.local/ns/foo/sa/sleep"}}))}, conn(), allowedBy("bar", "a")},
		{"principal of another trust domain", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"cluster.local/ns/foo/sa/sleep"}}))}, conn(identity_("spiffe://other.td/ns/foo/sa/sleep")), noMatch},
		{"notPrincipals excludes the peer", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{NotPrincipals: []string{"*/sa/sleep"}}))}, conn(), noMatch},
		{"notPrincipals lets others through", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{NotPrincipals: []string{"*/sa/other"}}))}, conn(), allowedBy("bar", "a")},
		{"DENY notPrincipals * denies plaintext (Istio require mTLS)", []*authzv1.Authorization{nsPolicy("bar", "require-mtls", deny, from(&authzv1.Source{NotPrincipals: []string{"*"}}))}, conn(plaintext), deniedBy("bar", "require-mtls")},
		{"DENY notPrincipals * lets mTLS through", []*authzv1.Authorization{nsPolicy("bar", "require-mtls", deny, from(&authzv1.Source{NotPrincipals: []string{"*"}}))}, conn(), noPolicies},
		{"non-Kubernetes SPIFFE ID has a principal", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"cluster.local/vm/*"}}))}, conn(identity_("spiffe://cluster.local/vm/db1")), allowedBy("bar", "a")},

		// namespaces.
		{"namespace exact", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Namespaces: []string{"foo"}}))}, conn(), allowedBy("bar", "a")},
		{"namespace prefix", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Namespaces: []string{"fo*"}}))}, conn(), allowedBy("bar", "a")},
		{"namespace suffix", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Namespaces: []string{"*oo"}}))}, conn(), allowedBy("bar", "a")},
		{"namespace mismatch", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Namespaces: []string{"fooo", "f"}}))}, conn(), noMatch},
		{"namespace is the identity's, not the trust domain's", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Namespaces: []string{"cluster.local"}}))}, conn(), noMatch},
		{"namespace does not match plaintext", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Namespaces: []string{"*"}}))}, conn(plaintext), noMatch},
		{"namespace does not match a non-Kubernetes SPIFFE ID", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Namespaces: []string{"*"}}))}, conn(identity_("spiffe://cluster.local/vm/db1")), noMatch},
		{"DENY notNamespaces foo lets foo through (Istio example)", []*authzv1.Authorization{nsPolicy("bar", "d", deny, from(&authzv1.Source{NotNamespaces: []string{"foo"}}))}, conn(), noPolicies},
		{"DENY notNamespaces foo denies others", []*authzv1.Authorization{nsPolicy("bar", "d", deny, from(&authzv1.Source{NotNamespaces: []string{"foo"}}))}, conn(identity_("spiffe://cluster.local/ns/dev/sa/x")), deniedBy("bar", "d")},
		{"DENY notNamespaces foo denies plaintext", []*authzv1.Authorization{nsPolicy("bar", "d", deny, from(&authzv1.Source{NotNamespaces: []string{"foo"}}))}, conn(plaintext), deniedBy("bar", "d")},

		// ipBlocks.
		{"ipBlocks address", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("10.0.1.5/32")}}))}, conn(), allowedBy("bar", "a")},
		{"ipBlocks CIDR", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("1.2.3.4/32"), pfx("10.0.0.0/16")}}))}, conn(), allowedBy("bar", "a")},
		{"ipBlocks miss", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("10.0.2.0/24")}}))}, conn(), noMatch},
		{"ipBlocks match plaintext too", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("10.0.0.0/8")}}))}, conn(plaintext), allowedBy("bar", "a")},
		{"ipBlocks IPv6", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("fd00::/64")}}))}, conn(srcIP("fd00::1")), allowedBy("bar", "a")},
		{"IPv4 block matches a v4-mapped source", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("10.0.0.0/8")}}))}, conn(srcIP("::ffff:10.0.1.5")), allowedBy("bar", "a")},
		{"v4-mapped block matches an IPv4 source", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("::ffff:10.0.0.0/104")}}))}, conn(), allowedBy("bar", "a")},
		{"IPv4 block does not match IPv6", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("0.0.0.0/0")}}))}, conn(srcIP("fd00::1")), noMatch},
		{"notIpBlocks excludes", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("10.0.0.0/8")}, NotIpBlocks: []*authzv1.Prefix{pfx("10.0.1.0/24")}}))}, conn(), noMatch},
		{"notIpBlocks alone", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{NotIpBlocks: []*authzv1.Prefix{pfx("192.168.0.0/16")}}))}, conn(), allowedBy("bar", "a")},

		// Combination within a rule and across rules.
		{"fields of one source are ANDed", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Namespaces: []string{"foo"}, IpBlocks: []*authzv1.Prefix{pfx("10.9.0.0/16")}}))}, conn(), noMatch},
		{"sources are ORed", []*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Namespaces: []string{"dev"}}, &authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("10.0.1.0/24")}}))}, conn(), allowedBy("bar", "a")},
		{"from and to are ANDed", []*authzv1.Authorization{nsPolicy("bar", "a", allow, &authzv1.Rule{
			From: []*authzv1.Source{{Namespaces: []string{"foo"}}}, To: []*authzv1.Operation{{Ports: []uint32{9000}}}})}, conn(), noMatch},
		{"rules are ORed", []*authzv1.Authorization{nsPolicy("bar", "a", allow, to(&authzv1.Operation{Ports: []uint32{9000}}), from(&authzv1.Source{Namespaces: []string{"foo"}}))}, conn(), allowedBy("bar", "a")},
		{"Istio example: DENY from dev to 8080 spares 8000", []*authzv1.Authorization{nsPolicy("bar", "d", deny, &authzv1.Rule{
			From: []*authzv1.Source{{Namespaces: []string{"foo"}}}, To: []*authzv1.Operation{{Ports: []uint32{8080}}}})}, conn(), noPolicies},
		{"Istio example: DENY from dev to 8080 denies 8080", []*authzv1.Authorization{nsPolicy("bar", "d", deny, &authzv1.Rule{
			From: []*authzv1.Source{{Namespaces: []string{"foo"}}}, To: []*authzv1.Operation{{Ports: []uint32{8080}}}})}, conn(port(8080)), deniedBy("bar", "d")},

		// ports.
		{"ports", []*authzv1.Authorization{nsPolicy("bar", "a", allow, to(&authzv1.Operation{Ports: []uint32{80, 8000}}))}, conn(), allowedBy("bar", "a")},
		{"ports miss", []*authzv1.Authorization{nsPolicy("bar", "a", allow, to(&authzv1.Operation{Ports: []uint32{80}}))}, conn(), noMatch},
		{"notPorts", []*authzv1.Authorization{nsPolicy("bar", "a", allow, to(&authzv1.Operation{NotPorts: []uint32{8000}}))}, conn(), noMatch},
		{"notPorts others", []*authzv1.Authorization{nsPolicy("bar", "a", allow, to(&authzv1.Operation{NotPorts: []uint32{22}}))}, conn(), allowedBy("bar", "a")},
		{"operations are ORed", []*authzv1.Authorization{nsPolicy("bar", "a", allow, to(&authzv1.Operation{Ports: []uint32{80}}, &authzv1.Operation{Ports: []uint32{8000}}))}, conn(), allowedBy("bar", "a")},

		// when.
		{"when source.ip", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("source.ip", "10.0.1.0/24")))}, conn(), allowedBy("bar", "a")},
		{"when source.ip bare address", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("source.ip", "10.0.1.5")))}, conn(), allowedBy("bar", "a")},
		{"when source.ip miss", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("source.ip", "10.0.1.6")))}, conn(), noMatch},
		{"when source.ip notValues", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(notCond("source.ip", "10.0.0.0/8")))}, conn(), noMatch},
		{"when destination.ip", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("destination.ip", "10.0.2.7/32")))}, conn(), allowedBy("bar", "a")},
		{"when destination.ip miss", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("destination.ip", "10.0.3.0/24")))}, conn(), noMatch},
		{"when destination.ip notValues", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(notCond("destination.ip", "10.0.3.0/24")))}, conn(), allowedBy("bar", "a")},
		{"when destination.port", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("destination.port", "8000")))}, conn(), allowedBy("bar", "a")},
		{"when destination.port miss", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("destination.port", "80")))}, conn(), noMatch},
		{"when destination.port notValues", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(notCond("destination.port", "8000")))}, conn(), noMatch},
		{"when source.namespace", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("source.namespace", "f*")))}, conn(), allowedBy("bar", "a")},
		{"when source.namespace notValues", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(notCond("source.namespace", "foo")))}, conn(), noMatch},
		{"when source.principal", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("source.principal", "cluster.local/ns/foo/sa/sleep")))}, conn(), allowedBy("bar", "a")},
		{"when source.principal plaintext", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("source.principal", "*")))}, conn(plaintext), noMatch},
		{"when source.principal notValues plaintext", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(notCond("source.principal", "*")))}, conn(plaintext), allowedBy("bar", "a")},
		{"when conditions are ANDed", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("source.namespace", "foo"), cond("destination.port", "80")))}, conn(), noMatch},
		{"when values are ORed", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("destination.port", "80", "8000")))}, conn(), allowedBy("bar", "a")},
		{"when values and notValues together", []*authzv1.Authorization{nsPolicy("bar", "a", allow, when(&authzv1.Condition{Key: "source.ip", Values: []string{"10.0.0.0/8"}, NotValues: []string{"10.0.1.5"}}))}, conn(), noMatch},

		// HTTP attributes at a node proxy.
		{"ALLOW with methods never matches (Istio allow-read without a waypoint)",
			[]*authzv1.Authorization{nsPolicy("bar", "allow-read", allow, &authzv1.Rule{
				From: []*authzv1.Source{{Principals: []string{"cluster.local/ns/foo/sa/sleep"}}},
				To:   []*authzv1.Operation{{Methods: []string{"GET"}}}})}, conn(), noMatch},
		{"ALLOW with ports and paths never matches",
			[]*authzv1.Authorization{nsPolicy("bar", "a", allow, to(&authzv1.Operation{Ports: []uint32{8000}, Paths: []string{"/x"}}))}, conn(), noMatch},
		{"ALLOW with notHosts never matches",
			[]*authzv1.Authorization{nsPolicy("bar", "a", allow, to(&authzv1.Operation{NotHosts: []string{"x"}}))}, conn(), noMatch},
		{"ALLOW with an L7 rule still lets its L4 rule match",
			[]*authzv1.Authorization{nsPolicy("bar", "a", allow, to(&authzv1.Operation{Methods: []string{"GET"}}), from(&authzv1.Source{Namespaces: []string{"foo"}}))}, conn(), allowedBy("bar", "a")},
		{"ALLOW with a request header condition never matches",
			[]*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("request.headers[x-id]", "1")))}, conn(), noMatch},
		{"ALLOW with connection.sni never matches",
			[]*authzv1.Authorization{nsPolicy("bar", "a", allow, when(cond("connection.sni", "x")))}, conn(), noMatch},
		{"DENY with methods only matches every connection",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, to(&authzv1.Operation{Methods: []string{"DELETE"}}))}, conn(), deniedBy("bar", "d")},
		{"DENY with ports and methods still checks ports",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, to(&authzv1.Operation{Ports: []uint32{9000}, Methods: []string{"DELETE"}}))}, conn(), noPolicies},
		{"DENY with ports and methods denies the port",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, to(&authzv1.Operation{Ports: []uint32{8000}, Methods: []string{"DELETE"}}))}, conn(), deniedBy("bar", "d")},
		{"DENY ignores request header conditions but keeps L4 ones",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, when(cond("request.headers[x-id]", "1"), cond("source.namespace", "dev")))}, conn(), noPolicies},
		{"DENY with only a request header condition matches all",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, when(cond("request.headers[x-id]", "1")))}, conn(), deniedBy("bar", "d")},
		{"AUDIT with methods matches ignoring them",
			[]*authzv1.Authorization{nsPolicy("bar", "aud", audit, to(&authzv1.Operation{Methods: []string{"GET"}}))}, conn(), withAudit(noPolicies, "bar", "aud")},

		// Invalid rules fail closed.
		{"invalid rule never matches in ALLOW",
			[]*authzv1.Authorization{nsPolicy("bar", "a", allow, &authzv1.Rule{Invalid: "bad", From: []*authzv1.Source{{Namespaces: []string{"foo"}}}})}, conn(), noMatch},
		{"invalid rule always matches in DENY",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, &authzv1.Rule{Invalid: "bad", From: []*authzv1.Source{{Namespaces: []string{"dev"}}}})}, conn(), deniedBy("bar", "d")},
		{"invalid rule leaves the valid ones in force",
			[]*authzv1.Authorization{nsPolicy("bar", "a", allow, &authzv1.Rule{Invalid: "bad"}, from(&authzv1.Source{Namespaces: []string{"foo"}}))}, conn(), allowedBy("bar", "a")},
		{"malformed IP block in DENY matches all",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{{Address: []byte{1, 2, 3}, Length: 8}}}))}, conn(), deniedBy("bar", "d")},
		{"malformed IP block in ALLOW never matches",
			[]*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{{Address: []byte{10, 0, 0, 0}, Length: 33}}}))}, conn(), noMatch},
		{"malformed port in DENY matches all",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, to(&authzv1.Operation{Ports: []uint32{70000}}))}, conn(), deniedBy("bar", "d")},
		{"malformed when value in DENY matches all",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, when(cond("destination.port", "http")))}, conn(), deniedBy("bar", "d")},
		{"pattern with an inner * in ALLOW never matches",
			[]*authzv1.Authorization{nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"cluster.local/*/sa/sleep"}}))}, conn(), noMatch},
		{"unknown action is enforced as DENY",
			[]*authzv1.Authorization{{Namespace: "bar", Name: "custom", Action: authzv1.Action(7), Scope: authzv1.Scope_SCOPE_NAMESPACE, Rules: []*authzv1.Rule{anyRule}}},
			conn(), deniedBy("bar", "custom")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := New(tt.policies).Check(tt.conn)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Check (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name   string
		policy *authzv1.Authorization
		want   []string // substrings, one per problem
	}{
		{"valid", nsPolicy("bar", "a", allow, from(&authzv1.Source{Principals: []string{"td/ns/a/sa/b"}})), nil},
		{"invalid rule already reported by the control plane", nsPolicy("bar", "a", allow, &authzv1.Rule{Invalid: "x"}), nil},
		{"unknown action", &authzv1.Authorization{Namespace: "bar", Name: "a", Action: authzv1.Action(9), Scope: authzv1.Scope_SCOPE_MESH},
			[]string{"Authorization bar/a: action 9 is not ALLOW, DENY or AUDIT; enforced as DENY"}},
		{"unknown scope", &authzv1.Authorization{Namespace: "bar", Name: "a", Action: allow},
			[]string{"Authorization bar/a: scope SCOPE_UNSPECIFIED is not MESH, NAMESPACE, WORKLOADS or TARGETS; policy skipped"}},
		{"bad workload ref", wlPolicy("bar", "a", deny, []string{"httpbin", "bar/ok"}),
			[]string{`workloads: "httpbin" is not "<namespace>/<name>"`}},
		{"bad pattern", nsPolicy("bar", "a", allow, &authzv1.Rule{}, from(&authzv1.Source{Namespaces: []string{"a*b"}})),
			[]string{`Authorization bar/a: rules[1]: from[0]: pattern "a*b" has a '*' that is not at the start or the end; want an exact value, "prefix*", "*suffix" or "*"; the rule never matches`}},
		{"bad prefix", nsPolicy("bar", "d", deny, from(&authzv1.Source{NotIpBlocks: []*authzv1.Prefix{{Address: []byte{1}}}})),
			[]string{"rules[0]: from[0]: IP block address has 1 bytes; want 4 (IPv4) or 16 (IPv6); the rule always matches"}},
		{"bad when port", nsPolicy("bar", "d", deny, when(cond("destination.port", "0"))),
			[]string{`rules[0]: when[0] (destination.port): "0" is not a port number (1-65535)`}},
		{"bad when ip", nsPolicy("bar", "d", deny, when(notCond("source.ip", "10.0.0.300"))),
			[]string{`when[0] (source.ip): "10.0.0.300" is not an IP address or CIDR`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := New([]*authzv1.Authorization{tt.policy}).Problems()
			if len(got) != len(tt.want) {
				t.Fatalf("Problems() = %v, want %d problem(s)", got, len(tt.want))
			}
			for i, err := range got {
				if !strings.Contains(err.Error(), tt.want[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, err, tt.want[i])
				}
				if !strings.HasPrefix(err.Error(), "policy: ") {
					t.Errorf("problem %d = %q, want the component prefix", i, err)
				}
			}
		})
	}
}

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		id   string
		want identity
	}{
		{"", identity{}},
		{"spiffe://cluster.local/ns/foo/sa/sleep", identity{true, "cluster.local/ns/foo/sa/sleep", "foo"}},
		{"cluster.local/ns/foo/sa/sleep", identity{true, "cluster.local/ns/foo/sa/sleep", "foo"}},
		{"spiffe://td/ns//sa/x", identity{true, "td/ns//sa/x", ""}},
		{"spiffe://td/ns/a/b/sa/x", identity{true, "td/ns/a/b/sa/x", ""}},
		{"spiffe://td/ns/a/sa/x/y", identity{true, "td/ns/a/sa/x/y", ""}},
		{"spiffe://td/node/n1", identity{true, "td/node/n1", ""}},
		{"spiffe://td", identity{true, "td", ""}},
	}
	for _, tt := range tests {
		if got := parseIdentity(tt.id); got != tt.want {
			t.Errorf("parseIdentity(%q) = %+v, want %+v", tt.id, got, tt.want)
		}
	}
}

func TestDecisionString(t *testing.T) {
	for _, tt := range []struct {
		d    Decision
		want string
	}{
		{deniedBy("bar", "d"), "denied by policy bar/d"},
		{allowedBy("bar", "a"), "allowed by policy bar/a"},
		{noMatch, "ALLOW policies apply but none matched"},
		{noPolicies, "no ALLOW policies apply"},
	} {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestEngineLen(t *testing.T) {
	e := New([]*authzv1.Authorization{
		nsPolicy("a", "x", allow), meshPolicy("m", deny), nil,
		{Namespace: "a", Name: "t", Action: deny, Scope: authzv1.Scope_SCOPE_TARGETS},
	})
	if got := e.Len(); got != 2 {
		t.Errorf("Len() = %d, want 2 (targets-scope and nil entries are not enforced here)", got)
	}
	if err := errors.Join(e.Problems()...); err != nil {
		t.Errorf("Problems() = %v, want none", err)
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	e := New(benchPolicies())
	c := conn()
	var d Decision
	allocs := testing.AllocsPerRun(1000, func() { d = e.Check(c) })
	if allocs != 0 {
		t.Errorf("Check allocates %.1f times per call, want 0", allocs)
	}
	if !d.Allowed {
		t.Errorf("benchmark connection denied: %v", d)
	}
}

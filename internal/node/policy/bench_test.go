package policy

import (
	"fmt"
	"net/netip"
	"testing"

	authzv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
)

// benchPolicies is a mesh of 200 namespaces, each with a handful of
// policies shaped like the ones users write; the checked connection (conn())
// goes through a mesh DENY, an AUDIT, a namespace ALLOW with 10 principals
// that it matches last, and a workload ALLOW that does not match.
func benchPolicies() []*authzv1.Authorization {
	ps := []*authzv1.Authorization{
		meshPolicy("quarantine", deny, from(&authzv1.Source{Namespaces: []string{"quarantine", "legacy-*"}})),
		meshPolicy("no-ssh", deny, to(&authzv1.Operation{Ports: []uint32{22}})),
	}
	for i := range 200 {
		ns := fmt.Sprintf("ns-%d", i)
		if i == 100 {
			ns = "bar"
		}
		var principals []string
		for j := range 9 {
			principals = append(principals, fmt.Sprintf("cluster.local/ns/client-%d/sa/app-%d", j, j))
		}
		principals = append(principals, "cluster.local/ns/foo/sa/sleep")
		ps = append(ps,
			nsPolicy(ns, "audit-admin", audit, when(cond("destination.port", "9090"))),
			nsPolicy(ns, "allow-clients", allow, &authzv1.Rule{
				From: []*authzv1.Source{{Principals: principals}},
				To:   []*authzv1.Operation{{Ports: []uint32{8000, 8080}}},
			}),
			wlPolicy(ns, "allow-monitoring", allow, []string{ns + "/httpbin", ns + "/other"},
				from(&authzv1.Source{IpBlocks: []*authzv1.Prefix{pfx("192.168.0.0/16"), pfx("fd00:1::/64")}})),
		)
	}
	return ps
}

func BenchmarkCheck(b *testing.B) {
	e := New(benchPolicies())
	cases := []struct {
		name string
		conn Conn
	}{
		{"allowed/mtls", conn()},
		{"denied/plaintext", conn(plaintext)},
		{"no-policies", conn(dst("unpoliced", "x"))},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = e.Check(c.conn)
			}
		})
	}
}

func BenchmarkNew(b *testing.B) {
	ps := benchPolicies()
	b.ReportAllocs()
	for b.Loop() {
		_ = New(ps)
	}
}

func BenchmarkRecheck10k(b *testing.B) {
	e := New(benchPolicies())
	live := make([]Conn, 10000)
	for i := range live {
		live[i] = conn()
		live[i].SrcIP = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = Recheck(e, func(yield func(int, Conn) bool) {
			for i, c := range live {
				if !yield(i, c) {
					return
				}
			}
		})
	}
}

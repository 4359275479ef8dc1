package policy

import (
	"testing"

	authzv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
)

var waypointRef = Ref{"bar", "waypoint"}

func targetPolicy(name string, action authzv1.Action, targets []*authzv1.Target, rules ...*authzv1.Rule) *authzv1.Authorization {
	return &authzv1.Authorization{Namespace: "bar", Name: name, Action: action, Scope: authzv1.Scope_SCOPE_TARGETS, Targets: targets, Rules: rules}
}

var (
	toWaypoint = []*authzv1.Target{{Kind: "Gateway", Namespace: "bar", Name: "waypoint"}}
	toHTTPBin  = []*authzv1.Target{{Kind: "Service", Namespace: "bar", Name: "httpbin"}}
)

func req(method, host, path string, hdr map[string][]string) func(*Conn) {
	return func(c *Conn) { c.HTTP = &HTTP{Method: method, Host: host, Path: path, Header: hdr} }
}

func TestCheckWaypoint(t *testing.T) {
	get := req("GET", "httpbin.bar.svc.cluster.local", "/status/200", nil)
	tests := []struct {
		name     string
		policies []*authzv1.Authorization
		conn     Conn
		want     Decision
	}{
		{"ALLOW by method and path prefix",
			[]*authzv1.Authorization{targetPolicy("a", allow, toHTTPBin, to(&authzv1.Operation{Methods: []string{"GET"}, Paths: []string{"/status/*"}}))},
			conn(get), allowedBy("bar", "a")},
		{"ALLOW by method only: POST not allowed",
			[]*authzv1.Authorization{targetPolicy("a", allow, toHTTPBin, to(&authzv1.Operation{Methods: []string{"GET"}}))},
			conn(req("POST", "httpbin", "/", nil)), noMatch},
		{"path suffix and exact",
			[]*authzv1.Authorization{targetPolicy("a", allow, toHTTPBin, to(&authzv1.Operation{Paths: []string{"*.png", "/exact"}}))},
			conn(req("GET", "h", "/img/logo.png", nil)), allowedBy("bar", "a")},
		{"exact path does not match a longer one",
			[]*authzv1.Authorization{targetPolicy("a", allow, toHTTPBin, to(&authzv1.Operation{Paths: []string{"/exact"}}))},
			conn(req("GET", "h", "/exact/more", nil)), noMatch},
		{"DENY notPaths",
			[]*authzv1.Authorization{targetPolicy("d", deny, toHTTPBin, to(&authzv1.Operation{NotPaths: []string{"/public/*"}}))},
			conn(req("GET", "h", "/admin", nil)), deniedBy("bar", "d")},
		{"hosts are case-insensitive and match without the port",
			[]*authzv1.Authorization{targetPolicy("d", deny, toHTTPBin, to(&authzv1.Operation{Hosts: []string{"HTTPBIN.bar.svc.cluster.local"}}))},
			conn(req("GET", "httpbin.bar.svc.cluster.local:8000", "/", nil)), deniedBy("bar", "d")},
		{"principals from the peer identity, DENY before ALLOW",
			[]*authzv1.Authorization{
				targetPolicy("a", allow, toHTTPBin, anyRule),
				targetPolicy("d", deny, toHTTPBin, &authzv1.Rule{From: []*authzv1.Source{{Principals: []string{"cluster.local/ns/foo/sa/sleep"}}}, To: []*authzv1.Operation{{Methods: []string{"DELETE"}}}}),
			}, conn(req("DELETE", "h", "/", nil)), deniedBy("bar", "d")},
		{"the same DENY does not match another method",
			[]*authzv1.Authorization{
				targetPolicy("a", allow, toHTTPBin, anyRule),
				targetPolicy("d", deny, toHTTPBin, &authzv1.Rule{From: []*authzv1.Source{{Principals: []string{"cluster.local/ns/foo/sa/sleep"}}}, To: []*authzv1.Operation{{Methods: []string{"DELETE"}}}}),
			}, conn(get), allowedBy("bar", "a")},
		{"namespaces from the peer identity",
			[]*authzv1.Authorization{targetPolicy("a", allow, toWaypoint, from(&authzv1.Source{Namespaces: []string{"dev"}}))},
			conn(get), noMatch},
		{"request header condition",
			[]*authzv1.Authorization{targetPolicy("a", allow, toHTTPBin, when(cond("request.headers[x-token]", "secret-*")))},
			conn(req("GET", "h", "/", map[string][]string{"X-Token": {"secret-1"}})), allowedBy("bar", "a")},
		{"request header condition without the header",
			[]*authzv1.Authorization{targetPolicy("a", allow, toHTTPBin, when(cond("request.headers[x-token]", "*")))},
			conn(get), noMatch},
		{"remote.ip is the source address",
			[]*authzv1.Authorization{targetPolicy("d", deny, toHTTPBin, when(cond("remote.ip", "10.0.1.0/24")))},
			conn(get), deniedBy("bar", "d")},
		{"connection.sni is absent on the waypoint's plaintext inner stream",
			[]*authzv1.Authorization{targetPolicy("a", allow, toHTTPBin, when(cond("connection.sni", "*")))},
			conn(get), noMatch},
		{"a Gateway target applies to every service",
			[]*authzv1.Authorization{targetPolicy("d", deny, toWaypoint, to(&authzv1.Operation{Paths: []string{"/status/*"}}))},
			conn(get, dst("bar", "other")), deniedBy("bar", "d")},
		{"a Service target applies to that service only",
			[]*authzv1.Authorization{targetPolicy("d", deny, toHTTPBin, anyRule)},
			conn(get, dst("bar", "other")), noPolicies},
		{"another waypoint's policy does not apply",
			[]*authzv1.Authorization{targetPolicy("d", deny, []*authzv1.Target{{Kind: "Gateway", Namespace: "bar", Name: "other-waypoint"}}, anyRule)},
			conn(get), noPolicies},
		{"node-scope policies are the node proxies'",
			[]*authzv1.Authorization{nsPolicy("bar", "d", deny, anyRule)},
			conn(get), noPolicies},
		{"an unsupported when key fails closed: DENY matches",
			[]*authzv1.Authorization{targetPolicy("d", deny, toHTTPBin, when(cond("request.auth.claims[iss]", "x")))},
			conn(get), deniedBy("bar", "d")},
		{"a malformed pattern fails closed: ALLOW never matches",
			[]*authzv1.Authorization{targetPolicy("a", allow, toHTTPBin, to(&authzv1.Operation{Paths: []string{"/a*b"}}))},
			conn(req("GET", "h", "/a-b", nil)), noMatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewWaypoint(tc.policies, waypointRef).Check(tc.conn); got != tc.want {
				t.Errorf("Check = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A node proxy keeps its documented L7 handling: HTTP attributes make an
// ALLOW rule never match and are ignored in DENY, even if a request were
// somehow known, and SCOPE_TARGETS policies are not its.
func TestCheckNodeIgnoresHTTP(t *testing.T) {
	get := req("GET", "h", "/status/200", nil)
	e := New([]*authzv1.Authorization{
		nsPolicy("bar", "a", allow, to(&authzv1.Operation{Methods: []string{"GET"}})),
		targetPolicy("d", deny, toHTTPBin, anyRule),
	})
	if got := e.Check(conn(get)); got != noMatch {
		t.Errorf("node Check = %+v, want %+v", got, noMatch)
	}
	e = New([]*authzv1.Authorization{nsPolicy("bar", "d", deny, to(&authzv1.Operation{Methods: []string{"DELETE"}}))})
	if got := e.Check(conn(get)); got != deniedBy("bar", "d") {
		t.Errorf("node Check = %+v, want %+v", got, deniedBy("bar", "d"))
	}
}

// TCP streams through a waypoint: HTTP attributes cannot be seen, so an
// ALLOW rule using them never matches and a DENY rule matches without
// them; the peer identity still counts.
func TestCheckWaypointTCP(t *testing.T) {
	tests := []struct {
		name     string
		policies []*authzv1.Authorization
		want     Decision
	}{
		{"ALLOW by method never matches TCP",
			[]*authzv1.Authorization{targetPolicy("a", allow, toHTTPBin, to(&authzv1.Operation{Methods: []string{"GET"}}))}, noMatch},
		{"DENY by path matches TCP more broadly",
			[]*authzv1.Authorization{targetPolicy("d", deny, toHTTPBin, to(&authzv1.Operation{Paths: []string{"/admin*"}}))}, deniedBy("bar", "d")},
		{"ALLOW by principal matches",
			[]*authzv1.Authorization{targetPolicy("a", allow, toWaypoint, from(&authzv1.Source{Principals: []string{"cluster.local/ns/foo/*"}}))}, allowedBy("bar", "a")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewWaypointTCP(tc.policies, waypointRef).Check(conn()); got != tc.want {
				t.Errorf("Check = %+v, want %+v", got, tc.want)
			}
		})
	}
}

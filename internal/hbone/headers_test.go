package hbone_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ambitmesh/ambit/internal/hbone"
)

var cmpAddr = cmpopts.EquateComparable(netip.AddrPort{})

func TestParseAuthority(t *testing.T) {
	cases := []struct {
		in      string
		want    string // "" = error
		comment string
	}{
		{"10.0.0.7:8080", "10.0.0.7:8080", ""},
		{"[fd00::7]:443", "[fd00::7]:443", ""},
		{"[::ffff:10.0.0.7]:80", "10.0.0.7:80", "IPv4-mapped is unmapped"},
		{"10.0.0.7", "", "no port"},
		{"10.0.0.7:0", "", "port 0"},
		{"10.0.0.7:65536", "", "port range"},
		{"fd00::7:443", "", "IPv6 without brackets"},
		{"[fe80::1%eth0]:80", "", "zone"},
		{"example.com:80", "", "hostname"},
		{"", "", "empty"},
	}
	for _, tc := range cases {
		got, err := hbone.ParseAuthority(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseAuthority(%q) = %v, want an error (%s)", tc.in, got, tc.comment)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseAuthority(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestForwarded(t *testing.T) {
	cases := []struct {
		in   string
		want hbone.Forwarded
		err  bool
	}{
		{in: `for="10.0.0.9:41234"`, want: hbone.Forwarded{For: netip.MustParseAddrPort("10.0.0.9:41234")}},
		{in: `for="10.0.0.9:41234";host=web.ns.svc.cluster.local`, want: hbone.Forwarded{For: netip.MustParseAddrPort("10.0.0.9:41234"), Host: "web.ns.svc.cluster.local"}},
		{in: `For=10.0.0.9; Host="a b"`, want: hbone.Forwarded{For: netip.MustParseAddrPort("10.0.0.9:0"), Host: "a b"}},
		{in: `for="[2001:db8::1]:5000";proto=tcp`, want: hbone.Forwarded{For: netip.MustParseAddrPort("[2001:db8::1]:5000")}},
		{in: `for="[2001:db8::1]"`, want: hbone.Forwarded{For: netip.MustParseAddrPort("[2001:db8::1]:0")}},
		{in: `for="10.0.0.9:1", for="10.0.0.8:2"`, want: hbone.Forwarded{For: netip.MustParseAddrPort("10.0.0.9:1")}},
		{in: `host=svc`, want: hbone.Forwarded{Host: "svc"}},
		{in: `for=unknown`, err: true},
		{in: `for="_hidden"`, err: true},
		{in: `for="2001:db8::1"`, err: true},
		{in: `for="10.0.0.9:1`, err: true},
		{in: `for`, err: true},
		{in: ``, err: true},
		{in: `for="10.0.0.9:1" host=x`, err: true},
	}
	for _, tc := range cases {
		got, err := hbone.ParseForwarded(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("ParseForwarded(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseForwarded(%q): %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, got, cmpAddr); d != "" {
			t.Errorf("ParseForwarded(%q) (-want +got):\n%s", tc.in, d)
		}
	}
	f := hbone.Forwarded{For: netip.MustParseAddrPort("[2001:db8::1]:5000"), Host: "weird host"}
	if got, want := f.String(), `for="[2001:db8::1]:5000";host="weird host"`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}

func TestBaggage(t *testing.T) {
	full := hbone.Baggage{ClusterName: "K1", Namespace: "NS1", WorkloadKind: "deployment", WorkloadName: "N1", ServiceName: "N2", ServiceVersion: "V1", Region: "r", Zone: "z"}
	cases := []struct {
		name string
		in   []string
		want hbone.Baggage
		err  bool
	}{
		{name: "ztunnel's", in: []string{"k8s.cluster.name=K1,k8s.namespace.name=NS1,k8s.deployment.name=N1,service.name=N2,service.version=V1,cloud.region=r,cloud.availability_zone=z"}, want: full},
		{name: "several lines", in: []string{"k8s.cluster.name=K1", "k8s.namespace.name=NS1, k8s.pod.name=p1"}, want: hbone.Baggage{ClusterName: "K1", Namespace: "NS1", WorkloadKind: "pod", WorkloadName: "p1"}},
		{name: "empty values", in: []string{"k8s.cluster.name=,k8s.deployment.name="}, want: hbone.Baggage{}},
		{name: "properties and unknown keys", in: []string{"service.name=a;prop=1, other=x,"}, want: hbone.Baggage{ServiceName: "a"}},
		{name: "percent-encoded", in: []string{"service.name=a%2Cb%20c"}, want: hbone.Baggage{ServiceName: "a,b c"}},
		{name: "none", in: nil, want: hbone.Baggage{}},
		{name: "member without =", in: []string{"service.name"}, err: true},
		{name: "bad escape", in: []string{"service.name=%zz"}, err: true},
	}
	for _, tc := range cases {
		got, err := hbone.ParseBaggage(tc.in...)
		if tc.err {
			if err == nil {
				t.Errorf("%s: ParseBaggage(%q) = %+v, want an error", tc.name, tc.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, d)
		}
	}
	if got, want := full.String(), "k8s.cluster.name=K1,k8s.namespace.name=NS1,k8s.deployment.name=N1,service.name=N2,service.version=V1,cloud.region=r,cloud.availability_zone=z"; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	if got := (hbone.Baggage{}).String(); got != "" {
		t.Errorf("empty Baggage formats as %q", got)
	}
}

func TestTraceParent(t *testing.T) {
	ok := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tp, err := hbone.ParseTraceParent(ok)
	if err != nil {
		t.Fatal(err)
	}
	if tp.String() != ok || tp.Flags != 1 || tp.TraceID[0] != 0x4b || tp.ParentID[7] != 0xb7 {
		t.Fatalf("parsed %+v from %s", tp, ok)
	}
	if _, err := hbone.ParseTraceParent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"); err != nil {
		t.Errorf("future version with extra fields refused: %v", err)
	}
	for _, bad := range []string{
		"",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // v00 with more
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // version ff
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    // upper case
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // zero trace id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // zero parent
		"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",    // separator
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01xyz", // no '-' before extra
	} {
		if got, err := hbone.ParseTraceParent(bad); err == nil {
			t.Errorf("ParseTraceParent(%q) = %v, want an error", bad, got)
		}
	}
	a, b := hbone.NewTraceParent(), hbone.NewTraceParent()
	if !a.IsValid() || a == b {
		t.Fatalf("NewTraceParent: %v, %v", a, b)
	}
	if back, err := hbone.ParseTraceParent(a.String()); err != nil || back != a {
		t.Fatalf("round trip of %v: %v, %v", a, back, err)
	}
}

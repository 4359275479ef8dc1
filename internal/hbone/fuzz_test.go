package hbone_test

import (
	"strings"
	"testing"

	"github.com/ambitmesh/ambit/internal/hbone"
)

// Each target checks that the parser never panics and that whatever it
// accepts formats back into something it parses to the same value.

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.0.0.7:8080", "[fd00::7]:443", "[::ffff:1.2.3.4]:1", "a:1", "[fe80::1%eth0]:80", ":80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := hbone.ParseAuthority(s)
		if err != nil {
			return
		}
		if ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() {
			t.Fatalf("ParseAuthority(%q) accepted %v", s, ap)
		}
		back, err := hbone.ParseAuthority(ap.String())
		if err != nil || back != ap {
			t.Fatalf("round trip %q -> %v -> %v, %v", s, ap, back, err)
		}
	})
}

func FuzzParseForwarded(f *testing.F) {
	for _, s := range []string{`for="10.0.0.9:41234";host=web.ns.svc.cluster.local`, `for=1.2.3.4`, `for="[::1]:5";proto=tcp, for=2.2.2.2`, `host="a\"b"`, `for="`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fw, err := hbone.ParseForwarded(s)
		if err != nil {
			return
		}
		if !fw.For.IsValid() && fw.Host == "" {
			return // only unknown parameters
		}
		if strings.ContainsFunc(fw.Host, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("ParseForwarded(%q) let a control character into Host %q", s, fw.Host)
		}
		back, err := hbone.ParseForwarded(fw.String())
		if err != nil || back != fw {
			t.Fatalf("round trip %q -> %+v -> %q -> %+v, %v", s, fw, fw.String(), back, err)
		}
	})
}

func FuzzParseBaggage(f *testing.F) {
	for _, s := range []string{"k8s.cluster.name=K1,k8s.namespace.name=NS1,k8s.deployment.name=N1,service.name=N2,service.version=V1", "service.name=a%2Cb;p=1", "k8s.pod.name=", "=", ",,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := hbone.ParseBaggage(s)
		if err != nil {
			return
		}
		out := b.String()
		back, err := hbone.ParseBaggage(out)
		if err != nil {
			t.Fatalf("ParseBaggage(%q) -> %+v -> %q: %v", s, b, out, err)
		}
		// An empty kind formats as "deployment".
		if b.WorkloadName != "" && b.WorkloadKind == "" {
			b.WorkloadKind = "deployment"
		}
		if back != b {
			t.Fatalf("round trip %q -> %+v -> %q -> %+v", s, b, out, back)
		}
	})
}

func FuzzParseTraceParent(f *testing.F) {
	for _, s := range []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", "ff-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := hbone.ParseTraceParent(s)
		if err != nil {
			return
		}
		if !tp.IsValid() {
			t.Fatalf("accepted an invalid traceparent from %q", s)
		}
		back, err := hbone.ParseTraceParent(tp.String())
		if err != nil || back != tp {
			t.Fatalf("round trip %q -> %v -> %v, %v", s, tp, back, err)
		}
	})
}

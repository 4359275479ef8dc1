package proxy_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambitmesh/ambit/internal/node/proxy"
)

func TestServiceTargetPickRoundRobin(t *testing.T) {
	eps := []proxy.Endpoint{
		{Addr: netip.MustParseAddrPort("10.0.0.1:8080")},
		{Addr: netip.MustParseAddrPort("10.0.0.2:8080")},
		{Addr: netip.MustParseAddrPort("10.0.0.3:8080")},
	}
	for _, tc := range []struct {
		name  string
		eps   []proxy.Endpoint
		picks int
		want  []string
	}{
		{"none", nil, 2, nil},
		{"one", eps[:1], 3, []string{"10.0.0.1:8080", "10.0.0.1:8080", "10.0.0.1:8080"}},
		{"three wrap around", eps, 7, []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.1:8080"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &proxy.ServiceTarget{Endpoints: tc.eps}
			var got []string
			for range tc.picks {
				if ep, ok := st.Pick(); ok {
					got = append(got, ep.Addr.String())
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("picks (-want +got):\n%s", diff)
			}
		})
	}
}

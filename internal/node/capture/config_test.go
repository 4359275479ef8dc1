package capture_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/ambitmesh/ambit/internal/node/capture"
)

func TestValidate(t *testing.T) {
	mod := func(f func(*capture.Config)) capture.Config {
		c := capture.DefaultConfig()
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		cfg     capture.Config
		wantErr []string // substrings, each must appear; none means valid
	}{
		{"default", capture.DefaultConfig(), nil},
		{"host mode with scope", mod(func(c *capture.Config) {
			c.Mode = capture.ModeHost
			c.OutboundSources = []netip.Prefix{netip.MustParsePrefix("192.168.1.5/32")}
			c.InboundDestinations = []netip.Prefix{netip.MustParsePrefix("192.168.1.5/32")}
		}), nil},
		{"host mode without scope", mod(func(c *capture.Config) {
			c.Mode = capture.ModeHost
			c.InboundPorts = []uint16{8080}
			c.OutboundInclude = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
		}), []string{"OutboundSources is empty", "InboundDestinations is empty"}},
		{"bad destination prefix", mod(func(c *capture.Config) { c.InboundDestinations = []netip.Prefix{{}} }), []string{"InboundDestinations[0]"}},
		{"zero port", mod(func(c *capture.Config) { c.OutboundPort = 0 }), []string{"OutboundPort is 0"}},
		{"same ports", mod(func(c *capture.Config) { c.InboundHBONEPort = c.InboundPlaintextPort }), []string{"must differ"}},
		{"mark outside mask", mod(func(c *capture.Config) { c.TProxyMark = 0x1000 }), []string{"TProxyMark 0x1000"}},
		{"equal marks", mod(func(c *capture.Config) { c.TProxyMark = c.ProxyMark }), []string{"must differ"}},
		{"main table", mod(func(c *capture.Config) { c.RouteTable = 254 }), []string{"RouteTable 254"}},
		{"priority after main", mod(func(c *capture.Config) { c.RulePriority = 32766 }), []string{"RulePriority 32766"}},
		{"inbound port is a proxy port", mod(func(c *capture.Config) { c.InboundPorts = []uint16{15008} }), []string{"InboundPorts[0] = 15008"}},
		{"bad prefix", mod(func(c *capture.Config) { c.OutboundInclude = []netip.Prefix{{}} }), []string{"OutboundInclude[0]"}},
		{"unknown mode", mod(func(c *capture.Config) { c.Mode = 7 }), []string{"Mode 7"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if !errors.Is(err, capture.ErrInvalidConfig) {
				t.Fatalf("Validate() = %v; want ErrInvalidConfig", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q; want it to mention %q", err, w)
				}
			}
		})
	}
}

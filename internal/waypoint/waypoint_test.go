package waypoint_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/waypoint"
)

// TestWaypointServesHBONE: a node identity CONNECTs to the waypoint with a
// bound service's VIP:port and speaks HTTP inside the tunnel; the GAMMA
// route picks the backend.
func TestWaypointServesHBONE(t *testing.T) {
	v1, v2 := startEcho(t, wmV1IP, "v1"), startEcho(t, wmV2IP, "v2")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), fmt.Sprintf(waypointMeshTmpl, v1, v2))

	ctx := t.Context()
	cp := controltest.Start(t, dir)
	opts := gatewayOptions(t, cp, "shop/web-waypoint")
	opts.Waypoint, opts.HBONEAddress, opts.HBONEPort, opts.PlaintextUpstreams = true, "127.0.0.1", uint16(freePort(t)), true
	g, _ := serve(t, ctx, opts)

	// The client is a node proxy: joined with a node token.
	td := spiffeid.RequireTrustDomainFromString(opts.TrustDomain)
	sess := controltest.JoinNode(t, cp, "node-a", waypoint.TypeURLs)
	nodeID := sess.ID
	d, err := hbone.NewDialer(hbone.DialerConfig{Source: sess.Certs, Bundle: sess.Bundle, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	wpID, _ := identity.WorkloadID(td, "shop", "web-waypoint")
	hboneAddr := netip.MustParseAddrPort(g.Addr("hbone").String())

	for _, tc := range []struct {
		name, authority string
		hdr             map[string]string
		status          int // CONNECT refused with this code, or the HTTP status inside
		pod             string
	}{
		{"default rule", wmVIP + ":80", nil, 200, "v1"},
		{"header match", wmVIP + ":80", map[string]string{"x-region": "eu"}, 200, "v2"},
		{"unknown authority", "240.240.0.99:80", nil, 400, ""},
		// web-v1 is a route backend in the snapshot, not bound to the waypoint.
		{"route backend's VIP", "240.240.0.31:80", nil, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := d.Dial(ctx, &hbone.DialRequest{Address: hboneAddr, Authority: tc.authority, Source: nodeID, Destination: []spiffeid.ID{wpID}})
			var se *hbone.StatusError
			if errors.As(err, &se) {
				if se.Code != tc.status || tc.pod != "" {
					t.Fatalf("CONNECT %s: %v, want HTTP %d inside", tc.authority, err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			status, b, err := requestOn(conn, "GET", "http://web.shop.svc.cluster.local/", tc.hdr)
			if err != nil {
				t.Fatal(err)
			}
			var e echo.Response
			_ = json.Unmarshal(b, &e)
			if status != tc.status || e.Pod != tc.pod {
				t.Errorf("got %d from %q, want %d from %q (%s)", status, e.Pod, tc.status, tc.pod, b)
			}
		})
	}

	// A stream opening with the HTTP/2 preface is served as h2c, kept
	// alive for several requests.
	t.Run("h2c", func(t *testing.T) {
		conn, err := d.Dial(ctx, &hbone.DialRequest{Address: hboneAddr, Authority: wmVIP + ":80", Source: nodeID, Destination: []spiffeid.ID{wpID}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(context.Context, string, string, *tls.Config) (net.Conn, error) { return conn, nil }}
		defer tr.CloseIdleConnections()
		for range 2 {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://web.shop.svc.cluster.local/", nil)
			req.Header.Set("X-Region", "eu")
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			var e echo.Response
			err = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 || e.Pod != "v2" {
				t.Fatalf("%s %d from %q, %v; want HTTP/2 200 from v2", resp.Proto, resp.StatusCode, e.Pod, err)
			}
		}
	})
}

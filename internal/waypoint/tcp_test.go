package waypoint_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	nodeproxy "github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/testkit"
)

// Addresses of TestWaypointTCPStreams.
const (
	tsClientIP   = "127.0.0.92"
	tsAPIIP      = "127.0.0.93"
	tsWaypointIP = "127.0.0.94"
	tsVIP        = "240.240.0.50"
	tsEmptyVIP   = "240.240.0.51"
)

// tsEmpty is a service bound to the waypoint whose selector matches no
// workload.
const tsEmpty = `---
apiVersion: v1
kind: Service
metadata:
  name: empty
  namespace: shop
  labels: {ambit.dev/use-waypoint: api-waypoint}
spec:
  clusterIP: ` + tsEmptyVIP + `
  selector: {app: nobody}
  ports:
  - {name: raw, port: 9000, appProtocol: tcp}
`

// TestWaypointTCPStreams: the waypoint's TCP pass-through applies a policy
// change made while the stream's dial is in flight, closes a stream idle
// for the TCP idle timeout, and logs a stream to a service without
// endpoints; each with its access log line and Envoy flag.
func TestWaypointTCPStreams(t *testing.T) {
	httpPort, tcpPort := startEchoTCP(t, tsAPIIP, "api")
	mesh := strings.NewReplacer(ptClientIP, tsClientIP, ptAPIIP, tsAPIIP, ptWaypointIP, tsWaypointIP, ptVIP, tsVIP).Replace(passthroughMeshTmpl)
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	writeFile(t, file, fmt.Sprintf(mesh, httpPort, tcpPort, tsEmpty))
	hbonePort := testkit.CommonPort(t, tsClientIP, tsAPIIP, tsWaypointIP)
	httpListen := explicitListen(t, tsClientIP)
	tcpListen := explicitListen(t, tsClientIP)
	emptyListen := explicitListen(t, tsClientIP)
	httpVIP := netip.AddrPortFrom(netip.MustParseAddr(tsVIP), 80)

	ctx := t.Context()
	cp := controltest.Start(t, dir)
	// armed holds the release channel of the next pass-through dial to
	// hold; dialing says it is held.
	armed, dialing := make(chan chan struct{}, 1), make(chan struct{})
	access := &testkit.LogBuffer{}
	opts := gatewayOptions(t, cp, "shop/api-waypoint")
	opts.Waypoint, opts.HBONEAddress, opts.HBONEPort, opts.UpstreamHBONEPort = true, tsWaypointIP, hbonePort, hbonePort
	opts.AccessLog = slog.New(slog.NewJSONHandler(access, nil))
	const idle = 300 * time.Millisecond
	opts.TCPIdleTimeout = idle
	opts.BeforeTCPDial = func() {
		select {
		case release := <-armed:
			dialing <- struct{}{}
			<-release
		default:
		}
	}
	serve(t, ctx, opts)

	nodeA := startNode(t, ctx, cp, "node-a", hbonePort, []nodeproxy.Explicit{
		{Listen: httpListen, Target: httpVIP, Source: "shop/client-1"},
		{Listen: tcpListen, Target: netip.AddrPortFrom(netip.MustParseAddr(tsVIP), 9000), Source: "shop/client-1"},
		{Listen: emptyListen, Target: netip.AddrPortFrom(netip.MustParseAddr(tsEmptyVIP), 9000), Source: "shop/client-1"},
	})
	nodeB := startNode(t, ctx, cp, "node-b", hbonePort, nil)
	eventually(t, "node-a to route the VIPs through the waypoint", func() bool {
		c := nodeA.proxy.Config()
		st := c.Service(httpVIP)
		return st != nil && st.Service.GetWaypoint().GetName() == "api-waypoint" && len(c.GatewayWorkloads("shop/api-waypoint")) == 1 &&
			c.Service(netip.AddrPortFrom(netip.MustParseAddr(tsEmptyVIP), 9000)) != nil && len(nodeA.proxy.ExplicitAddrs()) == 3
	})
	eventually(t, "node-b to serve HBONE", func() bool {
		return slices.Contains(nodeB.proxy.InboundAddrs(), netip.AddrPortFrom(netip.MustParseAddr(tsAPIIP), hbonePort))
	})
	status := func() int {
		s, _, err := request(httpListen, "GET", "http://api.shop.svc.cluster.local/", nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// logged waits for the waypoint's access log line with flags whose
	// error contains errPart.
	logged := func(t *testing.T, flags, errPart string) map[string]any {
		t.Helper()
		var line map[string]any
		eventually(t, "a "+flags+" access log line", func() bool {
			for _, r := range access.Records(t) {
				if r["msg"] == "connection complete" && r["response_flags"] == flags && strings.Contains(fmt.Sprint(r["error"]), errPart) {
					line = r
					return true
				}
			}
			return false
		})
		return line
	}
	// closed asserts the waypoint ends the client's stream (closed, or
	// reset for the client's unread bytes) without echoing.
	closed := func(t *testing.T, c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if b, err := io.ReadAll(c); len(b) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read %q, %v; want the stream closed by the waypoint, nothing echoed", b, err)
		}
	}

	t.Run("policy change during the dial", func(t *testing.T) {
		release := make(chan struct{})
		armed <- release
		c, err := net.Dial("tcp", tcpListen.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "hello"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-dialing:
		case <-time.After(10 * time.Second):
			t.Fatal("the waypoint did not dial")
		}
		writeFile(t, file, fmt.Sprintf(mesh, httpPort, tcpPort, tsEmpty+othersOnly))
		eventually(t, "the ALLOW for another principal to apply", func() bool { return status() == 403 })
		close(release)
		closed(t, c)
		logged(t, telemetry.FlagDenied, "closed after a policy change")
		writeFile(t, file, fmt.Sprintf(mesh, httpPort, tcpPort, tsEmpty))
		eventually(t, "no policies: allowed again", func() bool { return status() == 200 })
	})

	t.Run("idle timeout", func(t *testing.T) {
		c, err := net.Dial("tcp", tcpListen.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "hi"); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 2)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "hi" {
			t.Fatalf("echoed %q, %v; want hi", got, err)
		}
		start := time.Now()
		closed(t, c)
		if d := time.Since(start); d < idle {
			t.Errorf("closed %v after the last byte, before the idle timeout %v", d, idle)
		}
		logged(t, telemetry.FlagIdleTimeout, "without a byte either way")
	})

	t.Run("no endpoint", func(t *testing.T) {
		c, err := net.Dial("tcp", emptyListen.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "hello")
		closed(t, c)
		if l := logged(t, "UH", "has no endpoint"); !strings.Contains(fmt.Sprint(l["dst"]), "empty.shop") {
			t.Errorf("access log line %v: want the service empty", l)
		}
	})
}

package proxyboot_test

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/node/proxy"
	"github.com/ambitmesh/ambit/internal/proxyboot"
)

// Options.Dial makes the join's connection too, not only the later ones: a
// node whose control-plane connections must carry a socket mark (host
// capture) could not join otherwise.
func TestJoinDialsThroughOptionsDial(t *testing.T) {
	cp := controltest.Start(t, t.TempDir())
	tok := controltest.Token(t, cp, "node/node-a")
	id, err := identity.NodeID(spiffeid.RequireTrustDomainFromString(tok.TrustDomain), "node-a")
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	sess, err := proxyboot.Join(t.Context(), proxyboot.Options{
		ControlPlane: cp.XDSAddr().String(), Token: tok.Token, CAPin: tok.CAPin, ID: id,
		NodeID: "node/node-a", TypeURLs: proxy.TypeURLs, Logger: slog.New(slog.DiscardHandler),
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	// The xDS connection is lazy: by now only the join has connected.
	if dials.Load() == 0 {
		t.Error("Join connected to the control plane without Options.Dial")
	}
}

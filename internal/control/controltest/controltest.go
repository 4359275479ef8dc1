// Package controltest runs the control plane for other packages' tests and
// benchmarks: on a config folder, on loopback ports the kernel picks, until
// the test ends; it issues join tokens from it as `ambit token create` does
// and joins node proxies to it.
package controltest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/proxyboot"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Start runs the control plane on the config folder dir until tb's context
// ends, once it is ready; the end of the test waits until it has stopped
// and fails the test if it stopped with an error.
func Start(tb testing.TB, dir string) *control.Control {
	tb.Helper()
	cp := control.New(control.Options{
		ConfigDir: dir, StateDir: tb.TempDir(), XDSAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		// Tests edit the folder and wait for the result: apply edits quickly.
		Debounce: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	done := make(chan error, 1)
	go func() { done <- cp.Run(tb.Context()) }()
	select {
	case <-cp.Ready():
	case err := <-done:
		tb.Fatalf("control plane: %v", err)
	}
	tb.Cleanup(func() {
		if err := <-done; err != nil {
			tb.Errorf("control plane: %v", err)
		}
	})
	return cp
}

// Token creates a join token for subject ("node/NAME" or
// "gateway/NAMESPACE/NAME") through cp's admin endpoint.
func Token(tb testing.TB, cp *control.Control, subject string) control.TokenResponse {
	tb.Helper()
	tok, err := control.RequestToken(context.Background(), cp.AdminAddr().String(), control.TokenRequest{Subject: subject})
	if err != nil {
		tb.Fatal(err)
	}
	if tok.Token == "" {
		tb.Fatalf("token for %s: empty", subject)
	}
	return tok
}

// JoinNode joins cp as node proxy name, as `ambit node` does, subscribed
// to types; the session is closed when the test ends. Run its certificates
// and xDS client with RunBackground.
func JoinNode(tb testing.TB, cp *control.Control, name string, types []string) *proxyboot.Session {
	tb.Helper()
	tok := Token(tb, cp, "node/"+name)
	id, err := identity.NodeID(spiffeid.RequireTrustDomainFromString(tok.TrustDomain), name)
	if err != nil {
		tb.Fatal(err)
	}
	sess, err := proxyboot.Join(tb.Context(), proxyboot.Options{
		ControlPlane: cp.XDSAddr().String(), Token: tok.Token, CAPin: tok.CAPin, ID: id,
		NodeID: "node/" + name, TypeURLs: types, Logger: slog.New(slog.DiscardHandler),
		// Reconnect quickly when a test restarts or edits something.
		XDSBackoff: xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sess.Close() })
	return sess
}

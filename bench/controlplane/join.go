package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/identity"
)

// JoinNode does what a node proxy does before it can subscribe: it asks the
// control plane's admin endpoint (loopback only) for a join token for
// node/<node>, joins with it over the xDS port (identity.Join: pinned CA,
// CSR, node certificate) and returns the mTLS credentials for the xDS
// channel. The certificate is not renewed: benchmarks run far shorter than
// its lifetime.
func JoinNode(ctx context.Context, adminAddr, xdsAddr, node string) (credentials.TransportCredentials, error) {
	tok, err := control.RequestToken(ctx, adminAddr, control.TokenRequest{Subject: "node/" + node})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(tok.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("bench: join token for %s: trust domain %q: %w", node, tok.TrustDomain, err)
	}
	id, err := identity.NodeID(td, node)
	if err != nil {
		return nil, err
	}
	res, err := identity.Join(ctx, xdsAddr, tok.Token, tok.CAPin, id)
	if err != nil {
		return nil, err
	}
	bundle := identity.NewBundle(td, nil)
	if _, err := bundle.SetRootsAt(res.Generation, res.Roots); err != nil {
		return nil, err
	}
	cert := res.Certificate
	src := identity.SourceFunc(func(context.Context, spiffeid.ID) (*tls.Certificate, error) { return cert, nil })
	cfg, err := identity.ClientConfig(src, bundle, id, []spiffeid.ID{identity.ControlID(td)})
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

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
	body, err := json.Marshal(control.TokenRequest{Subject: "node/" + node})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+adminAddr+"/ca/tokens", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: join token for %s: %w", node, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("bench: join token for %s: %s: %s", node, resp.Status, msg)
	}
	var tok control.TokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return nil, fmt.Errorf("bench: join token for %s: %w", node, err)
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

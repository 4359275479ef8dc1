// Package xdstest holds a bearer-token Authenticator for tests and
// benchmarks of the xDS server, which need authenticated streams without
// standing up a CA. Production streams are authenticated by mTLS (ca.Service).
package xdstest

import (
	"context"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TokenAuthenticator maps bootstrap tokens to the node ID each one allows.
// Proxies present the token as gRPC metadata "authorization: Bearer <token>".
type TokenAuthenticator map[string]string

// Authenticate implements xds.Authenticator.
func (t TokenAuthenticator) Authenticate(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return "", status.Error(codes.Unauthenticated, `xds: want exactly one "authorization: Bearer <token>" metadata entry`)
	}
	token, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || token == "" {
		return "", status.Error(codes.Unauthenticated, `xds: authorization metadata: want "Bearer <token>"`)
	}
	// Compare against every token in constant time so response timing does
	// not reveal how much of a guess was right.
	var node string
	for tok, n := range t {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(token)) == 1 {
			node = n
		}
	}
	if node == "" {
		return "", status.Error(codes.Unauthenticated, "xds: unknown bootstrap token")
	}
	return node, nil
}

// BearerToken is the client side of TokenAuthenticator, for
// grpc.WithPerRPCCredentials.
type BearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b BearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials; tests
// run it over plaintext loopback.
func (BearerToken) RequireTransportSecurity() bool { return false }

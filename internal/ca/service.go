package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
)

// Authorizer answers, from the mesh model, which identities a proxy may
// hold. The control plane implements it over its latest translation; it
// must be cheap and safe for concurrent use.
type Authorizer interface {
	// NodeServes reports whether the mesh has a Workload with SPIFFE ID
	// spiffeID on node, so that node's proxy may hold its certificate.
	NodeServes(node, spiffeID string) bool
	// GatewayExists reports whether the waypoint/gateway namespace/name
	// exists. Its proxy holds spiffe://<td>/ns/<namespace>/sa/<name>;
	// without this check any holder of a workload certificate could renew
	// it forever or subscribe to xDS as a gateway.
	GatewayExists(namespace, name string) bool
}

// ServiceOptions configure a Service.
type ServiceOptions struct {
	// Authorizer is required.
	Authorizer Authorizer
	// Tokens redeems join tokens; without it Join is refused.
	Tokens *TokenStore
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Service is the gRPC CertificateService, served next to xDS on the
// control plane's port with ServerTLSConfig.
//
// Who may ask for what:
//   - Join (no client certificate): a valid join token for a subject, and a
//     CSR for that subject's identity (spiffe://<td>/ambit/node/<node> or,
//     for gateway ns/name, spiffe://<td>/ns/<ns>/sa/<name>).
//   - CreateCertificate (client certificate verified against the bundle, in
//     the trust domain): a node proxy may renew its own identity and get
//     workload identities that have a Workload on its node; a gateway only
//     its own identity, and only while the Gateway exists.
//
// Everything else is refused with a gRPC status and a log line naming the
// caller and the identity it asked for; nothing is issued.
type Service struct {
	cav1.UnimplementedCertificateServiceServer
	ca   *CA
	opts ServiceOptions
	log  *slog.Logger
}

// NewService builds the service; it does no I/O.
func NewService(ca *CA, opts ServiceOptions) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Service{ca: ca, opts: opts, log: opts.Logger}
}

// Register adds the service to gs.
func (s *Service) Register(gs *grpc.Server) { cav1.RegisterCertificateServiceServer(gs, s) }

// Join implements cav1.CertificateServiceServer.
func (s *Service) Join(ctx context.Context, req *cav1.JoinRequest) (*cav1.JoinResponse, error) {
	caller := "join token " + tokenIDOf(req.GetToken())
	if s.opts.Tokens == nil {
		return nil, s.refuse(ctx, "Join", caller, "", "bad_token",
			status.Error(codes.FailedPrecondition, "ca: this control plane does not accept join tokens"))
	}
	var (
		iss *Issued
		id  spiffeid.ID
	)
	err := s.opts.Tokens.Redeem(req.GetToken(), func(sub Subject) error {
		var err error
		caller = fmt.Sprintf("%s (%s)", caller, sub)
		if id, err = sub.ID(s.ca.td); err != nil {
			return err
		}
		iss, err = s.ca.SignCSR(req.GetCsrPem(), id, 0)
		return err
	})
	if err != nil {
		return nil, s.refuseErr(ctx, "Join", caller, id.String(), err)
	}
	kind := "node"
	if ParseID(id).Kind == IdentityWorkload {
		kind = "gateway"
	}
	issuedTotal.WithLabelValues(kind).Inc()
	s.log.Info("joined: issued proxy certificate", "caller", caller, "peer", peerAddr(ctx),
		"identity", id.String(), "expires", iss.Chain[0].NotAfter)
	return &cav1.JoinResponse{
		CertChainPem: iss.ChainPEM(), TrustBundlePem: iss.Bundle.PEM, TrustBundleGeneration: iss.Bundle.Generation,
	}, nil
}

// CreateCertificate implements cav1.CertificateServiceServer.
func (s *Service) CreateCertificate(ctx context.Context, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
	const rpc = "CreateCertificate"
	callerID, err := s.ca.VerifyPeerContext(ctx)
	if err != nil {
		caller := "unauthenticated peer"
		if !callerID.IsZero() {
			caller = callerID.String()
		}
		return nil, s.refuseErr(ctx, rpc, caller, req.GetIdentity(), err)
	}
	caller := callerID.String()
	want, err := spiffeid.FromString(req.GetIdentity())
	if err != nil {
		return nil, s.refuse(ctx, rpc, caller, req.GetIdentity(), "invalid_argument",
			status.Errorf(codes.InvalidArgument, "ca: identity %q: %v; want spiffe://%s/ns/<namespace>/sa/<service account>", req.GetIdentity(), err, s.ca.td))
	}
	if !want.MemberOf(s.ca.td) {
		return nil, s.refuse(ctx, rpc, caller, want.String(), "foreign_trust_domain",
			status.Errorf(codes.PermissionDenied, "ca: identity %s is not in the trust domain %q", want, s.ca.td))
	}
	kind, err := s.authorize(callerID, want)
	if err != nil {
		return nil, s.refuse(ctx, rpc, caller, want.String(), "permission_denied", err)
	}
	iss, err := s.ca.SignCSR(req.GetCsrPem(), want, req.GetValidity().AsDuration())
	if err != nil {
		return nil, s.refuseErr(ctx, rpc, caller, want.String(), err)
	}
	issuedTotal.WithLabelValues(kind).Inc()
	s.log.Info("issued certificate", "caller", caller, "identity", want.String(), "expires", iss.Chain[0].NotAfter)
	return &cav1.CreateCertificateResponse{
		CertChainPem: iss.ChainPEM(), TrustBundlePem: iss.Bundle.PEM, TrustBundleGeneration: iss.Bundle.Generation,
	}, nil
}

// authorize decides whether caller may get want; it returns the metric
// kind of the certificate or a PermissionDenied status.
func (s *Service) authorize(caller, want spiffeid.ID) (string, error) {
	c, w := ParseID(caller), ParseID(want)
	switch c.Kind {
	case IdentityNode:
		if caller == want {
			return "node", nil
		}
		if w.Kind != IdentityWorkload {
			return "", status.Errorf(codes.PermissionDenied, "ca: node %s may request its own identity and workload identities (spiffe://%s/ns/<ns>/sa/<sa>), not %s", c.Node, s.ca.td, want)
		}
		if !s.opts.Authorizer.NodeServes(c.Node, want.String()) {
			return "", status.Errorf(codes.PermissionDenied, "ca: node %s has no Workload with identity %s; a node proxy may only get certificates for workloads on its own node", c.Node, want)
		}
		return "workload", nil
	case IdentityWorkload:
		if !s.opts.Authorizer.GatewayExists(c.Namespace, c.ServiceAccount) {
			return "", status.Errorf(codes.PermissionDenied, "ca: %s is a workload identity and there is no gateway %s/%s; only node proxies and gateways may request certificates", caller, c.Namespace, c.ServiceAccount)
		}
		if caller != want {
			return "", status.Errorf(codes.PermissionDenied, "ca: gateway %s/%s may only request its own identity %s, not %s", c.Namespace, c.ServiceAccount, caller, want)
		}
		return "gateway", nil
	default:
		return "", status.Errorf(codes.PermissionDenied, "ca: %s is neither a node proxy (spiffe://%s/ambit/node/<node>) nor a gateway; it may not request certificates", caller, s.ca.td)
	}
}

// Authenticate maps the verified client certificate of an xDS stream to
// its node ID: a node certificate to "node/<node>", a gateway's to
// "gateway/<namespace>/<name>" (only while that Gateway exists). It has
// the shape of xds.Authenticator; errors carry a gRPC status.
func (s *Service) Authenticate(ctx context.Context) (string, error) {
	sub, _, err := s.AuthenticateProxy(ctx)
	if err != nil {
		return "", err
	}
	return sub.String(), nil
}

// AuthenticateProxy is Authenticate returning the subject and identity.
func (s *Service) AuthenticateProxy(ctx context.Context) (Subject, spiffeid.ID, error) {
	id, err := s.ca.VerifyPeerContext(ctx)
	if err != nil {
		return Subject{}, id, status.Error(codes.Unauthenticated, err.Error())
	}
	p := ParseID(id)
	switch {
	case p.Kind == IdentityNode:
		return NodeSubject(p.Node), id, nil
	case p.Kind == IdentityWorkload && s.opts.Authorizer.GatewayExists(p.Namespace, p.ServiceAccount):
		return GatewaySubject(p.Namespace, p.ServiceAccount), id, nil
	}
	return Subject{}, id, status.Errorf(codes.PermissionDenied, "ca: %s is neither a node proxy nor an existing gateway's identity", id)
}

// refuseErr maps a CA error to a status and a metric reason, then refuses.
func (s *Service) refuseErr(ctx context.Context, rpc, caller, identity string, err error) error {
	var (
		code   codes.Code
		reason string
	)
	switch {
	case errors.Is(err, ErrNoClientCert):
		code, reason = codes.Unauthenticated, "unauthenticated"
	case errors.Is(err, ErrUntrusted):
		code, reason = codes.Unauthenticated, "untrusted_peer"
	case errors.Is(err, ErrForeignTrustDomain):
		code, reason = codes.Unauthenticated, "foreign_trust_domain"
	case errors.Is(err, ErrBadToken):
		code, reason = codes.Unauthenticated, "bad_token"
	case errors.Is(err, ErrInvalidCSR):
		code, reason = codes.InvalidArgument, "invalid_csr"
	case errors.Is(err, ErrIdentityMismatch):
		code, reason = codes.InvalidArgument, "identity_mismatch"
	case errors.Is(err, ErrBadSubject):
		code, reason = codes.InvalidArgument, "invalid_argument"
	default:
		code, reason = codes.Internal, "internal"
	}
	return s.refuse(ctx, rpc, caller, identity, reason, status.Error(code, err.Error()))
}

func (s *Service) refuse(ctx context.Context, rpc, caller, identity, reason string, err error) error {
	refusedTotal.WithLabelValues(reason).Inc()
	lvl := slog.LevelWarn
	if reason == "internal" {
		lvl = slog.LevelError
	}
	s.log.Log(ctx, lvl, "certificate request refused", "rpc", rpc, "caller", caller, "peer", peerAddr(ctx),
		"identity", identity, "reason", reason, "error", status.Convert(err).Message())
	return err
}

// tokenIDOf is the public id part of a token, for logs (never the secret).
func tokenIDOf(tok string) string {
	if id, _, ok := parseToken(tok); ok {
		return id
	}
	if strings.TrimSpace(tok) == "" {
		return "(none)"
	}
	return "(malformed)"
}

package echo

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/pem"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"

	echov1 "github.com/ambitmesh/ambit/proto/ambit/echo/v1"
)

// ConformanceService is the full name of the Gateway API conformance echo
// server's gRPC service. The server answers it too (methods Echo and
// EchoTwo; EchoThree is unimplemented, as upstream) with messages that are
// wire-compatible with upstream's, so GRPCRoute conformance cases can use
// `ambit echo` as their backend.
const ConformanceService = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"

func (s *Server) newGRPCServer() *grpc.Server {
	gs := grpc.NewServer(
		grpc.MaxRecvMsgSize(16<<20),
		grpc.MaxSendMsgSize(16<<20),
		grpc.MaxConcurrentStreams(1000),
	)
	svc := &grpcEcho{ctx: s.opts.Context}
	echov1.RegisterEchoServiceServer(gs, svc)
	gs.RegisterService(&conformanceDesc, svc)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(echov1.EchoService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs
}

type grpcEcho struct {
	echov1.UnimplementedEchoServiceServer
	ctx Context
}

func (g *grpcEcho) Echo(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	method, _ := grpc.Method(ctx)
	a := &echov1.Assertions{
		FullyQualifiedMethod: method,
		Context: &echov1.Context{
			Namespace:   g.ctx.Namespace,
			Ingress:     g.ctx.Ingress,
			ServiceName: g.ctx.Service,
			Pod:         g.ctx.Pod,
		},
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for k, vs := range md {
		for _, v := range vs {
			a.Headers = append(a.Headers, &echov1.Header{Key: k, Value: v})
		}
	}
	// Map order is random; sorted headers make answers comparable.
	slices.SortFunc(a.Headers, func(x, y *echov1.Header) int {
		return cmp.Or(cmp.Compare(x.Key, y.Key), cmp.Compare(x.Value, y.Value))
	})
	if v := md.Get(":authority"); len(v) > 0 {
		a.Authority = v[0]
	}
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			a.PeerAddress = p.Addr.String()
		}
		if p.LocalAddr != nil {
			a.LocalAddress = p.LocalAddr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			a.TlsAssertions = grpcTLS(&ti.State)
		}
	}
	return &echov1.EchoResponse{Assertions: a, Request: req}, nil
}

func grpcTLS(cs *tls.ConnectionState) *echov1.TLSAssertions {
	t := &echov1.TLSAssertions{
		Version:            tlsVersion(cs.Version),
		NegotiatedProtocol: cs.NegotiatedProtocol,
		ServerName:         cs.ServerName,
		CipherSuite:        tls.CipherSuiteName(cs.CipherSuite),
	}
	for _, c := range cs.PeerCertificates {
		t.PeerCertificates = append(t.PeerCertificates,
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	return t
}

// conformanceDesc serves the echo under the conformance service name; the
// handlers decode into ambit's messages, whose field numbers match upstream's.
var conformanceDesc = grpc.ServiceDesc{
	ServiceName: ConformanceService,
	HandlerType: (*echov1.EchoServiceServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Echo", Handler: conformanceHandler("Echo")},
		{MethodName: "EchoTwo", Handler: conformanceHandler("EchoTwo")},
	},
	Streams:  []grpc.StreamDesc{},
	Metadata: "grpcecho.proto",
}

func conformanceHandler(method string) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	full := "/" + ConformanceService + "/" + method
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(echov1.EchoRequest)
		if err := dec(in); err != nil {
			return nil, err
		}
		call := func(ctx context.Context, req any) (any, error) {
			return srv.(echov1.EchoServiceServer).Echo(ctx, req.(*echov1.EchoRequest))
		}
		if interceptor == nil {
			return call(ctx, in)
		}
		return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, call)
	}
}

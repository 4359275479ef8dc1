// Package identity holds a proxy's SPIFFE identities: the workload (and node)
// certificates a node proxy or waypoint presents, the trust bundle it checks
// peers against, and the TLS configurations built from both for HBONE and for
// the xDS/CA channel.
//
// Keys are ECDSA P-256, generated in this process and never written anywhere;
// the CA only sees CSRs. A Manager fetches one certificate per identity on
// first use, caches it, renews it at about half its lifetime and keeps
// serving the still-valid certificate while a renewal fails. TLS configs read
// the Manager and the Bundle on every handshake, so a renewed leaf or a
// rotated root takes effect on the next connection without restarting
// anything.
//
// Bootstrap of a node (file/host mode):
//
//	res, err := identity.Join(ctx, addr, token, pin, nodeID)   // pinned TLS, no client cert
//	bundle := identity.NewBundle(td, nil)
//	bundle.SetRootsAt(res.Generation, res.Roots)                  // later: SetRootsPEM from xDS TrustBundle
//	var m *identity.Manager
//	cached := identity.SourceFunc(func(ctx context.Context, id spiffeid.ID) (*tls.Certificate, error) {
//		return m.Current(id) // never fetch on the CA channel itself
//	})
//	tlsCfg, _ := identity.ClientConfig(cached, bundle, nodeID, []spiffeid.ID{identity.ControlID(td)})
//	conn, _ := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
//	m, _ = identity.NewManager(identity.Config{TrustDomain: td, Fetcher: identity.NewCAClient(conn), Bundle: bundle})
//	m.Install(nodeID, res.Certificate) // renewed like any other identity, via CreateCertificate
//	go m.Run(ctx)
package identity

// Package hbone is ambit's HBONE: TCP tunnelled as HTTP/2 CONNECT streams
// over SPIFFE mTLS to port 15008, wire-compatible with Istio's ztunnel. A
// Server terminates tunnels and hands each stream to a Handler that returns
// the upstream connection; a Dialer opens streams over a pool of
// connections keyed by (source identity, destination identities, address,
// source IP). See README.md for the wire format and the pool rules.
package hbone

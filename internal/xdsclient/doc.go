// Package xdsclient is the one delta-xDS client used by every ambit proxy
// (node proxy, waypoint, gateway). It speaks the aggregated delta protocol
// (envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources)
// to ambit's control plane and turns the stream of deltas into a sequence of
// immutable, validated snapshots. Its messages are ambit's wire-identical
// subset of Envoy's (proto/ambit/xds/v1), not go-control-plane's generated
// packages: those register the descriptors of Envoy's config and annotation
// protos at init, megabytes of every proxy's memory.
//
// Guarantees:
//
//   - Readers never see a half-applied or invalid configuration. Each
//     DeltaDiscoveryResponse is applied to a new candidate snapshot that
//     shares everything unchanged with the current one (the resources of a
//     type are a persistent map, so a delta costs O(delta * log n)); the
//     candidate is unpacked and validated (Config.Validate) as a whole and is
//     either swapped in atomically and ACKed, or NACKed with the error message in
//     error_detail while the previous snapshot stays in force untouched.
//   - The last good configuration is never dropped because the control plane
//     went away: disconnects, failed dials and NACKs leave Current() unchanged.
//     Only the control plane itself (by sending removals) can remove resources.
//   - Snapshots are immutable and published through an atomic pointer, so
//     Current() is lock-free and safe on the data path. Generation increases by
//     one for every accepted response, across reconnects.
//   - Reconnects use exponential backoff with full jitter; on every new stream
//     the client resubscribes to each type with initial_resource_versions of
//     what it holds, so the server sends only the differences.
//   - New does no I/O. Run does all of it and returns once its context ends,
//     leaving no goroutines behind.
//
// Resource payloads are resolved through protoregistry.GlobalTypes, so any
// generated protobuf type works as long as its Go package is linked in.
package xdsclient

// Package demo runs `ambit demo`: it brings a small mesh up on this machine with the real
// components — `ambit control` with a generated config folder, two `ambit node` processes, an
// `ambit waypoint` for the reviews service and `ambit echo` apps as the services — and walks through
// scenarios whose results it checks: a call through the mesh with the identities both node proxies
// proved, a 90/10 canary split, header routing, a denying AuthorizationPolicy, a live policy edit,
// and a short load run.
//
// Two ways to lay the mesh out (mode.go picks one and says why):
//
//   - netns (root on Linux with nftables): each node and pod is a network namespace (package lab),
//     pods are enrolled for transparent capture, apps dial service VIPs unchanged;
//   - loopback (anywhere else): every process on its own 127.42.x.y address, apps dial the node
//     proxies' explicit-mode listeners.
//
// Everything the demo creates — namespaces (and with them the capture rules), processes, the run
// folder — is removed when it ends, however it ends; a lock file keeps two demos from colliding,
// and namespaces left by a killed run are found by name and pid and removed.
package demo

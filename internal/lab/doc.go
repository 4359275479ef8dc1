// Package lab lays out network-namespace topologies on one Linux machine: named namespaces joined
// by veth pairs, with addresses, routes and forwarding, created through netlink (no shelling out).
// The e2e lab (test/e2e), the tests' netnstest helpers and `ambit demo` share it, so the three
// build their "nodes" and "pods" the same way.
//
// Every namespace is named "ambit-<prefix>-<pid>-<n>": the pid says which process owns it, so a
// later run can tell a leftover of a killed process (pid gone) from a namespace in use (see
// Leftovers). Everything here needs root (CAP_NET_ADMIN) and returns errors instead of failing a
// test; callers decide how to clean up (Topology.Close, DeleteNS).
package lab

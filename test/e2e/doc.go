// Package e2e is the end-to-end lab: it builds the real ambit binary, lays out
// two "nodes" and four "pods" as network namespaces on this machine, runs
// `ambit control`, one `ambit node` per node and `ambit echo` apps in the
// pods, and drives unchanged app traffic through them. It needs Linux and
// root; elsewhere the tests skip. See README.md.
package e2e

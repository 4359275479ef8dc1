// Package node holds the node proxy benchmark of issue 4 (BenchmarkNodeProxy,
// Linux and root only): a two-node, two-pod network namespace lab in which
// fortio in the client pod drives the server pod's echo directly, through two
// node proxies (`ambit-node`) with in-pod capture and HBONE, and through a HAProxy
// TLS tunnel pair, in the same run. See README.md.
package node

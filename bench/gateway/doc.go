// Package gateway holds the L7 gateway benchmark of issue 5
// (BenchmarkGateway, Linux only): ambit gateway, nginx, HAProxy and Caddy
// proxying to the same `ambit echo`, each pinned to one CPU, measured in
// the same run, interleaved: max RPS with wrk, latency at a fixed rate
// with fortio, proxy CPU per request and RSS. See README.md.
package gateway

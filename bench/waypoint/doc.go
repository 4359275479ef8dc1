// Package waypoint holds the waypoint benchmark of issue 5
// (BenchmarkWaypoint, Linux only): the same HTTP/1.1 keep-alive load
// through two node proxies, once straight (client -> node-a -> node-b ->
// echo) and once through a waypoint (client -> node-a -> waypoint ->
// node-b -> echo), all real `ambit` processes on loopback, measuring each
// proxy's CPU per request and the waypoint's memory. See bench/README.md.
package waypoint

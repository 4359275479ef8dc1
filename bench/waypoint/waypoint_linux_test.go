//go:build linux

package waypoint_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ambitmesh/ambit/bench/benchproc"
)

var (
	flagRounds   = flag.Int("wp.rounds", 3, "rounds; each runs both paths, in alternating order")
	flagDuration = flag.Duration("wp.duration", 10*time.Second, "wrk run per path and round")
	flagConns    = flag.Int("wp.conns", 16, "wrk keep-alive connections")
	flagPayload  = flag.Int("wp.payload", 1024, "response body bytes")
	flagWrk      = flag.String("wp.wrk", "", "wrk binary (default: wrk in PATH)")
)

// Loopback addresses: the client workload (node-a), the echo workload
// (node-b) and the waypoint's pod. Every HBONE listener is on :15008.
const (
	clientIP   = "127.0.9.1"
	echoIP     = "127.0.9.2"
	waypointIP = "127.0.9.3"
)

// mesh: one echo workload behind two Services, web-direct (node proxies
// only) and web (bound to the waypoint, no route: pass-through).
const mesh = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: bench}
spec:
  gatewayClassName: ambit-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: waypoint-1, namespace: bench, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec: {serviceAccount: waypoint, addresses: ["` + waypointIP + `"], node: waypoint-host}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: client-1, namespace: bench, labels: {app: client}}
spec: {serviceAccount: client, addresses: ["` + clientIP + `"], node: node-a}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: echo-1, namespace: bench, labels: {app: echo}}
spec: {serviceAccount: echo, addresses: ["` + echoIP + `"], node: node-b}
---
apiVersion: v1
kind: Service
metadata: {name: web-direct, namespace: bench}
spec:
  clusterIP: 240.240.9.1
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: bench, labels: {ambit.dev/use-waypoint: waypoint}}
spec:
  clusterIP: 240.240.9.2
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
`

type proc struct {
	name string
	pid  int
}

// BenchmarkWaypoint prints, per path, wrk's requests per second and the
// CPU each proxy spent per request (from /proc/PID/stat around the run),
// then the waypoint's memory. Run with -benchtime 1x.
func BenchmarkWaypoint(b *testing.B) {
	wrk := benchproc.FindTool(*flagWrk, "wrk")
	if wrk == "" {
		b.Skip("needs wrk (apt-get install wrk)")
	}
	for _, ip := range []string{clientIP, echoIP, waypointIP} {
		if l, err := net.Listen("tcp", ip+":15008"); err != nil {
			b.Skipf("loopback %s:15008 unavailable: %v", ip, err)
		} else {
			l.Close()
		}
	}
	tmp := b.TempDir()
	ambit := benchproc.BuildAmbit(b, tmp)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := filepath.Join(tmp, "mesh")
	if err := os.MkdirAll(cfg, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg, "mesh.yaml"), []byte(mesh), 0o644); err != nil {
		b.Fatal(err)
	}
	xds, admin := benchproc.FreeAddr(b, "127.0.0.1"), benchproc.FreeAddr(b, "127.0.0.1")
	benchproc.Start(b, ctx, tmp, "control", nil, ambit, "control", "--config-dir", cfg, "--state-dir", filepath.Join(tmp, "state"),
		"--xds-address", xds, "--admin-address", admin, "--log-level", "warn")
	benchproc.WaitOK(b, "the control plane", "http://"+admin+"/readyz")
	benchproc.Start(b, ctx, tmp, "echo", nil, ambit, "echo", "--listen", echoIP, "--http-port", "8080", "--grpc-port", "0", "--tcp-port", "0", "--pod", "echo-1")

	direct, viaWaypoint := benchproc.FreeAddr(b, clientIP), benchproc.FreeAddr(b, clientIP)
	var procs []proc
	run := func(name string, args ...string) {
		ready := benchproc.FreeAddr(b, "127.0.0.1")
		args = append(args, "--control-plane", xds, "--admin-address", benchproc.FreeAddr(b, "127.0.0.1"), "--metrics-address", benchproc.FreeAddr(b, "127.0.0.1"),
			"--readiness-address", ready, "--log-level", "warn")
		cmd := benchproc.Start(b, ctx, tmp, name, nil, append([]string{ambit}, args...)...)
		procs = append(procs, proc{name, cmd.Process.Pid})
		benchproc.WaitOK(b, name+" ready", "http://"+ready+"/healthz/ready")
	}
	tok := func(args ...string) (string, string, string) {
		out, err := exec.Command(ambit, append([]string{"token", "create", "--control-plane", admin, "-o", "json"}, args...)...).Output()
		if err != nil {
			b.Fatalf("token create %v: %v", args, err)
		}
		var t struct{ Token, CAPin, TrustDomain string }
		if err := json.Unmarshal(out, &t); err != nil {
			b.Fatal(err)
		}
		return t.Token, t.CAPin, t.TrustDomain
	}
	t, pin, td := tok("--node", "node-a")
	run("node-a", "node", "--node", "node-a", "--token", t, "--ca-pin", pin, "--trust-domain", td,
		"--explicit", direct+"=240.240.9.1:80", "--explicit", viaWaypoint+"=240.240.9.2:80")
	t, pin, td = tok("--node", "node-b")
	run("node-b", "node", "--node", "node-b", "--token", t, "--ca-pin", pin, "--trust-domain", td)
	t, pin, td = tok("--gateway", "bench/waypoint")
	run("waypoint", "waypoint", "--gateway", "bench/waypoint", "--token", t, "--ca-pin", pin, "--trust-domain", td,
		"--hbone-address", waypointIP)

	path := fmt.Sprintf("/?size=%d", *flagPayload)
	for _, target := range []string{direct, viaWaypoint} {
		benchproc.WaitOK(b, "traffic through "+target, "http://"+target+path)
	}
	idle := benchproc.Mem([]int{procs[2].pid})

	type row struct {
		path      string
		rps       float64
		requests  int64
		cpuPerReq []time.Duration // per proc
	}
	var rows []row
	args := []string{"-t1", "-c" + strconv.Itoa(*flagConns), "-d" + flagDuration.String()}
	for round := range *flagRounds {
		order := []string{"nodes", "waypoint"}
		if round%2 == 1 {
			order = []string{"waypoint", "nodes"}
		}
		for _, p := range order {
			target := direct
			if p == "waypoint" {
				target = viaWaypoint
			}
			pids := make([]int, len(procs))
			for i, pr := range procs {
				pids[i] = pr.pid
			}
			before := make([]time.Duration, len(procs))
			for i := range procs {
				before[i] = benchproc.CPU(pids[i : i+1])
			}
			w, _ := benchproc.RunWrk(b, ctx, nil, wrk, args, "http://"+target+path)
			if w.Errors > 0 || w.Requests == 0 {
				b.Fatalf("%s: %d requests, %d errors", p, w.Requests, w.Errors)
			}
			r := row{path: p, rps: w.RPS, requests: w.Requests}
			for i := range procs {
				r.cpuPerReq = append(r.cpuPerReq, (benchproc.CPU(pids[i:i+1])-before[i])/time.Duration(w.Requests))
			}
			rows = append(rows, r)
		}
	}
	after := benchproc.Mem([]int{procs[2].pid})

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "path\tRPS\tnode-a µs/req\tnode-b µs/req\twaypoint µs/req\n")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%.1f\t%.1f\n", r.path, r.rps, us(r.cpuPerReq[0]), us(r.cpuPerReq[1]), us(r.cpuPerReq[2]))
	}
	tw.Flush()
	fmt.Printf("waypoint memory: idle VmRSS %d KiB (RssAnon %d), after the runs VmRSS %d KiB (RssAnon %d, peak VmHWM %d)\n",
		idle.RSS, idle.Anon, after.RSS, after.Anon, after.HWM)
	fmt.Printf("machine: %d CPUs, load average %s\n", runtime.NumCPU(), benchproc.LoadAvg())
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

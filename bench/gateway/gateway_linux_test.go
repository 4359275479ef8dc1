//go:build linux

package gateway_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ambitmesh/ambit/bench/benchproc"
	"github.com/ambitmesh/ambit/internal/control/controltest"
)

var (
	flagProxies    = flag.String("gw.proxies", "ambit,nginx,haproxy,caddy", "proxies to compare, besides the direct path")
	flagRounds     = flag.Int("gw.rounds", 3, "rounds; each runs every path once, in rotated order")
	flagDuration   = flag.Duration("gw.duration", 10*time.Second, "wrk run per path and round (max RPS)")
	flagConns      = flag.Int("gw.conns", 64, "wrk connections")
	flagLatDur     = flag.Duration("gw.latency-duration", 15*time.Second, "fortio run per path and round (latency at -gw.qps)")
	flagQPS        = flag.Int("gw.qps", 1000, "fortio requests per second")
	flagFortioConn = flag.Int("gw.fortio-conns", 16, "fortio connections")
	flagPayload    = flag.Int("gw.payload", 1024, "response body bytes")
	flagProxyCPU   = flag.Int("gw.proxy-cpu", 1, "CPU the proxy under test is pinned to (taskset)")
	flagLoadCPU    = flag.Int("gw.load-cpu", 0, "CPU the load generator and the echo backend are pinned to")
	flagAmbitEnv   = flag.String("gw.ambit-env", "", "extra environment for ambit gateway, comma-separated (e.g. GOGC=200)")
	flagAmbit      = flag.String("gw.ambit", "", "prebuilt ambit binary (default: build ../../cmd/ambit), to compare builds run by run")
	flagWrk        = flag.String("gw.wrk", "", "wrk binary (default: wrk in PATH)")
	flagFortio     = flag.String("gw.fortio", "", "fortio binary (default: PATH, then $GOPATH/bin)")
)

// mesh: the Gateway, the echo Service and its one Workload on loopback,
// and a route sending everything to it.
const mesh = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: ambit
  listeners:
  - {name: http, port: %[1]d, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: bench}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: echo-1, namespace: bench, labels: {app: echo}}
spec: {addresses: ["127.0.0.1"], node: bench, serviceAccount: echo, ports: {http: %[2]d}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: bench}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules:
  - backendRefs: [{name: echo, port: 80}]
`

// target is one path under test: the echo directly, or a proxy to it.
type target struct {
	name string
	addr string
	pids func() []int // the proxy's processes; nil for direct
}

type sample struct {
	rps, errors        float64
	cpuPerReq          time.Duration // proxy CPU per request
	otherCPU           float64       // CPUs used by processes outside the benchmark, during the run
	p50, p90, p99      time.Duration
	latCPUPerReq       time.Duration
	latErrors          int64
	latOther           float64
	mem                benchproc.Memory
	requests, latCount int64
}

// BenchmarkGateway compares ambit gateway with nginx, HAProxy and Caddy
// proxying to the same echo backend, in one run, interleaved. The figures
// do not depend on b.N: run it with -benchtime 1x. See README.md.
func BenchmarkGateway(b *testing.B) {
	wrk := benchproc.FindTool(*flagWrk, "wrk")
	fortio := benchproc.FindTool(*flagFortio, "fortio")
	if wrk == "" || fortio == "" {
		b.Skip("needs wrk (apt-get install wrk) and fortio (go install fortio.org/fortio@v1.66.5)")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		b.Skip("needs taskset (util-linux)")
	}
	tmp := b.TempDir()
	ambit := benchproc.Ambit(b, tmp, *flagAmbit)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pinProxy := []string{"taskset", "-c", strconv.Itoa(*flagProxyCPU)}
	pinLoad := []string{"taskset", "-c", strconv.Itoa(*flagLoadCPU)}

	echoAddr := benchproc.FreeAddr(b, "127.0.0.1")
	_, echoPort, _ := net.SplitHostPort(echoAddr)
	echo := benchproc.Start(b, ctx, tmp, "echo", nil, append(pinLoad, ambit, "echo", "--listen", "127.0.0.1",
		"--http-port", echoPort, "--grpc-port", "0", "--tcp-port", "0", "--log-level", "warn")...)
	benchproc.WaitOK(b, "echo", "http://"+echoAddr+"/health")

	targets := []target{{name: "direct (no proxy)", addr: echoAddr}}
	for _, p := range strings.Split(*flagProxies, ",") {
		switch p {
		case "ambit":
			targets = append(targets, startAmbit(b, ctx, tmp, ambit, pinProxy, echoAddr))
		case "nginx":
			targets = append(targets, startNginx(b, ctx, tmp, pinProxy, echoAddr))
		case "haproxy":
			targets = append(targets, startHAProxy(b, ctx, tmp, pinProxy, echoAddr))
		case "caddy":
			targets = append(targets, startCaddy(b, ctx, tmp, pinProxy, echoAddr))
		default:
			b.Fatalf("-gw.proxies: unknown proxy %q; valid: ambit, nginx, haproxy, caddy", p)
		}
	}
	for _, t := range targets {
		benchproc.WaitOK(b, t.name, fmt.Sprintf("http://%s/bench?size=%d", t.addr, *flagPayload))
	}
	echoPIDs := []int{echo.Process.Pid}
	url := func(t target) string { return fmt.Sprintf("http://%s/bench?size=%d", t.addr, *flagPayload) }
	loadStart := benchproc.LoadAvg()

	samples := map[string][]sample{}
	// Max RPS: wrk, interleaved, the order rotated each round so drift in
	// the machine's load does not favour one path.
	for round := range *flagRounds {
		for i := range targets {
			t := targets[(i+round)%len(targets)]
			var pids []int
			if t.pids != nil {
				pids = t.pids()
			}
			cpu0, echo0, busy0, t0 := benchproc.CPU(pids), benchproc.CPU(echoPIDs), benchproc.MachineBusy(), time.Now()
			w, loadCPU := benchproc.RunWrk(b, ctx, pinLoad, wrk, []string{"-t1", "-c" + strconv.Itoa(*flagConns), "-d" + flagDuration.String()}, url(t))
			cpu1, echo1, busy1, el := benchproc.CPU(pids), benchproc.CPU(echoPIDs), benchproc.MachineBusy(), time.Since(t0)
			s := sample{rps: w.RPS, errors: float64(w.Errors), requests: w.Requests}
			if w.Requests > 0 && pids != nil {
				s.cpuPerReq = (cpu1 - cpu0) / time.Duration(w.Requests)
			}
			s.otherCPU = max(0, float64(busy1-busy0-(cpu1-cpu0)-(echo1-echo0)-loadCPU)/float64(el))
			samples[t.name] = append(samples[t.name], s)
			b.Logf("round %d wrk  %-22s %8.0f req/s  errors %d  proxy CPU %.1f µs/req  other CPUs %.2f  load %s",
				round+1, t.name, w.RPS, w.Errors, us(s.cpuPerReq), s.otherCPU, benchproc.LoadAvg())
		}
	}
	// Latency at a fixed rate: fortio, interleaved likewise.
	lat := map[string][]sample{}
	for round := range *flagRounds {
		for i := range targets {
			t := targets[(i+round)%len(targets)]
			var pids []int
			if t.pids != nil {
				pids = t.pids()
			}
			cpu0, echo0, busy0, t0 := benchproc.CPU(pids), benchproc.CPU(echoPIDs), benchproc.MachineBusy(), time.Now()
			f, loadCPU := benchproc.RunFortio(b, ctx, pinLoad, fortio, filepath.Join(tmp, fmt.Sprintf("fortio-%d-%d.json", round, i)),
				[]string{"-qps", strconv.Itoa(*flagQPS), "-c", strconv.Itoa(*flagFortioConn), "-t", flagLatDur.String(), "-p", "50,90,99"}, url(t))
			cpu1, echo1, busy1, el := benchproc.CPU(pids), benchproc.CPU(echoPIDs), benchproc.MachineBusy(), time.Since(t0)
			s := sample{p50: f.Percentile(50), p90: f.Percentile(90), p99: f.Percentile(99), latCount: f.DurationHistogram.Count}
			s.latErrors = f.DurationHistogram.Count - f.RetCodes["200"]
			if n := f.DurationHistogram.Count; n > 0 && pids != nil {
				s.latCPUPerReq = (cpu1 - cpu0) / time.Duration(n)
				s.mem = benchproc.Mem(pids)
			}
			s.latOther = max(0, float64(busy1-busy0-(cpu1-cpu0)-(echo1-echo0)-loadCPU)/float64(el))
			lat[t.name] = append(lat[t.name], s)
			b.Logf("round %d fortio %-22s p50 %v p90 %v p99 %v  non-200 %d  proxy CPU %.1f µs/req  other CPUs %.2f  load %s",
				round+1, t.name, s.p50, s.p90, s.p99, s.latErrors, us(s.latCPUPerReq), s.latOther, benchproc.LoadAvg())
		}
	}
	fmt.Printf("\nload average at start %s, at end %s; proxies pinned to CPU %d, wrk/fortio and the echo to CPU %d; %d rounds\n",
		loadStart, benchproc.LoadAvg(), *flagProxyCPU, *flagLoadCPU, *flagRounds)
	printTable(os.Stdout, targets, samples, lat)
	b.ReportMetric(0, "ns/op")
}

func printTable(w io.Writer, targets []target, rps, lat map[string][]sample) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "path\tmax RPS (median)\tRPS per round\terrors\tCPU µs/req at max\tp50 ms\tp90 ms\tp99 ms\tnon-200\tCPU µs/req at %d qps\tRSS MB (anon)\tpeak RSS MB\tother CPUs (wrk, fortio)\n", *flagQPS)
	for _, t := range targets {
		r, l := rps[t.name], lat[t.name]
		var rounds []string
		var errs, other, otherLat float64
		var nonOK int64
		for _, s := range r {
			rounds = append(rounds, fmt.Sprintf("%.0f", s.rps))
			errs += s.errors
			other += s.otherCPU / float64(len(r))
		}
		for _, s := range l {
			nonOK += s.latErrors
			otherLat += s.latOther / float64(len(l))
		}
		rpsMed := median(r, func(s sample) float64 { return s.rps })
		cpuMax := median(r, func(s sample) float64 { return us(s.cpuPerReq) })
		p50 := median(l, func(s sample) float64 { return float64(s.p50) })
		p90 := median(l, func(s sample) float64 { return float64(s.p90) })
		p99 := median(l, func(s sample) float64 { return float64(s.p99) })
		cpuLat := median(l, func(s sample) float64 { return us(s.latCPUPerReq) })
		rss, hwm, cpuA, cpuB := "-", "-", "-", "-"
		if t.pids != nil {
			last := l[len(l)-1]
			rss = fmt.Sprintf("%.1f (%.1f)", float64(last.mem.RSS)/1024, float64(last.mem.Anon)/1024)
			hwm = fmt.Sprintf("%.1f", float64(last.mem.HWM)/1024)
			cpuA, cpuB = fmt.Sprintf("%.1f", cpuMax), fmt.Sprintf("%.1f", cpuLat)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%.2f, %.2f\n", t.name, rpsMed, strings.Join(rounds, " "), errs,
			cpuA, ms(time.Duration(p50)), ms(time.Duration(p90)), ms(time.Duration(p99)), nonOK, cpuB, rss, hwm, other, otherLat)
	}
	_ = tw.Flush()
}

func median(ss []sample, f func(sample) float64) float64 {
	if len(ss) == 0 {
		return 0
	}
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// startAmbit runs the control plane in the benchmark process and
// `ambit gateway` (the binary) pinned to the proxy CPU, access log off
// as for the other proxies.
func startAmbit(b *testing.B, ctx context.Context, tmp, ambit string, pin []string, echoAddr string) target {
	b.Helper()
	addr := benchproc.FreeAddr(b, "127.0.0.1")
	_, port, _ := net.SplitHostPort(addr)
	_, echoPort, _ := net.SplitHostPort(echoAddr)
	cfgDir := filepath.Join(tmp, "mesh")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "mesh.yaml"), fmt.Appendf(nil, mesh, mustAtoi(port), mustAtoi(echoPort)), 0o644); err != nil {
		b.Fatal(err)
	}
	cp := controltest.Start(b, cfgDir)
	tok := controltest.Token(b, cp, "gateway/infra/edge")
	var env []string
	if *flagAmbitEnv != "" {
		env = strings.Split(*flagAmbitEnv, ",")
	}
	ready := benchproc.FreeAddr(b, "127.0.0.1")
	cmd := benchproc.Start(b, ctx, tmp, "ambit-gateway", env, append(pin, ambit, "gateway", "--control-plane", cp.XDSAddr().String(),
		"--gateway", "infra/edge", "--token", tok.Token, "--ca-pin", tok.CAPin, "--trust-domain", tok.TrustDomain,
		"--listen-address", "127.0.0.1", "--access-log=false", "--log-level", "warn",
		"--admin-address", benchproc.FreeAddr(b, "127.0.0.1"), "--metrics-address", benchproc.FreeAddr(b, "127.0.0.1"), "--readiness-address", ready)...)
	benchproc.WaitOK(b, "ambit gateway ready", "http://"+ready+"/healthz/ready")
	pid := cmd.Process.Pid
	return target{name: "ambit gateway", addr: addr, pids: func() []int { return []int{pid} }}
}

// startNginx runs Debian's nginx: one worker, keep-alive to the echo.
func startNginx(b *testing.B, ctx context.Context, tmp string, pin []string, echoAddr string) target {
	b.Helper()
	bin := "/usr/sbin/nginx"
	if _, err := os.Stat(bin); err != nil {
		b.Skip("nginx not installed: apt-get install -y nginx-light")
	}
	addr := benchproc.FreeAddr(b, "127.0.0.1")
	dir := filepath.Join(tmp, "nginx")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o777); err != nil {
		b.Fatal(err)
	}
	conf := fmt.Sprintf(`daemon off;
worker_processes 1;
error_log stderr warn;
pid %[1]s/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp; uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
  keepalive_requests 1000000;
  upstream echo { server %[2]s; keepalive 256; keepalive_requests 1000000; }
  server {
    listen %[3]s;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, dir, echoAddr, addr)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := benchproc.Start(b, ctx, tmp, "nginx", nil, append(pin, bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", "stderr")...)
	pid := cmd.Process.Pid
	return target{name: "nginx " + version(bin, "-v"), addr: addr, pids: func() []int { return benchproc.Tree(pid) }}
}

// startHAProxy runs Debian's HAProxy: HTTP mode, one thread, connection
// reuse to the echo.
func startHAProxy(b *testing.B, ctx context.Context, tmp string, pin []string, echoAddr string) target {
	b.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		b.Skip("haproxy not installed: apt-get install -y haproxy")
	}
	addr := benchproc.FreeAddr(b, "127.0.0.1")
	conf := fmt.Sprintf(`global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend in
  bind %s
  default_backend echo
backend echo
  server echo1 %s
`, addr, echoAddr)
	path := filepath.Join(tmp, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := benchproc.Start(b, ctx, tmp, "haproxy", nil, append(pin, bin, "-db", "-f", path)...)
	pid := cmd.Process.Pid
	return target{name: "HAProxy " + version(bin, "-v"), addr: addr, pids: func() []int { return benchproc.Tree(pid) }}
}

// startCaddy runs Debian's Caddy: reverse_proxy to the echo, no admin
// endpoint, no automatic HTTPS, no access log (its default).
func startCaddy(b *testing.B, ctx context.Context, tmp string, pin []string, echoAddr string) target {
	b.Helper()
	bin, err := exec.LookPath("caddy")
	if err != nil {
		b.Skip("caddy not installed: apt-get install -y caddy")
	}
	addr := benchproc.FreeAddr(b, "127.0.0.1")
	conf := fmt.Sprintf("{\n\tadmin off\n\tauto_https off\n}\nhttp://%s {\n\treverse_proxy %s\n}\n", addr, echoAddr)
	path := filepath.Join(tmp, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	env := []string{"HOME=" + tmp, "XDG_DATA_HOME=" + tmp, "XDG_CONFIG_HOME=" + tmp}
	cmd := benchproc.Start(b, ctx, tmp, "caddy", env, append(pin, bin, "run", "--config", path, "--adapter", "caddyfile")...)
	pid := cmd.Process.Pid
	return target{name: "Caddy " + version(bin, "version"), addr: addr, pids: func() []int { return []int{pid} }}
}

// version is the first version-looking word of `bin arg`.
func version(bin, arg string) string {
	out, _ := exec.Command(bin, arg).CombinedOutput()
	for _, f := range strings.Fields(string(out)) {
		f = strings.TrimPrefix(strings.TrimPrefix(f, "nginx/"), "v")
		if len(f) > 0 && f[0] >= '0' && f[0] <= '9' && strings.Contains(f, ".") {
			return f
		}
	}
	return "?"
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

//go:build linux

package node_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ambitmesh/ambit/bench/benchproc"
	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
	"github.com/ambitmesh/ambit/internal/testkit"
)

var (
	flagDuration = flag.Duration("node.duration", 15*time.Second, "fortio run per path (after a 2s warm-up)")
	flagQPS      = flag.Int("node.qps", 1000, "fortio requests per second")
	flagConns    = flag.Int("node.conns", 16, "fortio connections")
	flagPayload  = flag.Int("node.payload", 1024, "request body (POST) and response body bytes")
	flagBulk     = flag.Int64("node.bulk", 1<<30, "bytes of the single bulk stream per path")
	flagFortio   = flag.String("node.fortio", "", "fortio binary (default: fortio in PATH, then $GOPATH/bin)")
	flagHAProxy  = flag.String("node.haproxy", "haproxy", "haproxy binary (Debian's haproxy package)")
	flagAmbitEnv = flag.String("node.ambit-env", "", "extra environment for the ambit node processes, comma-separated (e.g. GOMEMLIMIT=12MiB,GOGC=50)")
	flagPaths    = flag.String("node.paths", "direct,haproxy,ambit", "paths to run, in order")
	flagAmbit    = flag.String("node.ambit", "", "prebuilt ambit binary (default: build ../../cmd/ambit), to compare builds run by run; it runs the echo app")
	flagNode     = flag.String("node.ambit-node", "", "prebuilt ambit-node binary for the node proxies (default: build ../../cmd/ambit-node); \"ambit\" runs `ambit node` from the -node.ambit binary instead")
	flagProfile  = flag.String("node.profile", "", "directory: after the ambit path, save each node's heap and goroutine profiles, /proc/PID/smaps and status there")
)

const (
	clientPodIP = "10.1.0.2"
	serverPodIP = "10.2.0.2"
	node1PodGW  = "10.1.0.1"
	node2IP     = "192.168.77.2"
	echoPort    = 8080
	sinkPort    = 5001
)

const mesh = `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: client-1, namespace: shop, labels: {app: client}}
spec: {addresses: ["10.1.0.2"], node: node-a, serviceAccount: client}
---
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {addresses: ["10.2.0.2"], node: node-b, serviceAccount: web}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`

// result is one path's row.
type result struct {
	path                string
	requests            int64
	qps                 float64
	errors              int64
	p50, p90, p99       time.Duration
	bulkMBps            float64
	proxyCPU            time.Duration // both proxies, during the fortio run
	cpuPerReqA, cpuPerB time.Duration // per proxy, per request
	switchesPerReq      []float64     // per proxy: context switches of all its threads per request
	bulkCPUPerGiB       time.Duration
	bulkSwitchesPerMiB  []float64 // per proxy: context switches during the bulk stream per MiB
	// Per proxy: before the first request, after the fortio run, after
	// the bulk stream.
	idle, fortio, bulk []memKB
}

// BenchmarkNodeProxy runs the whole comparison once (the figures do not
// depend on b.N; run it with -benchtime 1x) and prints a table.
func BenchmarkNodeProxy(b *testing.B) {
	netnstest.RequireRoot(b)
	fortio := findFortio(b)
	tmp := b.TempDir()
	ambit := benchproc.Ambit(b, tmp, *flagAmbit)
	nodeCmd := []string{ambit, "node"}
	if *flagNode != "ambit" {
		nodeCmd = []string{benchproc.AmbitNode(b, tmp, *flagNode)}
	}
	b.Logf("node proxies: %s", strings.Join(nodeCmd, " "))

	// The lab: two nodes joined by a veth, a pod behind each (as TestInPodCapture).
	node1, node2 := netnstest.NewNS(b, "bn1"), netnstest.NewNS(b, "bn2")
	pod1, pod2 := netnstest.NewNS(b, "bp1"), netnstest.NewNS(b, "bp2")
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	netnstest.Veth(b, node1, "eth0", p("192.168.77.1/24"), node2, "eth0", p(node2IP+"/24"))
	netnstest.Veth(b, node1, "veth-pod1", p(node1PodGW+"/24"), pod1, "eth0", p(clientPodIP+"/24"))
	netnstest.Veth(b, node2, "veth-pod2", p("10.2.0.1/24"), pod2, "eth0", p(serverPodIP+"/24"))
	netnstest.Forwarding(b, node1)
	netnstest.Forwarding(b, node2)
	netnstest.Route(b, pod1, p("0.0.0.0/0"), a(node1PodGW))
	netnstest.Route(b, pod2, p("0.0.0.0/0"), a("10.2.0.1"))
	netnstest.Route(b, node1, p("10.2.0.0/24"), a(node2IP))
	netnstest.Route(b, node2, p("10.1.0.0/24"), a("192.168.77.1"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The server app: `ambit echo` in pod 2 (its own process, so its CPU is
	// not the proxies'), and a byte sink for the bulk stream.
	benchproc.Start(b, ctx, tmp, "echo", nil, "ip", "netns", "exec", pod2.Name, ambit, "echo", "--listen", serverPodIP,
		"--http-port", strconv.Itoa(echoPort), "--grpc-port", "0", "--tcp-port", "0", "--log-level", "warn")
	sink, err := netns.Listen(ctx, pod2.Path, "tcp", fmt.Sprintf("%s:%d", serverPodIP, sinkPort), netns.ListenOptions{Unmarked: true})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go serveSink(sink)
	app := &netns.Dialer{NetNS: pod1.Path, Unmarked: true, Timeout: 5 * time.Second}
	testkit.Eventually(b, 20*time.Second, "the echo in pod 2", func() bool {
		c, err := app.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", serverPodIP, echoPort))
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	var results []result
	for _, path := range strings.Split(*flagPaths, ",") {
		switch path {
		case "direct":
			results = append(results, runPath(b, ctx, "direct pod -> pod", fortio, pod1, app,
				fmt.Sprintf("%s:%d", serverPodIP, echoPort), fmt.Sprintf("%s:%d", serverPodIP, sinkPort), nil, tmp))
		case "haproxy":
			pids := startHAProxyPair(b, ctx, tmp, node1, node2)
			results = append(results, runPath(b, ctx, "HAProxy TLS pair", fortio, pod1, app,
				node1PodGW+":9000", node1PodGW+":9001", pids, tmp))
		case "ambit":
			pids := startAmbit(b, ctx, tmp, nodeCmd, pod1, pod2)
			r := runPath(b, ctx, "ambit, 2 node proxies (in-pod capture, HBONE)", fortio, pod1, app,
				fmt.Sprintf("%s:%d", serverPodIP, echoPort), fmt.Sprintf("%s:%d", serverPodIP, sinkPort), pids, tmp)
			// fortio's 16 connections and the bulk stream each arrived as
			// an HBONE mTLS tunnel at node-b, not as plaintext.
			if n := mtlsInbound(b); n < float64(*flagConns+1) {
				b.Fatalf("node-b counted %v inbound mutual_tls connections, want >= %d: the mesh path was not HBONE", n, *flagConns+1)
			}
			for i, addr := range nodeMetrics {
				b.Logf("node %c Go memory: %s", 'a'+i, goMem(addr))
			}
			if *flagProfile != "" {
				saveProfiles(b, *flagProfile, pids)
			}
			results = append(results, r)
		default:
			b.Fatalf("-node.paths: unknown path %q; valid: direct, haproxy, ambit", path)
		}
	}
	printTable(os.Stdout, results)
	b.ReportMetric(0, "ns/op")
}

func findFortio(b *testing.B) string {
	p := benchproc.FindTool(*flagFortio, "fortio")
	if p == "" {
		b.Skip("fortio not found: go install fortio.org/fortio@v1.66.5, or pass -node.fortio PATH")
	}
	return p
}

// serveSink reads each connection to EOF and answers with the byte count,
// so the sender's clock stops when the last byte arrived.
func serveSink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			_ = binary.Write(c, binary.BigEndian, n)
		}()
	}
}

// bulk sends n bytes on one connection and returns MB/s (10^6 bytes).
func bulk(ctx context.Context, app *netns.Dialer, addr string, n int64) (float64, error) {
	c, err := app.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	t0 := time.Now()
	for sent := int64(0); sent < n; {
		k := min(int64(len(buf)), n-sent)
		if _, err := c.Write(buf[:k]); err != nil {
			return 0, fmt.Errorf("bulk to %s after %d bytes: %w", addr, sent, err)
		}
		sent += k
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return 0, err
	}
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return 0, fmt.Errorf("bulk to %s: sink's count: %w", addr, err)
	}
	if got != n {
		return 0, fmt.Errorf("bulk to %s: sink got %d bytes, sent %d", addr, got, n)
	}
	return float64(n) / time.Since(t0).Seconds() / 1e6, nil
}

func runFortio(b *testing.B, ctx context.Context, fortio string, pod netnstest.NS, target string, d time.Duration, out string) benchproc.Fortio {
	b.Helper()
	u := fmt.Sprintf("http://%s/bench?size=%d", target, *flagPayload)
	r, _ := benchproc.RunFortio(b, ctx, []string{"ip", "netns", "exec", pod.Name}, fortio, out, []string{
		"-qps", strconv.Itoa(*flagQPS), "-c", strconv.Itoa(*flagConns), "-t", d.String(),
		"-payload-size", strconv.Itoa(*flagPayload), "-p", "50,90,99"}, u)
	return r
}

func runPath(b *testing.B, ctx context.Context, name, fortio string, pod netnstest.NS, app *netns.Dialer, target, sinkAddr string, pids []int, tmp string) result {
	b.Helper()
	r := result{path: name}
	slug := strings.Fields(name)[0]
	for _, pid := range pids {
		r.idle = append(r.idle, memOf(b, pid))
	}
	runFortio(b, ctx, fortio, pod, target, 2*time.Second, filepath.Join(tmp, slug+"-warmup.json"))
	cpu0, sw0 := cpuOf(b, pids), switchesOf(b, pids)
	fr := runFortio(b, ctx, fortio, pod, target, *flagDuration, filepath.Join(tmp, slug+".json"))
	cpu1, sw1 := cpuOf(b, pids), switchesOf(b, pids)
	for _, pid := range pids {
		r.fortio = append(r.fortio, memOf(b, pid))
	}
	r.requests, r.qps = fr.DurationHistogram.Count, fr.ActualQPS
	r.errors = r.requests - fr.RetCodes["200"]
	r.p50, r.p90, r.p99 = fr.Percentile(50), fr.Percentile(90), fr.Percentile(99)
	if len(pids) > 0 && r.requests > 0 {
		for i := range pids {
			r.proxyCPU += cpu1[i] - cpu0[i]
		}
		r.cpuPerReqA = (cpu1[0] - cpu0[0]) / time.Duration(r.requests)
		for i := range pids {
			r.switchesPerReq = append(r.switchesPerReq, float64(sw1[i]-sw0[i])/float64(r.requests))
		}
		r.cpuPerB = (cpu1[len(pids)-1] - cpu0[len(pids)-1]) / time.Duration(r.requests)
	}
	var err error
	cpu2, sw2 := cpuOf(b, pids), switchesOf(b, pids)
	if r.bulkMBps, err = bulk(ctx, app, sinkAddr, *flagBulk); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	cpu3, sw3 := cpuOf(b, pids), switchesOf(b, pids)
	for i := range pids {
		r.bulkCPUPerGiB += time.Duration(float64(cpu3[i]-cpu2[i]) * float64(1<<30) / float64(*flagBulk))
		r.bulkSwitchesPerMiB = append(r.bulkSwitchesPerMiB, float64(sw3[i]-sw2[i])*float64(1<<20)/float64(*flagBulk))
	}
	for _, pid := range pids {
		r.bulk = append(r.bulk, memOf(b, pid))
	}
	b.Logf("%s: %d requests, %.0f qps, p50 %v p90 %v p99 %v, bulk %.0f MB/s", name, r.requests, r.qps, r.p50, r.p90, r.p99, r.bulkMBps)
	return r
}

// cpuOf returns each process's user+system CPU (all its threads).
func cpuOf(b *testing.B, pids []int) []time.Duration {
	b.Helper()
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		out[i] = benchproc.CPU([]int{pid})
	}
	return out
}

// switchesOf returns each process's context switches (voluntary and not,
// summed over its threads from /proc/PID/task/*/status): every time a
// thread sleeps or is preempted. Unlike CPU time it hardly depends on how
// busy the rest of the machine is, so it shows hand-offs between threads
// even when the CPU figures are noisy.
func switchesOf(b *testing.B, pids []int) []int64 {
	b.Helper()
	out := make([]int64, len(pids))
	for i, pid := range pids {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		if err != nil || len(tasks) == 0 {
			b.Fatalf("threads of pid %d: %v", pid, err)
		}
		for _, t := range tasks {
			raw, err := os.ReadFile(t)
			if err != nil {
				continue // the thread exited
			}
			for _, l := range strings.Split(string(raw), "\n") {
				k, v, _ := strings.Cut(l, ":")
				if k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches" {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					out[i] += n
				}
			}
		}
	}
	return out
}

// memKB is a process's memory from /proc/PID/status: resident (VmRSS) and
// the private anonymous part of it (RssAnon: heap, stacks, runtime); the
// rest is mostly the executable's pages, shared with every process running
// the same binary.
type memKB struct{ rss, anon int64 }

func memOf(b *testing.B, pid int) memKB {
	b.Helper()
	m := benchproc.Mem([]int{pid})
	return memKB{rss: m.RSS, anon: m.Anon}
}

// startAmbit runs the control plane in-process and one node proxy process
// per node (nodeCmd: ambit-node, or ambit node; host namespace, the listeners
// they open for the pods are inside the pods' namespaces), enrols both pods
// and returns the nodes' pids.
func startAmbit(b *testing.B, ctx context.Context, tmp string, nodeCmd []string, pod1, pod2 netnstest.NS) []int {
	b.Helper()
	cfgDir := filepath.Join(tmp, "mesh")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "mesh.yaml"), []byte(mesh), 0o644); err != nil {
		b.Fatal(err)
	}
	// Its cleanup is registered before the nodes start, so the nodes are
	// killed first.
	cp := controltest.Start(b, cfgDir)
	var ambitEnv []string
	if *flagAmbitEnv != "" {
		ambitEnv = strings.Split(*flagAmbitEnv, ",")
	}
	var pids []int
	type nodeEP struct{ admin, ready, metrics string }
	var eps []nodeEP
	for _, n := range []struct {
		name, key string
		pod       netnstest.NS
	}{{"node-a", "shop/client-1", pod1}, {"node-b", "shop/web-1", pod2}} {
		tok := controltest.Token(b, cp, "node/"+n.name)
		ep := nodeEP{admin: benchproc.FreeAddr(b, "127.0.0.1"), ready: benchproc.FreeAddr(b, "127.0.0.1"), metrics: benchproc.FreeAddr(b, "127.0.0.1")}
		argv := append(nodeCmd[:len(nodeCmd):len(nodeCmd)], "--control-plane", cp.XDSAddr().String(), "--node", n.name,
			"--token", tok.Token, "--ca-pin", tok.CAPin, "--trust-domain", tok.TrustDomain, "--log-level", "warn",
			"--admin-address", ep.admin, "--readiness-address", ep.ready, "--metrics-address", ep.metrics)
		cmd := benchproc.Start(b, ctx, tmp, n.name, ambitEnv, argv...)
		pids = append(pids, cmd.Process.Pid)
		eps = append(eps, ep)
		benchproc.WaitOK(b, n.name+" ready", "http://"+ep.ready+"/healthz/ready")
		testkit.Eventually(b, 20*time.Second, n.name+" to enrol "+n.key, func() bool {
			resp, err := http.PostForm("http://"+ep.admin+"/enroll", url.Values{"workload": {n.key}, "netns": {n.pod.Path}})
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	metricsB = "http://" + eps[1].metrics + "/metrics"
	nodeMetrics = []string{eps[0].metrics, eps[1].metrics}
	nodeAdmins = []string{eps[0].admin, eps[1].admin}
	return pids
}

// goMem summarises a node's Go runtime memory from its /metrics.
func goMem(addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		for _, m := range []string{"go_memstats_heap_inuse_bytes ", "go_memstats_stack_inuse_bytes ", "go_memstats_sys_bytes ", "go_goroutines ", "go_threads "} {
			if strings.HasPrefix(sc.Text(), m) {
				out = append(out, sc.Text())
			}
		}
	}
	return strings.Join(out, ", ")
}

// saveProfiles writes each node's Go heap and goroutine profiles (admin
// /debug/pprof) and its /proc/PID/smaps and status to dir, as a-heap,
// b-smaps, ...: where the RSS is.
func saveProfiles(b *testing.B, dir string, pids []int) {
	b.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	save := func(name string, raw []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for i, pid := range pids {
		n := string(rune('a' + i))
		for _, prof := range []string{"heap", "goroutine"} {
			resp, err := http.Get("http://" + nodeAdmins[i] + "/debug/pprof/" + prof)
			if err != nil {
				b.Fatal(err)
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				b.Fatalf("node %s %s profile: %v (status %d)", n, prof, err, resp.StatusCode)
			}
			save(n+"-"+prof, raw)
		}
		for _, f := range []string{"smaps", "status"} {
			raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if err != nil {
				b.Fatal(err)
			}
			save(n+"-"+f, raw)
		}
	}
	b.Logf("profiles in %s (go tool pprof -sample_index=inuse_space -top %s/a-heap)", dir, dir)
}

// nodeMetrics are the nodes' metrics addresses (a, b).
var nodeMetrics, nodeAdmins []string

// metricsB is node-b's metrics URL, for the proof that the mesh path was
// HBONE mTLS.
var metricsB string

// mtlsInbound sums node-b's istio_tcp_connections_opened_total as the
// destination over mutual TLS.
func mtlsInbound(b *testing.B) float64 {
	b.Helper()
	resp, err := http.Get(metricsB)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "istio_tcp_connections_opened_total{") && strings.Contains(l, `reporter="destination"`) &&
			strings.Contains(l, `connection_security_policy="mutual_tls"`) {
			v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

// startHAProxyPair runs a client-side haproxy in node 1 (plain TCP in from
// the pod, TLS 1.3 with a client certificate out) and a server-side one in
// node 2 (mTLS in, plain TCP to the pod), one frontend pair for the echo
// and one for the sink.
func startHAProxyPair(b *testing.B, ctx context.Context, tmp string, node1, node2 netnstest.NS) []int {
	b.Helper()
	dir := filepath.Join(tmp, "haproxy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	writeCerts(b, dir)
	common := `global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
`
	client := common
	server := common
	for i, port := range []int{echoPort, sinkPort} {
		client += fmt.Sprintf(`frontend in%[1]d
  bind %[2]s:%[3]d
  default_backend tunnel%[1]d
backend tunnel%[1]d
  server s %[4]s:%[5]d ssl verify required ca-file %[6]s/ca.pem crt %[6]s/client.pem sni str(server.bench) verifyhost server.bench ssl-min-ver TLSv1.3
`, i, node1PodGW, 9000+i, node2IP, 9443+i, dir)
		server += fmt.Sprintf(`frontend tls%[1]d
  bind %[2]s:%[3]d ssl crt %[4]s/server.pem ca-file %[4]s/ca.pem verify required ssl-min-ver TLSv1.3
  default_backend app%[1]d
backend app%[1]d
  server app %[5]s:%[6]d
`, i, node2IP, 9443+i, dir, serverPodIP, port)
	}
	for name, cfg := range map[string]string{"client": client, "server": server} {
		if err := os.WriteFile(filepath.Join(dir, name+".cfg"), []byte(cfg), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	cc := benchproc.Start(b, ctx, tmp, "haproxy-client", nil, "ip", "netns", "exec", node1.Name, *flagHAProxy, "-db", "-f", filepath.Join(dir, "client.cfg"))
	sc := benchproc.Start(b, ctx, tmp, "haproxy-server", nil, "ip", "netns", "exec", node2.Name, *flagHAProxy, "-db", "-f", filepath.Join(dir, "server.cfg"))
	app := &netns.Dialer{NetNS: filepath.Join("/run/netns", node1.Name), Unmarked: true, Timeout: time.Second}
	testkit.Eventually(b, 20*time.Second, "the haproxy pair", func() bool {
		c, err := app.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", node1PodGW, 9000))
		if err != nil {
			return false
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return []int{cc.Process.Pid, sc.Process.Pid}
}

// writeCerts makes a CA and P-256 server and client certificates, as
// haproxy wants them: certificate then key in one PEM file.
func writeCerts(b *testing.B, dir string) {
	b.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		b.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), pemOf("CERTIFICATE", caDER), 0o644); err != nil {
		b.Fatal(err)
	}
	for i, name := range []string{"server", "client"} {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name + ".bench"},
			DNSNames: []string{name + ".bench"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			b.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pem"), append(pemOf("CERTIFICATE", der), pemOf("PRIVATE KEY", kder)...), 0o600); err != nil {
			b.Fatal(err)
		}
	}
}

func printTable(w io.Writer, rs []result) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "path\trequests\tqps\tnon-200\tp50 ms\tp90 ms\tp99 ms\tadded p99 ms\tbulk MB/s\tproxy CPU µs/req (sum = a + b)\tcontext switches/req (a + b)\tproxy CPU s/GiB bulk\tbulk context switches/MiB (a + b)\tRSS MB idle / fortio / bulk (a; b)\tof which anon MB (a; b)\n")
	var base time.Duration
	for i, r := range rs {
		if i == 0 {
			base = r.p99
		}
		cpu, bulkCPU, switches, bulkSwitches := "-", "-", "-", "-"
		rss, anon := "-", "-"
		if len(r.bulk) > 0 {
			perReq := r.proxyCPU / time.Duration(max(r.requests, 1))
			cpu = fmt.Sprintf("%.1f = %.1f + %.1f", us(perReq), us(r.cpuPerReqA), us(r.cpuPerB))
			bulkCPU = fmt.Sprintf("%.2f", r.bulkCPUPerGiB.Seconds())
			switches = fmt.Sprintf("%.1f + %.1f", r.switchesPerReq[0], r.switchesPerReq[len(r.switchesPerReq)-1])
			bulkSwitches = fmt.Sprintf("%.1f + %.1f", r.bulkSwitchesPerMiB[0], r.bulkSwitchesPerMiB[len(r.bulkSwitchesPerMiB)-1])
			rss = memColumn(r, func(m memKB) int64 { return m.rss })
			anon = memColumn(r, func(m memKB) int64 { return m.anon })
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%d\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\n", r.path, r.requests, r.qps, r.errors,
			ms(r.p50), ms(r.p90), ms(r.p99), ms(r.p99-base), r.bulkMBps, cpu, switches, bulkCPU, bulkSwitches, rss, anon)
	}
	_ = tw.Flush()
}

// memColumn is "idle / fortio / bulk" MB for the first proxy, then the last.
func memColumn(r result, f func(memKB) int64) string {
	one := func(i int) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f", float64(f(r.idle[i]))/1024, float64(f(r.fortio[i]))/1024, float64(f(r.bulk[i]))/1024)
	}
	return one(0) + "; " + one(len(r.bulk)-1)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/ambitmesh/ambit/internal/testkit"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := Register(reg); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if err := Register(reg); err != nil {
		t.Fatalf("Register again: %v", err)
	}
	return reg
}

// series is one gathered sample: its labels and value.
type series struct {
	labels map[string]string
	value  float64
}

// gather returns the series of metric name whose destination_workload is
// wl; tests use their own workload names so the package-level counters
// shared by all tests do not mix.
func gather(t *testing.T, reg *prometheus.Registry, name, wl string) []series {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var out []series
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if mf.GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s is %v, want COUNTER", name, mf.GetType())
		}
		for _, m := range mf.GetMetric() {
			s := series{labels: map[string]string{}, value: m.GetCounter().GetValue()}
			for _, lp := range m.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			if s.labels["destination_workload"] == wl {
				out = append(out, s)
			}
		}
	}
	return out
}

func value(t *testing.T, reg *prometheus.Registry, name, wl string) float64 {
	t.Helper()
	ss := gather(t, reg, name, wl)
	if len(ss) != 1 {
		t.Fatalf("%s{destination_workload=%q}: %d series, want 1", name, wl, len(ss))
	}
	return ss[0].value
}

func testLabels(wl string) Labels {
	return Labels{
		Reporter: ReporterDestination,
		Source: Peer{Workload: "sleep", Namespace: "foo", Principal: "spiffe://cluster.local/ns/foo/sa/sleep",
			App: "sleep", Version: "v1", CanonicalService: "sleep", CanonicalRevision: "v1", Cluster: "c1"},
		Destination: Peer{Workload: wl, Namespace: "bar", Principal: "spiffe://cluster.local/ns/bar/sa/httpbin",
			App: "httpbin", Version: "latest", CanonicalService: "httpbin", CanonicalRevision: "latest", Cluster: "c1"},
		Service:        Service{Hostname: "httpbin.bar.svc.cluster.local", Name: "httpbin", Namespace: "bar"},
		SecurityPolicy: SecurityMutualTLS,
	}
}

var runs atomic.Int64

// uniq makes a workload name unique to this run (with -count=N the
// package-level counters live on between runs).
func uniq(name string) string { return fmt.Sprintf("%s-%d", name, runs.Add(1)) }

var endpoints = Endpoints{
	Src: netip.MustParseAddrPort("10.0.1.5:40000"),
	Dst: netip.MustParseAddrPort("10.0.2.7:15008"),
}

func TestLabelSet(t *testing.T) {
	reg := newRegistry(t)
	wl := uniq("labelset")
	m := Open(testLabels(wl), endpoints)
	m.AddRequest(1)
	m.AddResponse(1)
	m.Finish(nil, Result{})
	want := map[string]string{
		"reporter":                       "destination",
		"source_workload":                "sleep",
		"source_canonical_service":       "sleep",
		"source_canonical_revision":      "v1",
		"source_workload_namespace":      "foo",
		"source_principal":               "spiffe://cluster.local/ns/foo/sa/sleep",
		"source_app":                     "sleep",
		"source_version":                 "v1",
		"source_cluster":                 "c1",
		"destination_service":            "httpbin.bar.svc.cluster.local",
		"destination_service_namespace":  "bar",
		"destination_service_name":       "httpbin",
		"destination_workload":           wl,
		"destination_canonical_service":  "httpbin",
		"destination_canonical_revision": "latest",
		"destination_workload_namespace": "bar",
		"destination_principal":          "spiffe://cluster.local/ns/bar/sa/httpbin",
		"destination_app":                "httpbin",
		"destination_version":            "latest",
		"destination_cluster":            "c1",
		"request_protocol":               "tcp",
		"response_flags":                 "-",
		"connection_security_policy":     "mutual_tls",
	}
	for _, name := range []string{"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total", "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"} {
		ss := gather(t, reg, name, wl)
		if len(ss) != 1 {
			t.Fatalf("%s: %d series, want 1", name, len(ss))
		}
		if diff := cmp.Diff(want, ss[0].labels); diff != "" {
			t.Errorf("%s labels (-want +got):\n%s", name, diff)
		}
	}
}

func TestUnknownDefaults(t *testing.T) {
	reg := newRegistry(t)
	wl := uniq("unknowns")
	l := Labels{Reporter: ReporterDestination, Destination: Peer{Workload: wl}, SecurityPolicy: SecurityNone}
	Open(l, Endpoints{}).Finish(nil, Result{})
	ss := gather(t, reg, "istio_tcp_connections_opened_total", wl)
	if len(ss) != 1 {
		t.Fatalf("%d series, want 1", len(ss))
	}
	for k, v := range ss[0].labels {
		switch k {
		case "reporter", "destination_workload", "request_protocol", "response_flags", "connection_security_policy":
		default:
			if v != "unknown" {
				t.Errorf("label %s = %q, want \"unknown\"", k, v)
			}
		}
	}
	if got := ss[0].labels["connection_security_policy"]; got != "none" {
		t.Errorf("connection_security_policy = %q, want none", got)
	}
}

func TestConnectionLifecycle(t *testing.T) {
	reg := newRegistry(t)
	wl := uniq("lifecycle")
	a := Open(testLabels(wl), endpoints)
	b := Open(testLabels(wl), endpoints)
	if got := value(t, reg, "istio_tcp_connections_opened_total", wl); got != 2 {
		t.Errorf("opened = %v, want 2", got)
	}
	a.AddRequest(100)
	b.AddRequest(23)
	a.AddResponse(7)
	a.AddRequest(0)
	a.AddResponse(-1)
	if got := value(t, reg, "istio_tcp_received_bytes_total", wl); got != 123 {
		t.Errorf("received (request) bytes = %v, want 123", got)
	}
	if got := value(t, reg, "istio_tcp_sent_bytes_total", wl); got != 7 {
		t.Errorf("sent (response) bytes = %v, want 7", got)
	}
	if req, resp := a.Bytes(); req != 100 || resp != 7 {
		t.Errorf("a.Bytes() = %d, %d, want 100, 7", req, resp)
	}
	if got := gather(t, reg, "istio_tcp_connections_closed_total", wl); len(got) != 1 || got[0].value != 0 {
		t.Errorf("closed before Finish = %+v, want one series at 0", got)
	}

	a.Finish(nil, Result{})
	a.Finish(nil, Result{Flags: FlagDenied}) // ignored: already finished
	b.Finish(nil, Result{Err: errors.New("rbac"), Flags: FlagDenied, Policy: "bar/deny"})
	closed := map[string]float64{}
	for _, s := range gather(t, reg, "istio_tcp_connections_closed_total", wl) {
		closed[s.labels["response_flags"]] = s.value
	}
	if diff := cmp.Diff(map[string]float64{"-": 1, "DENY": 1}, closed); diff != "" {
		t.Errorf("closed by response_flags (-want +got):\n%s", diff)
	}
	// Byte counters keep one series whatever the outcome.
	if got := gather(t, reg, "istio_tcp_received_bytes_total", wl); len(got) != 1 {
		t.Errorf("received bytes: %d series, want 1", len(got))
	}
}

func TestAccessLog(t *testing.T) {
	newRegistry(t)
	tests := []struct {
		name   string
		labels Labels
		ep     Endpoints
		res    Result
		level  string
		want   map[string]any
		absent []string
	}{
		{
			name: "clean mTLS inbound", labels: testLabels("log-ok"),
			ep:    Endpoints{Src: endpoints.Src, Dst: endpoints.Dst, HBONE: "10.0.2.7:8000"},
			level: "INFO",
			want: map[string]any{
				"msg": "connection complete", "direction": "inbound", "bytes_sent": float64(5), "bytes_recv": float64(9),
				"response_flags": "-",
				"src":            map[string]any{"addr": "10.0.1.5:40000", "workload": "sleep", "namespace": "foo", "identity": "spiffe://cluster.local/ns/foo/sa/sleep"},
				"dst": map[string]any{"addr": "10.0.2.7:15008", "hbone_addr": "10.0.2.7:8000", "service": "httpbin.bar.svc.cluster.local",
					"workload": "log-ok", "namespace": "bar", "identity": "spiffe://cluster.local/ns/bar/sa/httpbin"},
			},
			absent: []string{"error", "policy"},
		},
		{
			name: "denied by policy", labels: testLabels("log-deny"), ep: endpoints,
			res:   Result{Err: errors.New("denied by policy bar/deny-all"), Flags: FlagDenied, Policy: "bar/deny-all"},
			level: "WARN",
			want: map[string]any{
				"response_flags": "DENY", "policy": "bar/deny-all", "error": "denied by policy bar/deny-all",
			},
		},
		{
			name: "plaintext has no identities", ep: endpoints,
			labels: func() Labels {
				l := testLabels("log-plain")
				l.SecurityPolicy, l.Reporter = SecurityNone, ReporterSource
				return l
			}(),
			level: "INFO",
			want: map[string]any{
				"direction": "outbound",
				"src":       map[string]any{"addr": "10.0.1.5:40000", "workload": "sleep", "namespace": "foo"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil))
			m := Open(tt.labels, tt.ep)
			m.AddRequest(5)
			m.AddResponse(9)
			m.Finish(log, tt.res)
			m.Finish(log, tt.res)
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != 1 {
				t.Fatalf("%d log lines, want 1:\n%s", len(lines), buf.String())
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
				t.Fatalf("log line is not JSON: %v\n%s", err, lines[0])
			}
			if got["level"] != tt.level {
				t.Errorf("level = %v, want %s", got["level"], tt.level)
			}
			if _, ok := got["duration"].(float64); !ok {
				t.Errorf("duration = %v, want a number of nanoseconds", got["duration"])
			}
			for k, want := range tt.want {
				if diff := cmp.Diff(want, got[k]); diff != "" {
					t.Errorf("%s (-want +got):\n%s", k, diff)
				}
			}
			for _, k := range tt.absent {
				if v, ok := got[k]; ok {
					t.Errorf("%s = %v, want it absent", k, v)
				}
			}
		})
	}
}

func TestPeerFromWorkload(t *testing.T) {
	w := func(labels map[string]string) *workloadv1.Workload {
		return &workloadv1.Workload{Namespace: "bar", Name: "httpbin-1", Identity: "spiffe://td/ns/bar/sa/httpbin", Labels: labels}
	}
	tests := []struct {
		name     string
		w        *workloadv1.Workload
		app, ver string
	}{
		{"no labels: workload name and latest", w(nil), "httpbin-1", "latest"},
		{"app and version", w(map[string]string{"app": "httpbin", "version": "v2"}), "httpbin", "v2"},
		{"app.kubernetes.io wins over app", w(map[string]string{"app": "a", "app.kubernetes.io/name": "b", "version": "1", "app.kubernetes.io/version": "2"}), "b", "2"},
		{"canonical labels win", w(map[string]string{"app": "a", "service.istio.io/canonical-name": "c", "service.istio.io/canonical-revision": "r"}), "c", "r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := Peer{Workload: "httpbin-1", Namespace: "bar", Principal: "spiffe://td/ns/bar/sa/httpbin",
				App: tt.app, Version: tt.ver, CanonicalService: tt.app, CanonicalRevision: tt.ver, Cluster: "c1"}
			if diff := cmp.Diff(want, PeerFromWorkload(tt.w, "c1")); diff != "" {
				t.Errorf("PeerFromWorkload (-want +got):\n%s", diff)
			}
		})
	}
	if got := PeerFromWorkload(nil, "c1"); got != (Peer{Cluster: "c1"}) {
		t.Errorf("PeerFromWorkload(nil) = %+v", got)
	}
	svc := &workloadv1.Service{Namespace: "bar", Name: "httpbin", Hostname: "httpbin.bar.svc.cluster.local"}
	if got, want := ServiceFromProto(svc), (Service{Hostname: "httpbin.bar.svc.cluster.local", Name: "httpbin", Namespace: "bar"}); got != want {
		t.Errorf("ServiceFromProto = %+v, want %+v", got, want)
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestCountConnIncremental reads through a counted server-side socket and
// sees the request bytes in the registry while the connection is still
// open, then the response bytes written back.
func TestCountConnIncremental(t *testing.T) {
	reg := newRegistry(t)
	wl := uniq("incremental")
	client, server := tcpPair(t)
	m := Open(testLabels(wl), endpoints)
	counted := CountConn(server, m, ReadsAreRequest)

	if _, err := client.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	read := 0
	for read < 1000 {
		n, err := counted.Read(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		read += n
	}
	if got := value(t, reg, "istio_tcp_received_bytes_total", wl); got != 1000 {
		t.Errorf("request bytes while open = %v, want 1000", got)
	}
	if _, err := counted.Write(make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	if got := value(t, reg, "istio_tcp_sent_bytes_total", wl); got != 300 {
		t.Errorf("response bytes while open = %v, want 300", got)
	}
	if cw, ok := counted.(interface{ CloseWrite() error }); !ok {
		t.Error("counted TCP conn lost CloseWrite")
	} else if err := cw.CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	got, err := io.ReadAll(client)
	if err != nil || len(got) != 300 {
		t.Errorf("client read %d bytes (%v) after half-close, want 300", len(got), err)
	}
	if nc, ok := counted.(interface{ NetConn() net.Conn }); !ok || nc.NetConn() != server {
		t.Error("NetConn() does not return the wrapped connection")
	}
}

// TestCountConnSplice copies between two TCP sockets through the wrapper
// in both io.Copy directions (the splice paths) and checks the data, the
// totals, and that counts move before the copy ends.
func TestCountConnSplice(t *testing.T) {
	for _, dir := range []struct {
		name string
		// copy runs io.Copy so that the wrapper is dst (ReadFrom) or src
		// (WriteTo); counted is the side wrapped.
		viaReadFrom bool
	}{{"ReadFrom", true}, {"WriteTo", false}} {
		t.Run(dir.name, func(t *testing.T) {
			reg := newRegistry(t)
			wl := uniq("splice-" + dir.name)
			m := Open(testLabels(wl), endpoints)
			// client -> [inA | proxy | outB] -> server
			clientA, inA := tcpPair(t)
			outB, serverB := tcpPair(t)

			copied := make(chan error, 1)
			go func() {
				var err error
				if dir.viaReadFrom {
					// Wrapper faces the destination: writes are requests.
					_, err = io.Copy(CountConn(outB, m, ReadsAreResponse), inA)
				} else {
					// Wrapper faces the source: reads are requests.
					_, err = io.Copy(outB, CountConn(inA, m, ReadsAreRequest))
				}
				outB.CloseWrite()
				copied <- err
			}()

			const size = 1 << 20
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			received := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(serverB)
				received <- b
			}()
			// Send the first 3/4, see counts move while the copy runs.
			if _, err := clientA.Write(payload[:3*size/4]); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 10*time.Second, "request bytes counted before EOF", func() bool {
				req, _ := m.Bytes()
				return req >= size/2
			})
			if _, err := clientA.Write(payload[3*size/4:]); err != nil {
				t.Fatal(err)
			}
			clientA.CloseWrite()
			if err := <-copied; err != nil {
				t.Fatalf("copy: %v", err)
			}
			if got := <-received; !bytes.Equal(got, payload) {
				t.Fatalf("server received %d bytes, want the %d-byte payload intact", len(got), size)
			}
			if req, resp := m.Bytes(); req != size || resp != 0 {
				t.Errorf("Bytes() = %d, %d, want %d, 0", req, resp, size)
			}
			if got := value(t, reg, "istio_tcp_received_bytes_total", wl); got != size {
				t.Errorf("istio_tcp_received_bytes_total = %v, want %d", got, size)
			}
		})
	}
}

// TestCountConnGenericCopy covers the non-splice paths (a wrapper around
// something that is not a TCP socket).
func TestCountConnGenericCopy(t *testing.T) {
	newRegistry(t)
	m := Open(testLabels("generic"), endpoints)
	a, b := net.Pipe()
	defer a.Close()
	counted := CountConn(a, m, ReadsAreRequest)
	done := make(chan error, 1)
	go func() {
		_, err := b.Write([]byte("hello world"))
		b.Close()
		done <- err
	}()
	var sink bytes.Buffer
	n, err := io.Copy(&sink, counted) // WriteTo, generic
	if err != nil || n != 11 || sink.String() != "hello world" {
		t.Fatalf("io.Copy from wrapper = %d, %v, %q", n, err, sink.String())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c, d := net.Pipe()
	defer d.Close()
	counted2 := CountConn(c, m, ReadsAreRequest)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(d); got <- b }()
	if n, err := io.Copy(counted2, strings.NewReader("response!")); err != nil || n != 9 { // ReadFrom, generic
		t.Fatalf("io.Copy to wrapper = %d, %v", n, err)
	}
	c.Close()
	if b := <-got; string(b) != "response!" {
		t.Errorf("peer got %q", b)
	}
	if req, resp := m.Bytes(); req != 11 || resp != 9 {
		t.Errorf("Bytes() = %d, %d, want 11, 9", req, resp)
	}
	if err := counted2.(interface{ CloseWrite() error }).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("CloseWrite on a pipe = %v, want ErrUnsupported", err)
	}
}

// nopConn is a net.Conn whose Read and Write do nothing, to measure the
// wrapper alone.
type nopConn struct{ net.Conn }

func (nopConn) Read(p []byte) (int, error)  { return len(p), nil }
func (nopConn) Write(p []byte) (int, error) { return len(p), nil }

func TestAccountingDoesNotAllocate(t *testing.T) {
	newRegistry(t)
	m := Open(testLabels("allocs"), endpoints)
	c := CountConn(nopConn{}, m, ReadsAreRequest)
	buf := make([]byte, 1024)
	for name, f := range map[string]func(){
		"AddRequest":  func() { m.AddRequest(10) },
		"AddResponse": func() { m.AddResponse(10) },
		"Write":       func() { c.Write(buf) },
		"Read":        func() { c.Read(buf) },
	} {
		if allocs := testing.AllocsPerRun(1000, f); allocs != 0 {
			t.Errorf("%s allocates %.1f times per call, want 0", name, allocs)
		}
	}
}

func TestLabelValuesMatchNames(t *testing.T) {
	l := testLabels("x")
	if got := len(l.values("")); got != len(labelNames) {
		t.Fatalf("values() has %d entries, labelNames %d", got, len(labelNames))
	}
	if i := slices.Index(labelNames, "response_flags"); l.values(FlagDenied)[i] != "DENY" {
		t.Errorf("response_flags value is not at its name's index")
	}
}

func TestRequestKeyHoldsTheHTTPLabels(t *testing.T) {
	if len(requestKey{}) != len(httpLabelNames) {
		t.Fatalf("requestKey has %d values, httpLabelNames %d", len(requestKey{}), len(httpLabelNames))
	}
}

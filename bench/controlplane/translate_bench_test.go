package controlplane

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/source/file"
	"github.com/ambitmesh/ambit/internal/control/translate"
	"github.com/ambitmesh/ambit/internal/control/xds"
)

// small keeps the checks that run in every `go test ./...` (with -race)
// quick; the benchmarks use Default.
var small = Size{Workloads: 400, Services: 40, Routes: 40, Nodes: 5, Namespaces: 4, Waypoints: 2}

// mustTranslate translates res and fails unless every object was accepted
// and the source reported nothing: a benchmark of a half-rejected mesh would
// measure the wrong thing.
func mustTranslate(tb testing.TB, res *resources.Resources) *translate.Result {
	tb.Helper()
	r := translate.Translate(res)
	if len(r.SourceErrors) > 0 {
		tb.Fatalf("synthetic config has %d source errors, first: %v", len(r.SourceErrors), r.SourceErrors[0])
	}
	if rej := r.Rejected(); len(rej) > 0 {
		for i := range r.Status {
			if r.Status[i].Rejected() {
				tb.Fatalf("synthetic config: %d objects rejected, first: %s: %s", len(rej), r.Status[i].String(), r.Status[i].Problem())
			}
		}
	}
	return r
}

// routeCount counts the routes in the model's gateways.
func routeCount(m *model.Mesh) (ingress, mesh int) {
	for _, g := range m.Gateways {
		for _, l := range g.Listeners {
			for _, vh := range l.VirtualHosts {
				ingress += len(vh.Routes)
			}
		}
		for _, sr := range g.MeshRoutes {
			mesh += len(sr.Routes)
		}
	}
	return ingress, mesh
}

func TestSyntheticConfigTranslates(t *testing.T) {
	for _, sz := range []Size{small, {Workloads: 100, Services: 10, Routes: 10, Nodes: 3, Namespaces: 2, Waypoints: 0}} {
		t.Run(fmt.Sprintf("%dw-%dwp", sz.Workloads, sz.Waypoints), func(t *testing.T) {
			r := mustTranslate(t, NewConfig(sz).Resources())
			m := r.Mesh
			bound, endpoints := 0, 0
			for _, s := range m.Services {
				endpoints += len(s.Endpoints)
				if s.Waypoint != nil {
					bound++
				}
			}
			ingress, mesh := routeCount(m)
			got := map[string]int{
				"workloads": len(m.Workloads), "services": len(m.Services), "endpoints": endpoints,
				"waypoint-bound services": bound, "gateways": len(m.Gateways), "policies": len(m.Policies),
				"ingress routes": ingress, "mesh routes": mesh,
			}
			wantMesh := sz.Routes / 2
			if sz.Waypoints == 0 {
				wantMesh = 0
			}
			want := map[string]int{
				"workloads": sz.Workloads, "services": sz.Services, "endpoints": sz.Workloads,
				"waypoint-bound services": min(sz.Waypoints, 1) * sz.Services / 2, "gateways": 1 + sz.Waypoints,
				"policies": sz.Policies(), "ingress routes": sz.Routes - wantMesh, "mesh routes": wantMesh,
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("translated synthetic mesh (-want +got):\n%s", d)
			}
			if _, err := xds.ComputeViews(m, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSyntheticConfigFilesMatchMemory checks that the YAML files say exactly
// what the in-memory objects say, so the file benchmarks and the end-to-end
// harness measure the same mesh as BenchmarkTranslate.
func TestSyntheticConfigFilesMatchMemory(t *testing.T) {
	c := NewConfig(small)
	dir := filepath.Join(t.TempDir(), "config")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(dir); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if d := cmp.Diff(c.Files(), names); d != "" {
		t.Errorf("files written (-want +got):\n%s", d)
	}
	res, err := file.New(dir, file.Options{}).Load()
	if err != nil {
		t.Fatal(err)
	}
	fromFiles, inMemory := mustTranslate(t, res), mustTranslate(t, c.Resources())
	opts := cmp.Options{cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.EquateEmpty()}
	if d := cmp.Diff(inMemory.Mesh, fromFiles.Mesh, opts); d != "" {
		t.Errorf("model from files differs from the in-memory one (-memory +files):\n%s", d)
	}
	if d := cmp.Diff(inMemory.Status, fromFiles.Status, opts); d != "" {
		t.Errorf("status from files differs from the in-memory one (-memory +files):\n%s", d)
	}
}

func TestSetWorkloadAddress(t *testing.T) {
	c := NewConfig(small)
	before := c.Resources()
	ip := netip.MustParseAddr("172.16.0.7")
	const i = 123
	ref, f := c.Workload(i)
	if got := c.SetWorkloadAddress(i, ip); got != f {
		t.Fatalf("SetWorkloadAddress returned file %q, Workload says %q", got, f)
	}
	after := mustTranslate(t, c.Resources()).Mesh
	idx := slices.IndexFunc(after.Workloads, func(w model.Workload) bool { return w.Ref == ref })
	if idx < 0 || !slices.Equal(after.Workloads[idx].Addresses, []netip.Addr{ip}) {
		t.Fatalf("workload %s after the change: %+v", ref, after.Workloads[idx])
	}
	old := mustTranslate(t, before).Mesh
	if idx := slices.IndexFunc(old.Workloads, func(w model.Workload) bool { return w.Ref == ref }); slices.Equal(old.Workloads[idx].Addresses, []netip.Addr{ip}) {
		t.Fatal("the change leaked into a snapshot built before it")
	}
	data, err := c.Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := resources.Decode(f, data)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	found := false
	for _, o := range objs {
		if o.GetName() == ref.Name && o.GetNamespace() == ref.Namespace && o.Kind() == "Workload" {
			found = true
		}
	}
	if !found {
		t.Fatalf("%s does not contain workload %s", f, ref)
	}
}

// BenchmarkTranslate measures the pure translate stage over the full
// synthetic mesh: resources (10,000 Workloads, 1,000 Services and
// HTTPRoutes, 11 Gateways, 121 policies) -> model + status.
func BenchmarkTranslate(b *testing.B) {
	res := NewConfig(Default).Resources()
	mustTranslate(b, res)
	b.ReportAllocs()
	for b.Loop() {
		translate.Translate(res)
	}
}

// BenchmarkRetranslate measures what the control plane translates per
// change: translate.Retranslate from the previous result after one
// workload's address moved (the patch path; BenchmarkTranslate is the full
// translation it replaces).
func BenchmarkRetranslate(b *testing.B) {
	c := NewConfig(Default)
	res := c.Resources()
	prev := mustTranslate(b, res)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		b.StopTimer()
		c.SetWorkloadAddress((i*7919)%Default.Workloads, netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}))
		next := c.Resources()
		b.StartTimer()
		prev, res = translate.Retranslate(prev, res, next), next
	}
}

// BenchmarkTranslateAndViews is what the control plane does per change
// after the file source: Retranslate, then compute every proxy view reusing
// the previous ones (one workload moved each time).
func BenchmarkTranslateAndViews(b *testing.B) {
	c := NewConfig(Default)
	res := c.Resources()
	result := mustTranslate(b, res)
	prev, err := xds.ComputeViews(result.Mesh, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		c.SetWorkloadAddress((i*7919)%Default.Workloads, netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}))
		b.StopTimer()
		next := c.Resources()
		b.StartTimer()
		result, res = translate.Retranslate(result, res, next), next
		if prev, err = xds.ComputeViews(result.Mesh, prev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewsAfterTranslate measures only the view computation of
// BenchmarkTranslateAndViews: each iteration retranslates the edited config
// with the timer stopped, then times ComputeViews with the previous views,
// as the control plane does.
func BenchmarkViewsAfterTranslate(b *testing.B) {
	c := NewConfig(Default)
	res := c.Resources()
	result := mustTranslate(b, res)
	prev, err := xds.ComputeViews(result.Mesh, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		b.StopTimer()
		c.SetWorkloadAddress((i*7919)%Default.Workloads, netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}))
		next := c.Resources()
		result, res = translate.Retranslate(result, res, next), next
		b.StartTimer()
		if prev, err = xds.ComputeViews(result.Mesh, prev); err != nil {
			b.Fatal(err)
		}
	}
}

// writeConfig writes the default synthetic config into a fresh directory
// (a subdirectory, so that WriteFile can stage next to it).
func writeConfig(b *testing.B, c *Config) string {
	dir := filepath.Join(b.TempDir(), "config")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := c.Write(dir); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkFileLoad measures the file source's one-shot Load of the full
// synthetic config (23 files, 10,000 Workloads): read, strict decode,
// generations, Build. The result must translate without a rejected object.
func BenchmarkFileLoad(b *testing.B) {
	c := NewConfig(Default)
	dir := writeConfig(b, c)
	var size int64
	for _, f := range c.Files() {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			b.Fatal(err)
		}
		size += st.Size()
	}
	src := file.New(dir, file.Options{})
	res, err := src.Load()
	if err != nil {
		b.Fatal(err)
	}
	mustTranslate(b, res)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := src.Load(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFileReload measures the running (watched) file source after one
// workload's address is edited in its namespace file (~500 Workloads): from
// the atomic rename to the new snapshot being emitted. The debounce is set
// to 1µs so the figure is the source's own work: the rescan (every file read
// and hashed, the changed one decoded) and the snapshot build. Each snapshot
// must carry the new address.
func BenchmarkFileReload(b *testing.B) {
	c := NewConfig(Default)
	dir := writeConfig(b, c)
	src := file.New(dir, file.Options{Debounce: time.Microsecond})
	snaps := make(chan *resources.Resources, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(r *resources.Resources) { snaps <- r }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	wait := func() *resources.Resources {
		select {
		case r := <-snaps:
			return r
		case err := <-done:
			b.Fatalf("file source stopped: %v", err)
		case <-time.After(time.Minute):
			b.Fatal("no snapshot within 1m")
		}
		return nil
	}
	mustTranslate(b, wait())

	var last *resources.Resources
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		w := (i * 7919) % Default.Workloads
		ip := netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)})
		f := c.SetWorkloadAddress(w, ip)
		b.StopTimer()
		install, err := c.Stage(dir, f) // encoding is the editor's work, not the source's
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := install(); err != nil {
			b.Fatal(err)
		}
		last = wait()
		ref, _ := c.Workload(w)
		b.StopTimer()
		if got := workloadAddress(last, ref); got != ip.String() {
			b.Fatalf("snapshot after editing %s has address %q for %s, want %s", f, got, ref, ip)
		}
		b.StartTimer()
	}
	b.StopTimer()
	mustTranslate(b, last)
}

func workloadAddress(r *resources.Resources, ref model.Ref) string {
	for _, w := range r.Workloads {
		if w.Namespace == ref.Namespace && w.Name == ref.Name && len(w.Spec.Addresses) == 1 {
			return w.Spec.Addresses[0]
		}
	}
	return ""
}

package file

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/ambitmesh/ambit/internal/control/resources"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func service(name, clusterIP string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\nspec:\n  clusterIP: %s\n", name, clusterIP)
}

func route(name string) string {
	return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: %s\n  namespace: shop\n", name)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write to a temporary name and rename, like editors do, so that a
	// rescan never reads a half-written file in the tests that do not want it.
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// names lists "Kind ns/name@generation" of every object in r.
func names(r *resources.Resources) []string {
	var out []string
	add := func(kind string, o interface {
		GetNamespace() string
		GetName() string
		GetGeneration() int64
	}) {
		ref := o.GetName()
		if o.GetNamespace() != "" {
			ref = o.GetNamespace() + "/" + ref
		}
		out = append(out, fmt.Sprintf("%s %s@%d", kind, ref, o.GetGeneration()))
	}
	if r.MeshConfig != nil {
		add("MeshConfig", r.MeshConfig)
	}
	for _, o := range r.Namespaces {
		add("Namespace", o)
	}
	for _, o := range r.Services {
		add("Service", o)
	}
	for _, o := range r.ServiceAccounts {
		add("ServiceAccount", o)
	}
	for _, o := range r.HTTPRoutes {
		add("HTTPRoute", o)
	}
	slices.Sort(out)
	return out
}

func errorStrings(r *resources.Resources) []string {
	var out []string
	for _, e := range r.Errors {
		out = append(out, e.Error())
	}
	return out
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), service("a", "10.0.0.1"))
	write(t, filepath.Join(dir, "nested", "deeper", "b.yml"), service("b", "10.0.0.2"))
	write(t, filepath.Join(dir, "UPPER.YAML"), service("upper", "10.0.0.3"))
	// None of these are read: a broken one would show up in Errors.
	for _, skipped := range []string{".hidden.yaml", ".git/c.yaml", "a.yaml~", "#a.yaml#", ".a.yaml.swp", "README.md", "nested/.cache/d.yaml"} {
		write(t, filepath.Join(dir, skipped), "this: is: not: yaml")
	}
	// Kubernetes mounts ConfigMap keys as symlinks into a hidden directory.
	write(t, filepath.Join(dir, "..data", "linked.yaml"), service("linked", "10.0.0.4"))
	if err := os.Symlink(filepath.Join("..data", "linked.yaml"), filepath.Join(dir, "linked.yaml")); err != nil {
		t.Fatal(err)
	}

	r, err := New(dir, Options{}).Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) > 0 {
		t.Errorf("unexpected errors: %v", r.Errors)
	}
	want := []string{"Service default/a@1", "Service default/b@1", "Service default/linked@1", "Service default/upper@1"}
	if diff := cmp.Diff(want, names(r)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
}

func TestLoadSingleFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	write(t, path, service("a", "10.0.0.1")+"---\n"+route("r"))
	r, err := New(path, Options{}).Load()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"HTTPRoute shop/r@1", "Service default/a@1"}, names(r)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
}

func TestLoadMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	_, err := New(dir, Options{}).Load()
	if err == nil {
		t.Fatal("Load of a missing directory succeeded")
	}
	for _, want := range []string{"file source", dir, "create it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestLoadReportsBrokenFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	write(t, good, service("a", "10.0.0.1"))
	// A file is applied as a whole: its valid first document is not used either.
	write(t, bad, service("b", "10.0.0.2")+"---\n"+route("r")+"spec:\n  rulez: []\n")
	r, err := New(dir, Options{}).Load()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"Service default/a@1"}, names(r)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	want := []string{
		bad + ": file not applied until its errors are fixed",
		bad + `: document 2: HTTPRoute shop/r: unknown field "spec.rulez"`,
	}
	if diff := cmp.Diff(want, errorStrings(r)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

func TestLoadDuplicateAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), service("web", "10.0.0.1"))
	write(t, filepath.Join(dir, "b.yaml"), service("web", "10.0.0.2"))
	r, err := New(dir, Options{}).Load()
	if err != nil {
		t.Fatal(err)
	}
	if s := r.Service("default", "web"); s == nil || s.Spec.ClusterIP != "10.0.0.1" {
		t.Errorf("Service = %+v, want the one from a.yaml (first by path)", s)
	}
	want := []string{filepath.Join(dir, "b.yaml") + ": document 1: Service default/web: duplicate object: already defined in " +
		filepath.Join(dir, "a.yaml") + " document 1, which is used; remove one of them"}
	if diff := cmp.Diff(want, errorStrings(r)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

// TestGenerations drives the state directly: generations must follow spec
// changes exactly, which needs no watcher.
func TestGenerations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.yaml")
	st := newState(dir)
	step := func(content string) *resources.Resources {
		t.Helper()
		if content == "" {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		} else {
			write(t, path, content)
		}
		if _, err := st.rescan(); err != nil {
			t.Fatal(err)
		}
		return st.snapshot()
	}
	gen := func(r *resources.Resources, name string) int64 {
		t.Helper()
		s := r.Service("default", name)
		if s == nil {
			t.Fatalf("Service %s missing", name)
		}
		return s.Generation
	}

	r1 := step(service("a", "10.0.0.1") + "---\n" + service("b", "10.0.0.9"))
	if g := gen(r1, "a"); g != 1 {
		t.Errorf("first sight: generation %d, want 1", g)
	}
	r2 := step(service("a", "10.0.0.2") + "---\n" + service("b", "10.0.0.9"))
	if g := gen(r2, "a"); g != 2 {
		t.Errorf("after a spec change: generation %d, want 2", g)
	}
	if g := gen(r2, "b"); g != 1 {
		t.Errorf("unchanged neighbour: generation %d, want 1", g)
	}
	if g := gen(r1, "a"); g != 1 {
		t.Errorf("an earlier snapshot was modified: generation %d, want 1", g)
	}
	labelled := strings.Replace(service("a", "10.0.0.2"), "  name: a\n", "  name: a\n  labels:\n    tier: web\n", 1)
	r3 := step(labelled + "---\n" + service("b", "10.0.0.9"))
	if g := gen(r3, "a"); g != 2 {
		t.Errorf("after a metadata-only change: generation %d, want 2", g)
	}
	if r3.Service("default", "a").Labels["tier"] != "web" || len(r3.Errors) > 0 {
		t.Errorf("label change not applied; errors: %v", r3.Errors)
	}
	r4 := step(labelled + "---\n" + service("b", "10.0.0.9") + "---\nbroken: [\n")
	if len(r4.Errors) == 0 {
		t.Error("broken file reported no error")
	}
	if g := gen(r4, "a"); g != 2 {
		t.Errorf("kept from the last good version: generation %d, want 2", g)
	}
	step("")
	r6 := step(service("a", "10.0.0.3"))
	if g := gen(r6, "a"); g != 1 {
		t.Errorf("recreated after delete: generation %d, want 1", g)
	}

	// Rewriting identical content is not a change.
	write(t, path, service("a", "10.0.0.3"))
	if _, err := st.rescan(); err != nil {
		t.Fatal(err)
	}
	if st.lastChanged {
		t.Error("rescan after rewriting identical content reports a change")
	}
}

type run struct {
	snaps chan *resources.Resources
	stop  func() error
}

// start runs a Source until the test ends and collects its snapshots.
func start(t *testing.T, dir string, opts Options) *run {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{snaps: make(chan *resources.Resources, 1000)}
	done := make(chan error, 1)
	go func() {
		done <- New(dir, opts).Run(ctx, func(res *resources.Resources) { r.snaps <- res })
	}()
	stopped := false
	var err error
	r.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { _ = r.stop() })
	return r
}

// next waits for a snapshot that satisfies ok, returning it; snapshots in
// between (e.g. an editor's intermediate state) are skipped.
func (r *run) next(t *testing.T, what string, ok func(*resources.Resources) bool) *resources.Resources {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var last *resources.Resources
	for {
		select {
		case s := <-r.snaps:
			if ok(s) {
				return s
			}
			last = s
		case <-deadline:
			if last != nil {
				t.Fatalf("no snapshot with %s; last one has objects %v, errors %v", what, names(last), errorStrings(last))
			}
			t.Fatalf("no snapshot with %s", what)
		}
	}
}

func hasNames(want ...string) func(*resources.Resources) bool {
	slices.Sort(want)
	return func(r *resources.Resources) bool { return slices.Equal(names(r), want) }
}

func TestRunFollowsChanges(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")
	write(t, a, service("a", "10.0.0.1"))
	write(t, b, route("r"))
	r := start(t, dir, Options{Debounce: 10 * time.Millisecond})

	initial := r.next(t, "the initial objects", func(*resources.Resources) bool { return true })
	if diff := cmp.Diff([]string{"HTTPRoute shop/r@1", "Service default/a@1"}, names(initial)); diff != "" {
		t.Fatalf("initial snapshot (-want +got):\n%s", diff)
	}

	t.Log("edit: a new snapshot with the new spec and generation 2")
	write(t, a, service("a", "10.0.0.2"))
	s := r.next(t, "the edited Service", hasNames("HTTPRoute shop/r@1", "Service default/a@2"))
	if ip := s.Service("default", "a").Spec.ClusterIP; ip != "10.0.0.2" {
		t.Errorf("clusterIP = %s, want 10.0.0.2", ip)
	}
	if len(s.Errors) > 0 {
		t.Errorf("unexpected errors: %v", s.Errors)
	}

	t.Log("broken edit: the last good objects stay, the error is reported")
	write(t, a, service("a", "10.0.0.3")+"  clusterIp: oops\n")
	s = r.next(t, "the error for a.yaml", func(r *resources.Resources) bool { return len(r.Errors) > 0 })
	wantErrs := []string{
		a + ": file not applied until its errors are fixed; its last good version (1 objects) stays in force meanwhile",
		a + `: document 1: Service default/a: unknown field "spec.clusterIp"`,
	}
	if diff := cmp.Diff(wantErrs, errorStrings(s)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"HTTPRoute shop/r@1", "Service default/a@2"}, names(s)); diff != "" {
		t.Errorf("objects while broken (-want +got):\n%s", diff)
	}
	if ip := s.Service("default", "a").Spec.ClusterIP; ip != "10.0.0.2" {
		t.Errorf("clusterIP while broken = %s, want the last good 10.0.0.2", ip)
	}

	t.Log("fix: the error goes away and the fixed version applies")
	write(t, a, service("a", "10.0.0.3"))
	s = r.next(t, "the fixed Service", func(r *resources.Resources) bool {
		return len(r.Errors) == 0 && r.Service("default", "a") != nil && r.Service("default", "a").Spec.ClusterIP == "10.0.0.3"
	})
	if g := s.Service("default", "a").Generation; g != 3 {
		t.Errorf("generation after fix = %d, want 3", g)
	}

	t.Log("delete: the file's objects go away")
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	r.next(t, "the HTTPRoute removed", hasNames("Service default/a@3"))

	t.Log("new subdirectory, then a directory inside it")
	write(t, filepath.Join(dir, "sub", "c.yaml"), service("c", "10.0.0.4"))
	r.next(t, "the Service from sub/", hasNames("Service default/a@3", "Service default/c@1"))
	write(t, filepath.Join(dir, "sub", "deeper", "d.yaml"), service("d", "10.0.0.5"))
	r.next(t, "the Service from sub/deeper/", hasNames("Service default/a@3", "Service default/c@1", "Service default/d@1"))
	// Files written into the new directory after it was first seen are
	// noticed too, which needs a watch on it.
	write(t, filepath.Join(dir, "sub", "deeper", "e.yaml"), service("e", "10.0.0.6"))
	r.next(t, "the second Service in sub/deeper/", hasNames("Service default/a@3", "Service default/c@1", "Service default/d@1", "Service default/e@1"))

	t.Log("removing the subdirectory removes its objects")
	if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	r.next(t, "only a left", hasNames("Service default/a@3"))

	if err := r.stop(); err != nil {
		t.Errorf("Run returned %v after cancel, want nil", err)
	}
}

func TestRunCoalescesBursts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "burst.yaml")
	write(t, path, service("a", "10.0.0.0"))
	r := start(t, dir, Options{}) // the default debounce
	r.next(t, "the initial snapshot", hasNames("Service default/a@1"))

	const writes = 50
	for i := 1; i <= writes; i++ {
		write(t, path, service("a", fmt.Sprintf("10.0.1.%d", i)))
	}
	final := fmt.Sprintf("10.0.1.%d", writes)
	seen := 0
	r.next(t, "the last write", func(s *resources.Resources) bool {
		seen++
		svc := s.Service("default", "a")
		return svc != nil && svc.Spec.ClusterIP == final
	})
	// 50 writes in a tight loop take far less than the debounce, so one or
	// two snapshots are expected; anything below one per write shows the
	// coalescing without betting on exact scheduling.
	if seen >= writes/2 {
		t.Errorf("%d snapshots for %d writes, want them coalesced", seen, writes)
	}
	t.Logf("%d writes produced %d snapshots", writes, seen)
}

func TestRunMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	err := New(dir, Options{}).Run(context.Background(), func(*resources.Resources) {
		t.Error("emit called for a missing directory")
	})
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Run = %v, want an error naming %s", err, dir)
	}
}

func TestRunDirectoryVanishesAndReturns(t *testing.T) {
	defer func(d time.Duration) { rootRetry = d }(rootRetry)
	rootRetry = 20 * time.Millisecond

	dir := filepath.Join(t.TempDir(), "config")
	write(t, filepath.Join(dir, "a.yaml"), service("a", "10.0.0.1"))
	r := start(t, dir, Options{Debounce: 10 * time.Millisecond})
	r.next(t, "the initial snapshot", hasNames("Service default/a@1"))

	// Moved away in one step, as when a mount disappears: the objects stay
	// and the snapshot says why.
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	s := r.next(t, "an error for the directory", func(r *resources.Resources) bool { return len(r.Errors) > 0 })
	if diff := cmp.Diff([]string{"Service default/a@1"}, names(s)); diff != "" {
		t.Errorf("objects while the directory is gone (-want +got):\n%s", diff)
	}
	if e := s.Errors[0]; e.Source != dir || !strings.Contains(e.Message, "stays in force") {
		t.Errorf("error = %v, want one for %s saying the configuration stays", e, dir)
	}

	write(t, filepath.Join(dir, "b.yaml"), service("b", "10.0.0.2"))
	r.next(t, "the new directory's contents", func(r *resources.Resources) bool {
		return len(r.Errors) == 0 && slices.Equal(names(r), []string{"Service default/b@1"})
	})
	// And it is watched again.
	write(t, filepath.Join(dir, "c.yaml"), service("c", "10.0.0.3"))
	r.next(t, "a file added after the return", hasNames("Service default/b@1", "Service default/c@1"))
}

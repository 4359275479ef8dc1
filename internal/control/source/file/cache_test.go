package file

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambitmesh/ambit/internal/control/resources"
)

// stepper drives a state by hand: write files, rescan, snapshot.
type stepper struct {
	t   *testing.T
	dir string
	st  *state
}

func newStepper(t *testing.T) *stepper {
	dir := t.TempDir()
	return &stepper{t: t, dir: dir, st: newState(dir)}
}

// step writes (or with "" deletes) files, rescans and returns the snapshot
// and how many documents were decoded for it.
func (s *stepper) step(files map[string]string) (*resources.Resources, int) {
	s.t.Helper()
	for name, content := range files {
		path := filepath.Join(s.dir, name)
		if content == "" {
			if err := os.Remove(path); err != nil {
				s.t.Fatal(err)
			}
			continue
		}
		write(s.t, path, content)
	}
	before := s.st.decodes
	if _, err := s.st.rescan(); err != nil {
		s.t.Fatal(err)
	}
	return s.st.snapshot(), s.st.decodes - before
}

func docs(d ...string) string { return strings.Join(d, "---\n") }

// fresh is what a source that never saw earlier versions makes of the
// directory: what the incremental one must agree with.
func (s *stepper) fresh() *resources.Resources {
	s.t.Helper()
	r, err := New(s.dir, Options{}).Load()
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

var genSuffix = regexp.MustCompile(`@\d+$`)

func namesNoGen(r *resources.Resources) []string {
	var out []string
	for _, n := range names(r) {
		out = append(out, genSuffix.ReplaceAllString(n, ""))
	}
	return out
}

func TestCacheDecodesOnlyChangedDocuments(t *testing.T) {
	s := newStepper(t)
	a, b, c := service("a", "10.0.0.1"), service("b", "10.0.0.2"), service("c", "10.0.0.3")

	tests := []struct {
		name        string
		content     string
		wantDecodes int
		want        []string
	}{
		{"first read", docs(a, b, c), 3, []string{"Service default/a@1", "Service default/b@1", "Service default/c@1"}},
		{"one document edited", docs(a, service("b", "10.0.0.9"), c), 1, []string{"Service default/a@1", "Service default/b@2", "Service default/c@1"}},
		{"documents reordered", docs(c, service("b", "10.0.0.9"), a), 0, []string{"Service default/a@1", "Service default/b@2", "Service default/c@1"}},
		{"document inserted in front", docs(service("d", "10.0.0.4"), c, service("b", "10.0.0.9"), a), 1, []string{"Service default/a@1", "Service default/b@2", "Service default/c@1", "Service default/d@1"}},
		{"document removed", docs(c, service("b", "10.0.0.9"), a), 0, []string{"Service default/a@1", "Service default/b@2", "Service default/c@1"}},
		{"removed document back", docs(service("d", "10.0.0.4"), c, service("b", "10.0.0.9"), a), 1, []string{"Service default/a@1", "Service default/b@2", "Service default/c@1", "Service default/d@1"}},
	}
	var prev *resources.Resources
	for _, tt := range tests {
		r, n := s.step(map[string]string{"a.yaml": tt.content})
		if n != tt.wantDecodes {
			t.Errorf("%s: decoded %d documents, want %d", tt.name, n, tt.wantDecodes)
		}
		if diff := cmp.Diff(tt.want, names(r)); diff != "" {
			t.Errorf("%s: objects (-want +got):\n%s", tt.name, diff)
		}
		if len(r.Errors) > 0 {
			t.Errorf("%s: unexpected errors %v", tt.name, r.Errors)
		}
		if prev != nil {
			// Unchanged documents hand out the very objects of the last snapshot.
			if got, was := r.Service("default", "a"), prev.Service("default", "a"); got != was {
				t.Errorf("%s: unchanged Service a is a new object", tt.name)
			}
		}
		prev = r
	}
}

func TestCacheErrorsNameCurrentDocument(t *testing.T) {
	s := newStepper(t)
	a, b := service("a", "10.0.0.1"), service("b", "10.0.0.2")
	bad := "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  clusterIP: [\n"
	dupA := service("a", "10.0.0.99")

	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"broken document", map[string]string{"a.yaml": docs(a, bad, b)}, []string{
			"document 2", "line 13"}},
		{"broken document moved down", map[string]string{"a.yaml": docs(service("x", "10.0.0.7"), a, bad, b)}, []string{
			"document 3", "line 20"}},
		{"duplicate in the file", map[string]string{"a.yaml": docs(a, b, dupA)}, []string{
			"a.yaml: document 3: Service default/a: duplicate object: already defined in " + filepath.Join(s.dir, "a.yaml") + " document 1"}},
		{"duplicate with both moved", map[string]string{"a.yaml": docs(service("x", "10.0.0.7"), b, a, dupA)}, []string{
			"a.yaml: document 4: Service default/a: duplicate object: already defined in " + filepath.Join(s.dir, "a.yaml") + " document 3"}},
		{"duplicate in an earlier file wins", map[string]string{"0.yaml": docs(service("yy", "10.0.0.8"), dupA)}, []string{
			"a.yaml: document 3: Service default/a: duplicate object: already defined in " + filepath.Join(s.dir, "0.yaml") + " document 2",
			"a.yaml: document 4: Service default/a: duplicate object: already defined in " + filepath.Join(s.dir, "0.yaml") + " document 2"}},
	}
	for _, tt := range tests {
		r, _ := s.step(tt.files)
		got := strings.Join(errorStrings(r), "\n")
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: errors do not mention %q:\n%s", tt.name, w, got)
			}
		}
		// A source without a cache must say exactly the same.
		f := s.fresh()
		if diff := cmp.Diff(errorStrings(f), errorStrings(r)); diff != "" {
			t.Errorf("%s: errors differ from a fresh load (-fresh +incremental):\n%s", tt.name, diff)
		}
		if diff := cmp.Diff(namesNoGen(f), namesNoGen(r)); diff != "" {
			t.Errorf("%s: objects differ from a fresh load (-fresh +incremental):\n%s", tt.name, diff)
		}
	}
}

func TestCacheBrokenThenFixed(t *testing.T) {
	s := newStepper(t)
	a, b, c := service("a", "10.0.0.1"), service("b", "10.0.0.2"), service("c", "10.0.0.3")
	brokenB := "apiVersion: v1\nkind: Service\nmetadata:\n  name: b\nspec:\n  clusterIPs: 10.0.0.5\n"

	tests := []struct {
		name        string
		content     string
		wantDecodes int
		want        []string
		wantErrors  bool
	}{
		{"good", docs(a, b, c), 3, []string{"Service default/a@1", "Service default/b@1", "Service default/c@1"}, false},
		// Only the broken document is decoded; the last good version stays.
		{"b broken", docs(a, brokenB, c), 1, []string{"Service default/a@1", "Service default/b@1", "Service default/c@1"}, true},
		{"still broken, a edited", docs(service("a", "10.0.0.8"), brokenB, c), 2, []string{"Service default/a@1", "Service default/b@1", "Service default/c@1"}, true},
		{"b fixed with a new spec", docs(service("a", "10.0.0.8"), service("b", "10.0.0.5"), c), 1, []string{"Service default/a@2", "Service default/b@2", "Service default/c@1"}, false},
		{"b back to the first version", docs(service("a", "10.0.0.8"), b, c), 1, []string{"Service default/a@2", "Service default/b@3", "Service default/c@1"}, false},
	}
	for _, tt := range tests {
		r, n := s.step(map[string]string{"a.yaml": tt.content})
		if n != tt.wantDecodes {
			t.Errorf("%s: decoded %d documents, want %d", tt.name, n, tt.wantDecodes)
		}
		if diff := cmp.Diff(tt.want, names(r)); diff != "" {
			t.Errorf("%s: objects (-want +got):\n%s", tt.name, diff)
		}
		if got := len(r.Errors) > 0; got != tt.wantErrors {
			t.Errorf("%s: errors %v, want errors: %v", tt.name, r.Errors, tt.wantErrors)
		}
		if tt.wantErrors && !strings.Contains(strings.Join(errorStrings(r), "\n"), "document 2") {
			t.Errorf("%s: errors do not name document 2: %v", tt.name, r.Errors)
		}
	}
}

// TestSnapshotPatchesMatchRebuild makes random edits across several files
// (duplicates within and across files, several MeshConfigs, broken
// documents, files deleted and recreated) and checks every patched snapshot
// against resources.Build over the same objects, and, while no file is
// broken, against a fresh load.
func TestSnapshotPatchesMatchRebuild(t *testing.T) {
	s := newStepper(t)
	rng := rand.New(rand.NewPCG(7, 11))
	doc := func() string {
		switch n := rng.IntN(20); {
		case n == 0:
			return "apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\nspec:\n  ports: nope\n"
		case n == 1:
			return fmt.Sprintf("apiVersion: ambit.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: mesh-%d\n", rng.IntN(3))
		case n < 8:
			return route(fmt.Sprintf("r-%d", rng.IntN(8)))
		default:
			return service(fmt.Sprintf("s-%d", rng.IntN(15)), fmt.Sprintf("10.0.0.%d", rng.IntN(4)))
		}
	}
	fileNames := []string{"a.yaml", "b.yaml", "sub/c.yaml", "z.yml"}
	content := map[string][]string{}
	for step := range 200 {
		changes := map[string]string{}
		for range 1 + rng.IntN(2) {
			name := fileNames[rng.IntN(len(fileNames))]
			d := content[name]
			switch op := rng.IntN(10); {
			case op == 0 && d != nil:
				d = nil // delete the file
			case op < 3 && len(d) > 0:
				i := rng.IntN(len(d))
				d = slices.Delete(slices.Clone(d), i, i+1)
			case op < 5 && len(d) > 1:
				d = slices.Clone(d)
				i, j := rng.IntN(len(d)), rng.IntN(len(d))
				d[i], d[j] = d[j], d[i]
			case op < 7 && len(d) > 0:
				d = slices.Clone(d)
				d[rng.IntN(len(d))] = doc()
			default:
				d = slices.Insert(slices.Clone(d), rng.IntN(len(d)+1), doc())
			}
			if len(d) == 0 {
				d = nil // an empty file is written as no file
			}
			if d == nil && content[name] == nil {
				continue
			}
			if d == nil {
				changes[name] = ""
				delete(content, name)
				continue
			}
			content[name] = d
			changes[name] = docs(d...)
		}
		r, _ := s.step(changes)

		want := s.st.rebuild()
		want.Errors = append(append(want.Errors, s.st.walkErr...), fileErrors(s.st)...)
		want.Sort()
		if !reflect.DeepEqual(r, want) {
			t.Fatalf("step %d: patched snapshot differs from Build:\n%s", step, cmp.Diff(names(want), names(r))+cmp.Diff(errorStrings(want), errorStrings(r)))
		}
		if len(fileErrors(s.st)) > 0 {
			continue // a fresh load does not know the broken files' last good versions
		}
		f := s.fresh()
		if diff := cmp.Diff(namesNoGen(f), namesNoGen(r)); diff != "" {
			t.Fatalf("step %d: objects differ from a fresh load (-fresh +incremental):\n%s", step, diff)
		}
		if diff := cmp.Diff(errorStrings(f), errorStrings(r)); diff != "" {
			t.Fatalf("step %d: errors differ from a fresh load (-fresh +incremental):\n%s", step, diff)
		}
	}
}

func fileErrors(st *state) []resources.SourceError {
	var out []resources.SourceError
	for _, f := range st.files {
		out = append(out, f.errs...)
	}
	return out
}

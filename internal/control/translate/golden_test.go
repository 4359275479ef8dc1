package translate

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"sigs.k8s.io/yaml"

	"github.com/ambitmesh/ambit/internal/control/resources"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the current translator")

// TestGolden translates every testdata/<case>.in.yaml and compares model and
// status with <case>.out.yaml. Run `go test ./internal/control/translate -update`
// after an intended change and review the diff.
func TestGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) == 0 {
		t.Fatal("no golden cases in testdata/")
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			got := translateFile(t, in)
			out := strings.TrimSuffix(in, ".in.yaml") + ".out.yaml"
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s differs (-want +got):\n%s", out, diff)
			}
		})
	}
}

// translateFile decodes a case strictly and returns the YAML of its result.
func translateFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := resources.Decode(filepath.Base(path), data)
	res := resources.Build(objs)
	res.Errors = append(res.Errors, errs...)
	res.Sort()
	result := Translate(res)
	// Purity: a second translation of the same input is identical.
	if diff := cmp.Diff(result, Translate(res), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Fatalf("Translate is not deterministic:\n%s", diff)
	}
	b, err := yaml.Marshal(result)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

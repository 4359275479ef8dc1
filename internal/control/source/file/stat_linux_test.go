package file

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/testkit"
)

func namespaceDoc(name string) string {
	return "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + name + "}\n"
}

// A rescan reads only files whose stat changed, once their last change is
// old enough to trust the stat; an in-place edit of the same size is still
// seen.
func TestUnchangedFilesAreNotReread(t *testing.T) {
	saved := racyWindow
	racyWindow = 20 * time.Millisecond
	t.Cleanup(func() { racyWindow = saved })
	s := newStepper(t)
	s.step(map[string]string{"a.yaml": namespaceDoc("aa"), "b.yaml": namespaceDoc("bb")})
	a := filepath.Join(s.dir, "a.yaml")
	testkit.Eventually(t, 10*time.Second, "the files to be older than the racy window", func() bool {
		for _, f := range []string{a, filepath.Join(s.dir, "b.yaml")} {
			if st, ok := statFile(f); !ok || time.Since(time.Unix(0, st.ctime)) < 2*racyWindow {
				return false
			}
		}
		return true
	})
	// Read once more (they were too recent to trust before), then never again.
	s.step(nil)
	reads := s.st.reads
	s.step(nil)
	if d := s.st.reads - reads; d != 0 {
		t.Fatalf("a rescan of unchanged, old files read %d of them, want 0", d)
	}

	if err := os.WriteFile(a, []byte(namespaceDoc("ab")), 0o644); err != nil { // in place, same size
		t.Fatal(err)
	}
	res, _ := s.step(nil)
	if d := s.st.reads - reads; d != 1 {
		t.Errorf("after editing one file a rescan read %d files, want 1", d)
	}
	if res.Namespace("ab") == nil || res.Namespace("aa") != nil {
		t.Errorf("the in-place edit was missed: namespaces %v", res.Namespaces)
	}
}

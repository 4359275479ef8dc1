package route

import (
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
	"strings"
	"testing"
)

// elementPrefix is PathPrefix matching written from the spec's words:
// split both on "/" and compare element by element, ignoring a trailing
// "/" on the prefix.
func elementPrefix(prefix, path string) bool {
	p := strings.TrimRight(prefix, "/")
	if p == "" {
		return true
	}
	ps, xs := strings.Split(p, "/"), strings.Split(path, "/")
	if len(xs) < len(ps) {
		return false
	}
	for i := range ps {
		if ps[i] != xs[i] {
			return false
		}
	}
	return true
}

func FuzzPathPrefix(f *testing.F) {
	for _, s := range [][2]string{{"/foo", "/foo/bar"}, {"/foo/", "/foobar"}, {"/", "/"}, {"/a/b", "/a/b/"}, {"/a//", "/a//b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, prefix, path string) {
		if !strings.HasPrefix(prefix, "/") || !strings.HasPrefix(path, "/") {
			t.Skip()
		}
		if got, want := MatchPath(prefix, path), elementPrefix(prefix, path); got != want {
			t.Fatalf("MatchPath(%q, %q) = %v, element-wise says %v", prefix, path, got, want)
		}
		// The compiled table agrees with MatchPath.
		tb := table(t, rt("a", path_(prefix)))
		if _, ok := tb.Match(&Request{Path: path}); ok != MatchPath(prefix, path) {
			t.Fatalf("table match %v, MatchPath %v for %q on %q", ok, !ok, path, prefix)
		}
	})
}

var path_ = func(v string) func(*gatewayv1.RouteMatch) { return path(prefix, v) }

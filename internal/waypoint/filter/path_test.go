package filter

import (
	"strings"
	"testing"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

func TestReplacePrefix(t *testing.T) {
	cases := []struct{ path, prefix, repl, want string }{
		// The table in the spec's ReplacePrefixMatch documentation.
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
		// Conformance httproute-rewrite-path and httproute-redirect-path.
		{"/prefix/one/two", "/prefix/one", "/one", "/one/two"},
		{"/prefix/rewrite-path-and-modify-headers/one", "/prefix/rewrite-path-and-modify-headers", "/prefix", "/prefix/one"},
		{"/strip-prefix/three", "/strip-prefix", "/", "/three"},
		{"/strip-prefix", "/strip-prefix", "/", "/"},
		{"/original-prefix/lemon", "/original-prefix", "/replacement-prefix", "/replacement-prefix/lemon"},
		{"/path-and-host", "/path-and-host", "/replacement-prefix", "/replacement-prefix"},
		// Root prefix: everything is "after" it.
		{"/a/b", "/", "/api", "/api/a/b"},
		{"/", "/", "/api", "/api/"},
		// Element-wise: a path the prefix does not match stays as is.
		{"/foobar", "/foo", "/xyz", "/foobar"},
		{"/other", "/foo", "/xyz", "/other"},
		// Empty segments after the prefix are kept.
		{"/foo//bar", "/foo", "/xyz", "/xyz//bar"},
	}
	for _, c := range cases {
		if got := ReplacePrefix(c.path, c.prefix, c.repl); got != c.want {
			t.Errorf("ReplacePrefix(%q, %q, %q) = %q, want %q", c.path, c.prefix, c.repl, got, c.want)
		}
	}
}

func TestModifyPath(t *testing.T) {
	full := func(s string) *gatewayv1.PathModifier {
		return &gatewayv1.PathModifier{Kind: &gatewayv1.PathModifier_ReplaceFullPath{ReplaceFullPath: s}}
	}
	pre := func(s string) *gatewayv1.PathModifier {
		return &gatewayv1.PathModifier{Kind: &gatewayv1.PathModifier_ReplacePrefixMatch{ReplacePrefixMatch: s}}
	}
	cases := []struct {
		name        string
		path        string
		pm          *gatewayv1.PathModifier
		prefix      string
		prefixMatch bool
		want        string
	}{
		{"full", "/full/one/two", full("/one"), "/full/one", true, "/one"},
		{"full empty is root", "/a", full(""), "", false, "/"},
		{"full on exact match", "/exact", full("/x"), "", false, "/x"},
		{"prefix", "/foo/bar", pre("/xyz"), "/foo", true, "/xyz/bar"},
		{"prefix on non-prefix route", "/foo/bar", pre("/xyz"), "", false, "/foo/bar"},
		{"nil modifier", "/a", nil, "", false, "/a"},
	}
	for _, c := range cases {
		if got := ModifyPath(c.path, c.pm, c.prefix, c.prefixMatch); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestSplitHostPort(t *testing.T) {
	cases := []struct{ in, host, port string }{
		{"example.com", "example.com", ""},
		{"example.com:8080", "example.com", "8080"},
		{"[::1]:443", "::1", "443"},
		{"[::1]", "::1", ""},
		{"::1", "::1", ""}, // unbracketed IPv6 has no port
		{"", "", ""},
	}
	for _, c := range cases {
		h, p := SplitHostPort(c.in)
		if h != c.host || p != c.port {
			t.Errorf("SplitHostPort(%q) = %q, %q; want %q, %q", c.in, h, p, c.host, c.port)
		}
	}
}

// matchesPrefix is the Gateway API PathPrefix rule written the slow way,
// by splitting into elements, as the oracle for the fuzz target.
func matchesPrefix(prefix, path string) bool {
	ps := strings.Split(strings.TrimRight(prefix, "/"), "/")
	xs := strings.Split(path, "/")
	if len(ps) == 1 && ps[0] == "" {
		return strings.HasPrefix(path, "/") || path == ""
	}
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

func FuzzReplacePrefix(f *testing.F) {
	f.Add("/foo/bar", "/foo", "/xyz")
	f.Add("/foo", "/foo/", "")
	f.Add("/foobar", "/foo", "/")
	f.Add("/", "/", "/api")
	f.Add("/a//b/", "/a/", "/c//")
	f.Fuzz(func(t *testing.T, path, prefix, repl string) {
		if !strings.HasPrefix(path, "/") || !strings.HasPrefix(prefix, "/") || !strings.HasPrefix(repl, "/") && repl != "" {
			t.Skip()
		}
		got := ReplacePrefix(path, prefix, repl)
		if !matchesPrefix(prefix, path) {
			if got != path {
				t.Fatalf("prefix %q does not match %q, yet it was rewritten to %q", prefix, path, got)
			}
			return
		}
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("ReplacePrefix(%q, %q, %q) = %q: not absolute", path, prefix, repl, got)
		}
		// What followed the prefix follows the replacement unchanged.
		rest := path[len(strings.TrimRight(prefix, "/")):]
		r := strings.TrimRight(repl, "/")
		if rest != "" && got != r+rest {
			t.Fatalf("ReplacePrefix(%q, %q, %q) = %q, want %q", path, prefix, repl, got, r+rest)
		}
		if rest == "" && got != r && !(r == "" && got == "/") {
			t.Fatalf("ReplacePrefix(%q, %q, %q) = %q for a whole-path match", path, prefix, repl, got)
		}
		// The rewritten path matches the replacement as a prefix.
		if !matchesPrefix(repl, got) {
			t.Fatalf("rewritten %q does not match replacement prefix %q", got, repl)
		}
	})
}

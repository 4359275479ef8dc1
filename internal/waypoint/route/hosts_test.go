package route

import "testing"

func TestHostIndex(t *testing.T) {
	var x HostIndex[string]
	for _, name := range []string{"a.example.com", "*.example.com", "*.b.example.com", ""} {
		if !x.Add(name, name) {
			t.Fatalf("Add(%q) refused", name)
		}
	}
	if x.Add("A.Example.com.", "dup") || x.Add("*", "dup") {
		t.Fatal("a second value for an existing name was accepted")
	}
	for host, want := range map[string]string{
		"a.example.com":      "a.example.com",
		"A.EXAMPLE.COM:8443": "a.example.com",
		"c.example.com":      "*.example.com",
		"x.b.example.com":    "*.b.example.com", // the longest suffix wins
		"b.example.com":      "*.example.com",
		"example.com":        "", // a wildcard needs a label in front
		"other.test":         "",
		"":                   "",
	} {
		if got, ok := x.Lookup(host); !ok || got != want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", host, got, ok, want)
		}
	}
	var exactOnly HostIndex[int]
	exactOnly.Add("a.example.com", 1)
	if _, ok := exactOnly.Lookup("b.example.com"); ok {
		t.Error("an index without \"*\" matched an unknown host")
	}
}

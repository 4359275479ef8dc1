package ca

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// TestSubjectNames checks the hand-written name check against the regular
// expression it replaced, on edge cases of every rule.
func TestSubjectNames(t *testing.T) {
	ref := regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	cases := []string{
		"", "a", "0", "-", ".", "a-", "-a", "a.", ".a", "a-b", "a.b", "a..b", "a--b", "worker-1",
		"Worker", "a_b", "a b", "é", "shop.svc", strings.Repeat("a", 253), strings.Repeat("a", 254),
		"a" + strings.Repeat("-", 251) + "b", "a" + strings.Repeat("-", 252) + "b", "a\n", "\na",
	}
	for _, name := range cases {
		want := ref.MatchString(name)
		err := NodeSubject(name).Validate()
		if got := err == nil; got != want {
			t.Errorf("node name %q: valid = %v, want %v (err %v)", name, got, want, err)
		}
		if err != nil && !errors.Is(err, ErrBadSubject) {
			t.Errorf("node name %q: error %v does not wrap ErrBadSubject", name, err)
		}
	}
	if err := GatewaySubject("shop", "Bad_Name").Validate(); err == nil || !strings.Contains(err.Error(), "gateway name") {
		t.Errorf("gateway with a bad name: error %v, want one naming the gateway name", err)
	}
}

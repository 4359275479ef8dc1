package ca

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTokens(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	s := NewTokenStore(TokensFile(dir), clk.Now)
	redeem := func(s *TokenStore, tok string) (Subject, error) {
		var got Subject
		err := s.Redeem(tok, func(sub Subject) error { got = sub; return nil })
		return got, err
	}

	once, info, err := s.Create(NodeSubject("node-a"), TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(once, "ambitjoin."+info.ID+".") || len(once) != len("ambitjoin.")+12+1+32 {
		t.Errorf("token %q, want ambitjoin.<12 hex id>.<32 hex secret>", once)
	}
	if got := info.ExpiresAt.Sub(info.CreatedAt); got != DefaultTokenTTL {
		t.Errorf("default TTL %s, want %s", got, DefaultTokenTTL)
	}
	reusable, _, err := s.Create(GatewaySubject("shop", "waypoint"), TokenOptions{Reusable: true, TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	// Stored hashed, 0600, and shared with a second store (another process).
	raw, err := os.ReadFile(TokensFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	secret := once[strings.LastIndex(once, ".")+1:]
	if strings.Contains(string(raw), secret) {
		t.Error("tokens.json contains a token secret in clear")
	}
	if fi, _ := os.Stat(TokensFile(dir)); fi.Mode().Perm() != 0o600 {
		t.Errorf("tokens.json mode %v, want 0600", fi.Mode().Perm())
	}
	other := NewTokenStore(TokensFile(dir), clk.Now)

	sub, err := redeem(other, once)
	if err != nil || sub != NodeSubject("node-a") {
		t.Fatalf("redeem: %v %v, want node/node-a", sub, err)
	}
	if _, err := redeem(s, once); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("reuse: %v, want ErrTokenUsed", err)
	}
	for i := range 3 {
		if sub, err := redeem(s, reusable); err != nil || sub != GatewaySubject("shop", "waypoint") {
			t.Fatalf("reusable use %d: %v %v", i, sub, err)
		}
	}
	clk.Advance(10 * time.Minute)
	if _, err := redeem(s, reusable); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("expired reusable: %v, want ErrTokenExpired", err)
	}

	// A failing callback leaves the token unused.
	fresh, _, _ := s.Create(NodeSubject("node-b"), TokenOptions{})
	boom := errors.New("bad CSR")
	if err := s.Redeem(fresh, func(Subject) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("callback error: %v", err)
	}
	if _, err := redeem(s, fresh); err != nil {
		t.Errorf("token after a failed callback: %v", err)
	}

	for _, bad := range []string{"", "nonsense", "ambitjoin.xyz.abc", strings.ToUpper(fresh), fresh[:len(fresh)-1] + "0"} {
		if _, err := redeem(s, bad); !errors.Is(err, ErrBadToken) {
			t.Errorf("redeem(%q): %v, want ErrBadToken", bad, err)
		}
	}

	// Revoke, and pruning of long-dead tokens.
	revokeMe, ri, _ := s.Create(NodeSubject("node-c"), TokenOptions{})
	if err := s.Revoke(ri.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := redeem(s, revokeMe); !errors.Is(err, ErrBadToken) {
		t.Errorf("revoked token: %v, want ErrBadToken", err)
	}
	clk.Advance(DefaultTokenTTL + tokenKeep + time.Minute)
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("tokens %v survived pruning", list)
	}
}

func TestTokensConcurrentStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	// Two stores on one file model `ambit token create` racing the control
	// plane; the file lock must not lose a token.
	a, b := NewTokenStore(path, nil), NewTokenStore(path, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ids []string
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			_, info, err := s.Create(NodeSubject("n"), TokenOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ids = append(ids, info.ID)
			mu.Unlock()
		}()
	}
	wg.Wait()
	list, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ti := range list {
		got = append(got, ti.ID)
	}
	if d := cmp.Diff(sorted(ids), sorted(got)); d != "" {
		t.Errorf("tokens lost (-created +stored):\n%s", d)
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func TestParseSubject(t *testing.T) {
	tests := []struct {
		in      string
		want    Subject
		wantErr bool
	}{
		{"node-a", NodeSubject("node-a"), false},
		{"node/node-a", NodeSubject("node-a"), false},
		{"shop/waypoint", GatewaySubject("shop", "waypoint"), false},
		{"gateway/shop/waypoint", GatewaySubject("shop", "waypoint"), false},
		{"Node_A", Subject{}, true},
		{"a/b/c/d", Subject{}, true},
		{"", Subject{}, true},
		{"shop/..", Subject{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSubject(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSubject(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

package ca

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Join token errors. ErrTokenExpired and ErrTokenUsed wrap ErrBadToken.
var (
	ErrBadToken     = errors.New("invalid join token")
	ErrTokenExpired = fmt.Errorf("%w: expired", ErrBadToken)
	ErrTokenUsed    = fmt.Errorf("%w: already used (single-use)", ErrBadToken)
)

const (
	// DefaultTokenTTL is how long a join token is valid unless told.
	DefaultTokenTTL = time.Hour
	tokenPrefix     = "ambitjoin"
	tokenIDBytes    = 6
	tokenSecretLen  = 16
	// Spent and expired tokens stay listed this long (for `ambit token
	// list` and audits), then are pruned.
	tokenKeep = 24 * time.Hour
)

// TokensFile is where join tokens live in a state directory.
func TokensFile(stateDir string) string { return filepath.Join(stateDir, "tokens.json") }

// TokenOptions configure a new join token.
type TokenOptions struct {
	// TTL is the validity; DefaultTokenTTL when 0.
	TTL time.Duration
	// Reusable tokens can be redeemed any number of times until they
	// expire (e.g. an autoscaling group's launch template); by default a
	// token works once.
	Reusable bool
}

// TokenInfo is a stored join token. Only the SHA-256 of its secret is kept.
type TokenInfo struct {
	ID        string    `json:"id"`
	Subject   Subject   `json:"subject"`
	SecretSHA string    `json:"secretSHA256"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
	Reusable  bool      `json:"reusable,omitempty"`
	Uses      int       `json:"uses,omitempty"`
	LastUsed  time.Time `json:"lastUsed,omitzero"`
}

type tokenFile struct {
	Tokens []TokenInfo `json:"tokens"`
}

// TokenStore keeps join tokens in a JSON file (0600). Every operation
// re-reads the file under an advisory lock, so `ambit token create` can add
// tokens while the control plane redeems them.
type TokenStore struct {
	path string
	now  func() time.Time
	mu   sync.Mutex // in-process; the file lock covers other processes
}

// NewTokenStore returns a store backed by path (see TokensFile); now is
// the clock (time.Now when nil). It does no I/O.
func NewTokenStore(path string, now func() time.Time) *TokenStore {
	if now == nil {
		now = time.Now
	}
	return &TokenStore{path: path, now: now}
}

// Create makes a token for subject and returns the token string
// ("ambitjoin.<id>.<secret>"); the secret is not stored and cannot be
// shown again.
func (s *TokenStore) Create(subject Subject, o TokenOptions) (string, TokenInfo, error) {
	if err := subject.Validate(); err != nil {
		return "", TokenInfo{}, err
	}
	if o.TTL == 0 {
		o.TTL = DefaultTokenTTL
	}
	if o.TTL < 0 {
		return "", TokenInfo{}, fmt.Errorf("ca: join token TTL %s: want a positive duration", o.TTL)
	}
	id, secret := randomHex(tokenIDBytes), randomHex(tokenSecretLen)
	now := s.now()
	info := TokenInfo{
		ID: id, Subject: subject, SecretSHA: hashSecret(secret),
		CreatedAt: now.UTC(), ExpiresAt: now.Add(o.TTL).UTC(), Reusable: o.Reusable,
	}
	err := s.update(func(f *tokenFile) error {
		if slices.ContainsFunc(f.Tokens, func(t TokenInfo) bool { return t.ID == id }) {
			return fmt.Errorf("ca: join token id %s collides; try again", id)
		}
		f.Tokens = append(f.Tokens, info)
		return nil
	})
	if err != nil {
		return "", TokenInfo{}, err
	}
	return tokenPrefix + "." + id + "." + secret, info, nil
}

// Redeem checks token (constant-time secret comparison, expiry, single
// use) and calls fn with its subject. Only when fn succeeds is the token
// marked used, so a proxy whose CSR was bad can retry with the same
// token. Errors wrap ErrBadToken (ErrTokenExpired, ErrTokenUsed).
func (s *TokenStore) Redeem(token string, fn func(Subject) error) error {
	id, secret, ok := parseToken(token)
	if !ok {
		return fmt.Errorf("ca: %w: want the form %s.<12 hex>.<32 hex> printed by `ambit token create`", ErrBadToken, tokenPrefix)
	}
	return s.update(func(f *tokenFile) error {
		i := slices.IndexFunc(f.Tokens, func(t TokenInfo) bool { return t.ID == id })
		if i < 0 {
			// Hash anyway so unknown and wrong tokens take the same time.
			subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(hashSecret("")))
			return fmt.Errorf("ca: join token %s: %w: unknown token", id, ErrBadToken)
		}
		t := &f.Tokens[i]
		if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(t.SecretSHA)) != 1 {
			return fmt.Errorf("ca: join token %s: %w: unknown token", id, ErrBadToken)
		}
		now := s.now()
		if !now.Before(t.ExpiresAt) {
			return fmt.Errorf("ca: join token %s for %s: %w at %s; create a new one with `ambit token create`", id, t.Subject, ErrTokenExpired, t.ExpiresAt.Format(time.RFC3339))
		}
		if !t.Reusable && t.Uses > 0 {
			return fmt.Errorf("ca: join token %s for %s: %w at %s", id, t.Subject, ErrTokenUsed, t.LastUsed.Format(time.RFC3339))
		}
		if err := fn(t.Subject); err != nil {
			return err
		}
		t.Uses++
		t.LastUsed = now.UTC()
		return nil
	})
}

// List returns the stored tokens (hashes only), oldest first.
func (s *TokenStore) List() ([]TokenInfo, error) {
	var out []TokenInfo
	err := s.update(func(f *tokenFile) error { out = slices.Clone(f.Tokens); return nil })
	return out, err
}

// Revoke deletes the token with id (the middle part of the token string).
func (s *TokenStore) Revoke(id string) error {
	return s.update(func(f *tokenFile) error {
		n := len(f.Tokens)
		f.Tokens = slices.DeleteFunc(f.Tokens, func(t TokenInfo) bool { return t.ID == id })
		if len(f.Tokens) == n {
			return fmt.Errorf("ca: revoke join token %q: %w: no such token id", id, ErrBadToken)
		}
		return nil
	})
}

// update runs fn on the file's content under both locks and writes the
// result back (pruning long-dead tokens) when fn succeeds.
func (s *TokenStore) update(fn func(*tokenFile) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("ca: join tokens: %w", err)
	}
	unlock, err := lockFile(s.path + ".lock")
	if err != nil {
		return fmt.Errorf("ca: lock %s: %w", s.path, err)
	}
	defer unlock()
	var f tokenFile
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("ca: read %s: %w", s.path, err)
	default:
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("ca: %s is corrupt: %w (delete it to revoke every join token)", s.path, err)
		}
	}
	before, _ := json.Marshal(f)
	now := s.now()
	f.Tokens = slices.DeleteFunc(f.Tokens, func(t TokenInfo) bool { return now.After(t.ExpiresAt.Add(tokenKeep)) })
	if err := fn(&f); err != nil {
		return err
	}
	after, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode join tokens: %w", err)
	}
	if compact, _ := json.Marshal(f); string(compact) == string(before) {
		return nil
	}
	return writeFileAtomic(s.path, append(after, '\n'), 0o600)
}

func parseToken(tok string) (id, secret string, ok bool) {
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 || parts[0] != tokenPrefix || !isHex(parts[1], 2*tokenIDBytes) || !isHex(parts[2], 2*tokenSecretLen) {
		return "", "", false
	}
	return parts[1], parts[2], true
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

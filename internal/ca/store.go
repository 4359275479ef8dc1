package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// diskState is <state>/ca/state.json. It is written after the files it
// names, so a crash between the two leaves the previous, complete state.
type diskState struct {
	// Generation of the trust bundle; bumped whenever BundleDigest changes,
	// including across restarts and plug-in certificate swaps, so proxies
	// can always tell the newer bundle.
	Generation   uint64 `json:"generation"`
	BundleDigest string `json:"bundleDigest"`
	// Built-in roots only: Trusted names the roots in the bundle, oldest
	// first (files <name>.pem and <name>.key); Signing the one that signs.
	Trusted     []string  `json:"trusted,omitempty"`
	Signing     string    `json:"signing,omitempty"`
	NextSerial  int       `json:"nextSerial,omitempty"`
	ActivatedAt time.Time `json:"activatedAt,omitzero"`
}

func (c *CA) dir() string { return filepath.Join(c.opts.StateDir, "ca") }

func (c *CA) loadState() (diskState, error) {
	var st diskState
	p := filepath.Join(c.dir(), "state.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("ca: read %s: %w", p, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("ca: %s is corrupt: %w (restore it from a backup; deleting the directory creates a new root that no proxy trusts)", p, err)
	}
	return st, nil
}

func (c *CA) saveState(st diskState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode state: %w", err)
	}
	return writeFileAtomic(filepath.Join(c.dir(), "state.json"), append(b, '\n'), 0o600)
}

// writeRoot persists a built-in root as <name>.pem and <name>.key (0600).
func (c *CA) writeRoot(name string, a *authority) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(a.key)
	if err != nil {
		return fmt.Errorf("ca: encode key of %s: %w", name, err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(filepath.Join(c.dir(), name+".key"), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(c.dir(), name+".pem"), encodeCert(a.cert), 0o644)
}

func (c *CA) readRoot(name string) (*authority, error) {
	certFile := filepath.Join(c.dir(), name+".pem")
	keyFile := filepath.Join(c.dir(), name+".key")
	certs, err := readCerts(certFile)
	if err != nil {
		return nil, err
	}
	key, err := readKey(keyFile)
	if err != nil {
		return nil, err
	}
	if err := checkAuthority(certs[0], key, certFile, keyFile, c.now()); err != nil {
		return nil, err
	}
	return &authority{cert: certs[0], key: key}, nil
}

func (c *CA) removeRoot(name string) {
	for _, ext := range []string{".key", ".pem"} {
		p := filepath.Join(c.dir(), name+ext)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("could not remove retired root file; remove it by hand", "file", p, "error", err)
		}
	}
}

// writeFileAtomic replaces path with data so readers (and a crash) see
// either the old or the new content, never a torn file.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// readCerts parses every CERTIFICATE block of file; at least one.
func readCerts(file string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ca: read %s: %w", file, err)
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: %s: certificate %d: %w", file, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("ca: %s: no PEM \"CERTIFICATE\" block found; want PEM-encoded X.509 certificates", file)
	}
	return certs, nil
}

// readKey parses the first private key block of file (PKCS#8, SEC 1 EC or
// PKCS#1 RSA).
func readKey(file string) (crypto.Signer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ca: read %s: %w", file, err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("ca: %s: no PEM private key block found; want \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\"", file)
		}
		var (
			k   any
			err error
		)
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ca: %s: %s: %w", file, blk.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("ca: %s: key type %T cannot sign", file, k)
		}
		return s, nil
	}
}

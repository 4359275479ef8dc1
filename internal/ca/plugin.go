package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Plug-in certificate file names, the same as Istio's so existing tooling
// and habits carry over.
const (
	PluginCACert    = "ca-cert.pem"    // the CA certificate ambit signs with (an intermediate, or the root itself)
	PluginCAKey     = "ca-key.pem"     // its private key
	PluginCertChain = "cert-chain.pem" // optional: ca-cert's chain up to the root (may include ca-cert and the root)
	PluginRootCert  = "root-cert.pem"  // optional when ca-cert is self-signed: the root(s) proxies trust
)

// checkAuthority validates CA material: the key belongs to the
// certificate, the certificate may sign certificates and is valid now.
func checkAuthority(cert *x509.Certificate, key crypto.Signer, certFile, keyFile string, now time.Time) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("ca: %s does not hold the private key of %s (subject %q); want the key the certificate was issued for", keyFile, certFile, cert.Subject)
	}
	return checkCACert(cert, certFile, now)
}

func checkCACert(cert *x509.Certificate, file string, now time.Time) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fmt.Errorf("ca: %s (subject %q) is not a CA certificate; want basicConstraints CA:TRUE", file, cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("ca: %s (subject %q) lacks the keyCertSign key usage, so it may not sign certificates", file, cert.Subject)
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("ca: %s (subject %q) is not valid until %s; check the clock", file, cert.Subject, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(cert.NotAfter) {
		return fmt.Errorf("ca: %s (subject %q) expired at %s", file, cert.Subject, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// pluginMaterial is what a plug-in directory provides.
type pluginMaterial struct {
	signer *authority
	// intermediates between an issued leaf and the root, starting with the
	// signer unless the signer is itself a root.
	chain []*x509.Certificate
	// anchor is the root the signer chains to; roots the whole bundle.
	anchor *x509.Certificate
	roots  []*x509.Certificate
}

// loadPlugin reads and validates plug-in certificates from dir.
func loadPlugin(dir string, now time.Time) (*pluginMaterial, error) {
	certFile := filepath.Join(dir, PluginCACert)
	keyFile := filepath.Join(dir, PluginCAKey)
	chainFile := filepath.Join(dir, PluginCertChain)
	rootFile := filepath.Join(dir, PluginRootCert)

	certs, err := readCerts(certFile)
	if err != nil {
		return nil, err
	}
	signer := certs[0]
	key, err := readKey(keyFile)
	if err != nil {
		return nil, err
	}
	if err := checkAuthority(signer, key, certFile, keyFile, now); err != nil {
		return nil, err
	}

	var chainCerts []*x509.Certificate
	if exists(chainFile) {
		if chainCerts, err = readCerts(chainFile); err != nil {
			return nil, err
		}
	}
	var roots []*x509.Certificate
	switch {
	case exists(rootFile):
		if roots, err = readCerts(rootFile); err != nil {
			return nil, err
		}
		for _, r := range roots {
			if err := checkCACert(r, rootFile, now); err != nil {
				return nil, err
			}
		}
	case isSelfSigned(signer):
		roots = []*x509.Certificate{signer}
	default:
		// Istio's cert-chain.pem usually ends with the root.
		if n := len(chainCerts); n > 0 && isSelfSigned(chainCerts[n-1]) {
			roots = []*x509.Certificate{chainCerts[n-1]}
		} else {
			return nil, fmt.Errorf("ca: %s is an intermediate (issuer %q) but %s is missing and %s does not end with a root; want the root certificate in %s", certFile, signer.Issuer, rootFile, chainFile, rootFile)
		}
	}

	isRoot := func(c *x509.Certificate) bool {
		for _, r := range roots {
			if c.Equal(r) {
				return true
			}
		}
		return false
	}
	var chain []*x509.Certificate
	if !isRoot(signer) {
		chain = append(chain, signer)
	}
	for _, c := range chainCerts {
		if c.Equal(signer) || isRoot(c) {
			continue
		}
		if err := checkCACert(c, chainFile, now); err != nil {
			return nil, err
		}
		chain = append(chain, c)
	}

	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	verified, err := signer.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("ca: %s does not chain to the roots in %s through %s: %w", certFile, rootFile, chainFile, err)
	}
	anchor := verified[0][len(verified[0])-1]
	return &pluginMaterial{signer: &authority{cert: signer, key: key}, chain: chain, anchor: anchor, roots: roots}, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, fs.ErrNotExist)
}

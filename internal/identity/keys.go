package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// newKeyAndCSR makes a fresh P-256 key and a PEM CSR whose only URI SAN is id.
func newKeyAndCSR(id spiffeid.ID) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// assemble checks what a CA returned for (id, key) and builds the
// tls.Certificate: the leaf must carry exactly id, hold our public key and
// chain to roots (the CA's answer) or, if the CA sent none, to fallback.
func assemble(id spiffeid.ID, key crypto.Signer, chain, roots []*x509.Certificate, fallback x509bundle.Source) (*tls.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("CA returned no certificate")
	}
	leaf := chain[0]
	if !publicKeyEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("CA returned a certificate for a different key than the CSR's")
	}
	var src x509bundle.Source = fallback
	if len(roots) > 0 {
		src = x509bundle.FromX509Authorities(id.TrustDomain(), roots)
	}
	if src == nil {
		return nil, errors.New("no trust bundle to verify the issued certificate against; the CA returned no roots")
	}
	got, _, err := x509svid.Verify(chain, src)
	if err != nil {
		return nil, fmt.Errorf("issued certificate does not verify: %w", err)
	}
	if got != id {
		return nil, fmt.Errorf("CA issued a certificate for %q, asked for %q", got, id)
	}
	raw := make([][]byte, len(chain))
	for i, c := range chain {
		raw[i] = c.Raw
	}
	return &tls.Certificate{Certificate: raw, PrivateKey: key, Leaf: leaf}, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

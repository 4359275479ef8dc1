package identity

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// WorkloadID is the identity of workloads and waypoints:
// spiffe://<td>/ns/<namespace>/sa/<service-account>.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: workload identity for namespace %q, service account %q: %w", namespace, serviceAccount, err)
	}
	return id, nil
}

// NodeID is the identity of a node proxy: spiffe://<td>/ambit/node/<node>.
func NodeID(td spiffeid.TrustDomain, node string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "ambit", "node", node)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: node identity for node %q: %w", node, err)
	}
	return id, nil
}

// ControlID is the identity the control plane serves xDS and the CA with:
// spiffe://<td>/ambit/control.
func ControlID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ambit", "control")
}

// PeerID returns the SPIFFE ID of the peer of a handshake made with a config
// from ServerConfig or ClientConfig (which already verified the chain).
func PeerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("identity: peer presented no certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: peer certificate: %w", err)
	}
	return id, nil
}

const pinPrefix = "sha256:"

// SPKIPin is the pin a join string carries for a CA certificate:
// "sha256:" + hex(sha256(SubjectPublicKeyInfo)), as kubeadm's
// --discovery-token-ca-cert-hash. Pinning the key rather than the certificate
// keeps the pin valid when the root is re-issued with the same key.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + hex.EncodeToString(sum[:])
}

// parsePin returns the 32-byte digest of a "sha256:<hex>" pin.
func parsePin(pin string) ([]byte, error) {
	h, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(pin)), pinPrefix)
	if !ok {
		return nil, fmt.Errorf("identity: CA pin %q: want \"sha256:<64 hex digits>\"", pin)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("identity: CA pin %q: want \"sha256:<64 hex digits>\"", pin)
	}
	return b, nil
}

func matchesPin(cert *x509.Certificate, digest []byte) bool {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return string(sum[:]) == string(digest)
}

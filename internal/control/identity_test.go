package control_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambitmesh/ambit/internal/control"
	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/identity"
	"github.com/ambitmesh/ambit/internal/xdsclient"
	cav1 "github.com/ambitmesh/ambit/proto/ambit/ca/v1"
)

// TestIdentityEndToEnd: a node joins with a token, gets certificates only
// for workloads on its node, receives the trust bundle over xDS, and sees
// both roots during a root rotation.
func TestIdentityEndToEnd(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", workloads)
	cp, stop, done := startControl(t, dir, t.TempDir(), "127.0.0.1:0")
	defer func() { stop(); <-done }()
	addr := cp.XDSAddr().String()

	n1 := joinNode(t, cp, "node-1")
	td := n1.id.TrustDomain()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A workload on node-1: issued, verifies against the bundle with the
	// right SPIFFE ID.
	web, _ := identity.WorkloadID(td, "shop", "web")
	cert, err := n1.certs.Get(ctx, web)
	if err != nil {
		t.Fatalf("certificate for %s on its own node: %v", web, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			t.Fatal(err)
		}
	}
	roots := x509.NewCertPool()
	for _, r := range n1.bundle.Roots() {
		roots.AddCert(r)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("workload certificate does not verify against the bundle: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() {
		t.Errorf("workload certificate URI SANs = %v, want [%s]", leaf.URIs, web)
	}

	// db-1 runs on node-2: node-1 may not have its identity.
	db, _ := identity.WorkloadID(td, "shop", "default")
	if _, err := n1.certs.Get(ctx, db); status.Code(err) != codes.PermissionDenied {
		t.Errorf("certificate for a workload on another node: err = %v, want PermissionDenied", err)
	}

	// The join token was single-use.
	tok := controltest.Token(t, cp, "node/node-3")
	n3, _ := identity.NodeID(td, "node-3")
	if _, err := identity.Join(ctx, addr, tok.Token, tok.CAPin, n3); err != nil {
		t.Fatalf("first join with a fresh token: %v", err)
	}
	if _, err := identity.Join(ctx, addr, tok.Token, tok.CAPin, n3); err == nil {
		t.Error("a used join token was accepted again")
	}

	// The trust bundle arrives over xDS ...
	x := n1.xdsClient(t, addr, "node/node-1", nil)
	runCtx, runCancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { _ = x.Run(runCtx); close(runDone) }()
	defer func() { runCancel(); <-runDone }()
	bundleOf := func(s *xdsclient.Snapshot) *cav1.TrustBundle {
		b, _ := xdsclient.Get[*cav1.TrustBundle](s, td.Name())
		return b
	}
	s := waitFor(t, x, "trust bundle over xDS", func(s *xdsclient.Snapshot) bool { return bundleOf(s) != nil })
	if got := len(bundleOf(s).GetRootsPem()); got != 1 {
		t.Fatalf("trust bundle has %d roots before rotation, want 1", got)
	}
	gen := bundleOf(s).GetGeneration()

	// ... and a root rotation pushes both roots to every proxy.
	resp, err := http.Post("http://"+cp.AdminAddr().String()+"/ca/rotate/prepare", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("rotate prepare: %s", resp.Status)
	}
	s = waitFor(t, x, "both roots during rotation", func(s *xdsclient.Snapshot) bool { return len(bundleOf(s).GetRootsPem()) == 2 })
	if bundleOf(s).GetGeneration() <= gen {
		t.Errorf("bundle generation %d did not grow from %d", bundleOf(s).GetGeneration(), gen)
	}
	// A proxy applying it trusts both: leaves from either root verify.
	if _, err := n1.bundle.SetRootsPEM(bundleOf(s).GetGeneration(), bundleOf(s).GetRootsPem()); err != nil {
		t.Fatal(err)
	}
	if got := len(n1.bundle.Roots()); got != 2 {
		t.Errorf("proxy bundle holds %d roots, want 2", got)
	}
	var st control.CAStatus
	getJSON(t, "http://"+cp.AdminAddr().String()+"/ca", &st)
	if st.Rotation.Phase != "prepared" || len(st.Roots) != 2 {
		t.Errorf("CA status after prepare: phase %q with %d roots", st.Rotation.Phase, len(st.Roots))
	}
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

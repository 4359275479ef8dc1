package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/ambitmesh/ambit/internal/control/controltest"
	"github.com/ambitmesh/ambit/internal/node"
	"github.com/ambitmesh/ambit/internal/xdsclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

const mesh = `
apiVersion: ambit.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {addresses: ["127.0.0.31"], node: node-a, serviceAccount: web}
`

func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestRunJoinsServesAndDumps(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(mesh), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cp := controltest.Start(t, dir)
	tok := controltest.Token(t, cp, "node/node-a")

	l, err := net.Listen("tcp", "127.0.0.31:0")
	if err != nil {
		t.Fatal(err)
	}
	hbonePort := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	n, err := node.New(node.Options{
		ControlPlane: cp.XDSAddr().String(), Node: "node-a", Token: tok.Token, CAPin: tok.CAPin, TrustDomain: tok.TrustDomain,
		HBONEPort:    hbonePort,
		AdminAddress: "127.0.0.1:0", MetricsAddress: "127.0.0.1:0", ReadinessAddress: "127.0.0.1:0",
		Logger: discard, XDSBackoff: xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	nctx, ncancel := context.WithCancel(ctx)
	nDone := make(chan error, 1)
	go func() { nDone <- n.Run(nctx) }()
	defer func() { ncancel(); <-nDone }()
	for _, ch := range []<-chan struct{}{n.Ready(), n.Synced()} {
		select {
		case <-ch:
		case err := <-nDone:
			t.Fatalf("node stopped: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("node not ready/synced after 10s")
		}
	}

	if code, b := httpGet(t, "http://"+n.Addr("readiness").String()+"/healthz/ready"); code != http.StatusOK {
		t.Errorf("readiness = %d %s, want 200", code, b)
	}
	// The HBONE listener on the workload's address follows the sync.
	wantInbound := []string{fmt.Sprintf("127.0.0.31:%d", hbonePort)}
	wantWorkloadID := fmt.Sprintf("spiffe://%s/ns/shop/sa/web", tok.TrustDomain)
	var dump node.ConfigDump
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, b := httpGet(t, "http://"+n.Addr("admin").String()+"/config_dump")
		if code != http.StatusOK {
			t.Fatalf("config_dump = %d %s", code, b)
		}
		dump = node.ConfigDump{}
		if err := json.Unmarshal(b, &dump); err != nil {
			t.Fatal(err)
		}
		// The workload's certificate is fetched ahead of its first connection.
		if cmp.Equal(wantInbound, dump.Inbound) && slices.Contains(dump.Identities, wantWorkloadID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("config_dump inbound %v identities %v, want %v and %s among the identities", dump.Inbound, dump.Identities, wantInbound, wantWorkloadID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var workloads []string
	for name := range dump.Resources["type.googleapis.com/ambit.workload.v1.Workload"] {
		workloads = append(workloads, name)
	}
	if diff := cmp.Diff([]string{"shop/web-1"}, workloads); diff != "" || !dump.Synced || dump.Node != "node-a" {
		t.Errorf("config_dump node %q synced %v workloads (-want +got):\n%s", dump.Node, dump.Synced, diff)
	}
	wantID := fmt.Sprintf("spiffe://%s/ambit/node/node-a", tok.TrustDomain)
	if !strings.Contains(strings.Join(dump.Identities, " "), wantID) {
		t.Errorf("config_dump identities %v, want %s among them", dump.Identities, wantID)
	}
	t.Run("enrolment via admin", func(t *testing.T) { enrolViaAdmin(t, n.Addr("admin").String()) })
	// The runtime's profiles, for the memory figures of docs/benchmarks.md.
	if code, b := httpGet(t, "http://"+n.Addr("admin").String()+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !bytes.Contains(b, []byte("node.(*Node).Run")) {
		t.Errorf("admin goroutine profile = %d, names node.(*Node).Run: %v", code, bytes.Contains(b, []byte("node.(*Node).Run")))
	}
	if code, b := httpGet(t, "http://"+n.Addr("admin").String()+"/debug/pprof/nosuch"); code != http.StatusNotFound || !bytes.Contains(b, []byte("want heap")) {
		t.Errorf("admin unknown profile = %d %q, want 404 naming the profiles", code, b)
	}
	if code, b := httpGet(t, "http://"+n.Addr("metrics").String()+"/metrics"); code != http.StatusOK || !bytes.Contains(b, []byte("go_goroutines")) {
		t.Errorf("metrics = %d, body has go_goroutines: %v", code, bytes.Contains(b, []byte("go_goroutines")))
	}
}

func TestNewRefusesMissingOptions(t *testing.T) {
	_, err := node.New(node.Options{Node: "n"})
	for _, want := range []string{"control plane address", "join token", "CA pin"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New without %s: err %v, want it named", want, err)
		}
	}
}

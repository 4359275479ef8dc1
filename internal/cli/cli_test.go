package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ambitmesh/ambit/internal/cmdutil"
	"github.com/ambitmesh/ambit/internal/control"
)

// run executes the root command like main does and returns stdout, the
// error and the exit code.
func run(t *testing.T, args ...string) (string, error, int) {
	t.Helper()
	root := NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	code := 0
	if err != nil {
		code = ExitCode(err)
	}
	return out.String(), err, code
}

func TestTranslateQuickstartExample(t *testing.T) {
	out, err, code := run(t, "translate", "-f", "../../docs/examples/quickstart")
	if err != nil || code != 0 {
		t.Fatalf("the quickstart example must translate cleanly: code %d: %v", code, err)
	}
	var result struct {
		Model struct {
			Services []struct {
				Name     string `json:"name"`
				Waypoint *struct {
					Gateway struct{ Name string } `json:"gateway"`
				} `json:"waypoint"`
			} `json:"services"`
			Gateways []struct {
				Name       string           `json:"name"`
				MeshRoutes []map[string]any `json:"meshRoutes"`
			} `json:"gateways"`
			Policies []struct{ Name string } `json:"policies"`
		} `json:"model"`
	}
	if err := yaml.Unmarshal([]byte(out), &result); err != nil {
		t.Fatalf("output is not YAML: %v", err)
	}
	var bound bool
	for _, s := range result.Model.Services {
		if s.Name == "reviews" && s.Waypoint != nil && s.Waypoint.Gateway.Name == "reviews-waypoint" {
			bound = true
		}
	}
	if !bound {
		t.Errorf("service reviews not bound to reviews-waypoint in:\n%s", out)
	}
	if len(result.Model.Gateways) != 1 || len(result.Model.Gateways[0].MeshRoutes) == 0 {
		t.Errorf("want the reviews waypoint with its mesh routes, got %+v", result.Model.Gateways)
	}
	if len(result.Model.Policies) != 1 {
		t.Errorf("want 1 policy, got %d", len(result.Model.Policies))
	}
}

func TestTranslateJSONAndProblems(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ok.yaml", `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
`)
	out, err, code := run(t, "translate", "-f", dir, "-o", "json")
	if err != nil || code != 0 {
		t.Fatalf("code %d: %v", code, err)
	}
	var anyJSON map[string]any
	if err := json.Unmarshal([]byte(out), &anyJSON); err != nil {
		t.Fatalf("-o json is not JSON: %v", err)
	}

	write("route.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`)
	write("typo.yaml", `apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec: {portz: []}
`)
	_, err, code = run(t, "translate", "-f", dir)
	if code != 1 || err == nil {
		t.Fatalf("want exit code 1 for a broken config, got %d (%v)", code, err)
	}
	for _, want := range []string{"typo.yaml", `unknown field "spec.portz"`, "HTTPRoute shop/r", "use-waypoint"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestVersionJSON(t *testing.T) {
	out, err, _ := run(t, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var info cmdutil.Info
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Version == "" || info.GoVersion == "" {
		t.Fatalf("version -o json = %q (%v)", out, err)
	}
	if _, err, _ := run(t, "version", "-o", "xml"); err == nil || !strings.Contains(err.Error(), "use yaml or json") {
		t.Errorf("unknown output format error = %v", err)
	}
}

func TestStatusAgainstControlPlane(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("kind: Nope\napiVersion: v1\nmetadata: {name: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cp := control.New(control.Options{ConfigDir: dir, StateDir: t.TempDir(), XDSAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-cp.Ready():
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("control plane not ready")
	}
	out, err, _ := run(t, "status", "--control-plane", cp.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(no proxies connected)", "configuration problems:", "bad.yaml", `unknown kind "Nope"`} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if _, err, code := run(t, "status", "--control-plane", "127.0.0.1:1"); code == 0 || !strings.Contains(err.Error(), "is 'ambit control' running?") {
		t.Errorf("unreachable control plane: code %d, err %v", code, err)
	}
}

func TestApplyMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := applyMemoryLimit("300MiB", log); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != 300<<20 {
		t.Errorf("memory limit = %d, want %d", got, 300<<20)
	}
	if err := applyMemoryLimit("lots", log); err == nil || !strings.Contains(err.Error(), "256MiB") {
		t.Errorf("bad value error = %v", err)
	}
}

func TestParsePortMap(t *testing.T) {
	got, err := parsePortMap(map[string]string{"80": "8080", "443": "8443"})
	if err != nil || len(got) != 2 || got[80] != 8080 || got[443] != 8443 {
		t.Fatalf("parsePortMap = %v, %v; want 80->8080, 443->8443", got, err)
	}
	for _, bad := range []map[string]string{{"80": "x"}, {"0": "8080"}, {"80": "70000"}, {"http": "8080"}} {
		if _, err := parsePortMap(bad); err == nil || !strings.Contains(err.Error(), "LISTENER=LOCAL") {
			t.Errorf("parsePortMap(%v) = %v; want an error naming the LISTENER=LOCAL form", bad, err)
		}
	}
}

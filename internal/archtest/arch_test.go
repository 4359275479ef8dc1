// Package archtest enforces the layering of DESIGN.md with tests, so a
// forbidden import fails CI instead of waiting for review.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/ambitmesh/ambit/"

// rules: packages (prefix match) and the imports they must never reach,
// directly or transitively.
var rules = []struct {
	pkgs      string
	forbidden []string
	why       string
}{
	{"internal/control/model", []string{"k8s.io/", "sigs.k8s.io/gateway-api", "google.golang.org/grpc", "os"},
		"the model is plain Go data, independent of sources and transport"},
	{"internal/control/translate", []string{"net/http", "google.golang.org/grpc", "k8s.io/client-go", "github.com/fsnotify/fsnotify", module + "internal/control/xds"},
		"translation is a pure function: no I/O, no transport"},
	{"internal/xdsclient", []string{module + "internal/control", "k8s.io/client-go"},
		"proxies depend on the wire protocol, never on the control plane's internals"},
	{"internal/node", []string{module + "internal/control", "k8s.io/client-go"},
		"the node proxy depends on the wire protocol, never on the control plane's internals or Kubernetes"},
	{"internal/identity", []string{module + "internal/control", module + "internal/ca", "k8s.io/client-go"},
		"proxies' identity code talks to the CA over gRPC only"},
	{"internal/hbone", []string{module + "internal/control", module + "internal/ca", module + "internal/node", "k8s.io/client-go"},
		"HBONE is a small library: TLS identities in, streams out"},
	{"internal/telemetry", []string{module + "internal/control", "k8s.io/client-go"},
		"telemetry is shared by the proxies"},
	{"internal/echo", []string{module + "internal/"},
		"the echo app is a standalone test backend"},
	{"internal/control/xds", []string{module + "internal/control/source", module + "internal/control/translate", "k8s.io/client-go"},
		"the xDS layer serves a model; where it came from is not its business"},
}

// TestImports checks each package's direct imports plus everything it
// reaches inside this module (third-party libraries' own dependencies, such
// as apimachinery's use of net/http, are theirs).
func TestImports(t *testing.T) {
	for _, r := range rules {
		out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports " "}}|{{join .Deps " "}}`, "../../"+r.pkgs+"/...").CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", r.pkgs, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) == 0 || lines[0] == "" {
			t.Fatalf("go list %s listed nothing; has the package moved?", r.pkgs)
		}
		for _, line := range lines {
			parts := strings.Split(line, "|")
			pkg, imports := parts[0], strings.Fields(parts[1])
			for _, d := range strings.Fields(parts[2]) {
				if strings.HasPrefix(d, module) {
					imports = append(imports, d)
				}
			}
			for _, d := range imports {
				for _, f := range r.forbidden {
					if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") {
						t.Errorf("%s imports %s (forbidden: %s)", pkg, d, r.why)
					}
				}
			}
		}
	}
}

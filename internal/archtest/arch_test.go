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
					if within(d, f) {
						t.Errorf("%s imports %s (forbidden: %s)", pkg, d, r.why)
					}
				}
			}
		}
	}
}

// proxyForbidden are packages with heavy package-level initialisation
// (Kubernetes schemes and validation tables, Gateway API and Envoy config
// descriptors, CEL, protobuf reflection) or the control plane's own code.
// Every package linked into a binary runs its init in every command, so
// they must stay out of the proxies' import graph: what `ambit node` and
// `ambit gateway` touch at start-up is what they hold in memory
// (docs/benchmarks.md, "Memory of the proxies").
var proxyForbidden = []string{
	"k8s.io/", "sigs.k8s.io/", "cel.dev/",
	// Envoy's generated packages import its config, matcher, validation and
	// annotation protos, whose descriptors register at init; the proxies speak
	// delta xDS through the wire-identical subset in proto/ambit/xds/v1.
	"github.com/envoyproxy/", "github.com/cncf/xds/",
	"google.golang.org/grpc/reflection", "google.golang.org/protobuf/reflect/protodesc",
	"github.com/spf13/cobra", "text/template", "go.yaml.in/",
	// gRPC's tracing (and the html/template it imports), left out by the
	// release build's grpcnotrace tag: 3.4 MB of a node proxy's RSS.
	"golang.org/x/net/trace", "html/template",
	module + "internal/control", module + "internal/ca", module + "internal/echo",
	module + "internal/cli", module + "internal/demo", module + "internal/lab",
}

// TestProxyDeps checks everything the node proxy and the gateway/waypoint
// reach, transitively and third-party libraries included (unlike
// TestImports): one heavy import anywhere below them brings its whole graph.
// The node proxy's own binary, cmd/ambit-node, is checked as a whole: it
// exists so that nodes do not map the rest of ambit (its command line is
// pflag, without cobra). The graphs are those of the release build (make
// build, benchproc.ReleaseBuild): -tags grpcnotrace.
func TestProxyDeps(t *testing.T) {
	for _, pkg := range []string{"internal/node", "internal/waypoint", "cmd/ambit-node"} {
		out, err := exec.Command("go", "list", "-tags", "grpcnotrace", "-deps", "../../"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 50 {
			t.Fatalf("go list -deps %s listed %d packages; has the package moved?", pkg, len(deps))
		}
		for _, d := range deps {
			for _, f := range proxyForbidden {
				if within(d, f) {
					t.Errorf("%s depends on %s: keep heavy initialisers and control-plane code out of the proxies' import graph", pkg, d)
				}
			}
		}
	}
}

// within reports whether package pkg is prefix or below it.
func within(pkg, prefix string) bool {
	return pkg == prefix || strings.HasPrefix(pkg, strings.TrimSuffix(prefix, "/")+"/")
}

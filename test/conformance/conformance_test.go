package conformance_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gwv1alpha3 "sigs.k8s.io/gateway-api/apis/v1alpha3"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	kubeutil "sigs.k8s.io/gateway-api/conformance/utils/kubernetes"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"

	"github.com/ambitmesh/ambit/internal/control/translate"
)

// claimedFeatures are the GATEWAY-HTTP features ambit implements; the
// suite runs every test whose features are all in this set, except
// notClaimed.
var claimedFeatures = sets.New(
	features.SupportGateway,
	features.SupportReferenceGrant,
	features.SupportHTTPRoute,
	features.SupportGatewayPort8080,
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteMethodMatching,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteBackendRequestHeaderModification,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRoutePathRewrite,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteBackendTimeout,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRouteDestinationPortMatching,
	features.SupportHTTPRouteNamedRouteRule,
	features.SupportHTTPRouteBackendProtocolH2C,
	features.SupportHTTPRouteBackendProtocolWebSocket,
	features.SupportHTTPRouteCORS,
	features.SupportHTTPRouteRetry,
	features.SupportHTTPRouteRequestMirror,
	features.SupportHTTPRouteRequestMultipleMirrors,
	features.SupportHTTPRouteRequestPercentageMirror,
	features.SupportGatewayHTTPListenerIsolation,
	features.SupportGatewayAddressEmpty,
	features.SupportGatewayHTTPSListenerDetectMisdirectedRequests,
	features.SupportGatewayFrontendClientCertificateValidation,
	features.SupportGatewayFrontendClientCertificateValidationInsecureFallback,
	features.SupportBackendTLSPolicy,
	features.SupportBackendTLSPolicySANValidation,
	// MESH-HTTP: the cases run through node proxies and a waypoint
	// (mesh_test.go).
	features.SupportMesh,
	features.SupportMeshClusterIPMatching,
	features.SupportMeshHTTPRouteBackendRequestHeaderModification,
	features.SupportMeshHTTPRouteNamedRouteRule,
	features.SupportMeshHTTPRouteQueryParamMatching,
	features.SupportMeshHTTPRouteRedirectPath,
	features.SupportMeshHTTPRouteRedirectPort,
	features.SupportMeshHTTPRouteRewritePath,
	features.SupportMeshHTTPRouteSchemeRedirect,
)

// notClaimed: tests of the claimed features that are not run, and why
// (docs/conformance.md lists them).
var notClaimed = map[string]string{
	"HTTPRouteServiceTypes": "Services without a selector whose endpoints are hand-written EndpointSlices: " +
		"ambit's endpoints come from Workloads matched by a Service's selector (headless Services with one work)",
}

// TestConformance runs every claimed GATEWAY-HTTP and MESH-HTTP case of the
// upstream suite against ambit.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite: not in -short")
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, gwv1.Install, gwv1beta1.Install, gwv1alpha2.Install, gwv1alpha3.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	portMap, err := listenerPortMap(conformance.Manifests)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logPath := filepath.Join(dir, "ambit.log")
	if p := os.Getenv("AMBIT_CONFORMANCE_LOG"); p != "" {
		logPath = p
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	e, err := newEnv(ctx, dir, fake.NewClientBuilder().WithScheme(scheme).Build(), portMap, logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	c := &cluster{Client: e.store, env: e}
	mux := http.NewServeMux()
	e.podLogs.register(mux)
	podExec{e}.register(mux)
	apiAddr, err := serveAPI(ctx, mux)
	if err != nil {
		t.Fatal(err)
	}
	restConfig := &rest.Config{Host: "http://" + apiAddr}
	clientset, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		t.Fatal(err)
	}

	timeouts := fastTimeouts()
	applier := kubeutil.Applier{GatewayClass: gatewayClass, ControllerName: translate.ControllerName, ManifestFS: []fs.FS{conformance.Manifests}}
	s := &suite.ConformanceTestSuite{
		Client:               c,
		Clientset:            clientset, // pod logs (the mirror cases) and exec (the mesh cases)
		RestConfig:           restConfig,
		RoundTripper:         &roundtripper.DefaultRoundTripper{TimeoutConfig: timeouts, CustomDialContext: e.dial},
		WebSocketDialer:      wsDialer{e},
		GatewayClassName:     gatewayClass,
		ControllerName:       translate.ControllerName,
		Applier:              applier,
		SupportedFeatures:    claimedFeatures,
		TimeoutConfig:        timeouts,
		CleanupTestResources: true,
		DisableParallelTests: true,
		ManifestFS:           []fs.FS{conformance.Manifests},
		BaseManifests:        "base/manifests.yaml",
		MeshManifests:        "mesh/manifests.yaml",
	}

	// What a user does before running the suite: a GatewayClass for
	// ambit. The suite's own setup then applies its base objects
	// (namespaces, backends, Gateways, certificates) and waits for them.
	gc := &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: gatewayClass}, Spec: gwv1.GatewayClassSpec{ControllerName: translate.ControllerName}}
	if err := c.Create(ctx, gc); err != nil {
		t.Fatal(err)
	}
	// And for the mesh cases, a waypoint for the mesh namespace (bound to
	// it by the namespace label meshNamespaceLabels adds).
	if err := e.startWaypoint(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, waypointGateway()); err != nil {
		t.Fatal(err)
	}
	s.Setup(t, tests.ConformanceTests)

	var passed []string
	for _, ct := range tests.ConformanceTests {
		if !claimedFeatures.HasAll(ct.Features...) {
			continue
		}
		t.Run(ct.ShortName, func(t *testing.T) {
			if why, ok := notClaimed[ct.ShortName]; ok {
				t.Skip("not claimed: " + why)
			}
			mark, _ := logFile.Seek(0, io.SeekCurrent)
			t.Cleanup(func() {
				switch {
				case t.Failed():
					t.Logf("ambit log during this test (%s):\n%s", logPath, logSince(logPath, mark))
				case !t.Skipped():
					passed = append(passed, ct.ShortName)
				}
			})
			ct.Run(t, s)
		})
	}
	t.Logf("passed: %s", strings.Join(passed, " "))
}

// fastTimeouts are the suite's defaults with the waits for a cluster to
// converge cut to what a file-mode control plane on one machine needs, so
// a failing case fails in seconds, not minutes.
func fastTimeouts() config.TimeoutConfig {
	tc := config.DefaultTimeoutConfig()
	for _, d := range []*time.Duration{
		&tc.GatewayMustHaveAddress, &tc.GatewayMustHaveCondition, &tc.GatewayStatusMustHaveListeners,
		&tc.GatewayListenersMustHaveConditions, &tc.GWCMustBeAccepted, &tc.HTTPRouteMustNotHaveParents,
		&tc.HTTPRouteMustHaveCondition, &tc.RouteMustHaveParents, &tc.MaxTimeToConsistency,
		&tc.NamespacesMustBeReady, &tc.LatestObservedGenerationSet,
	} {
		*d = 15 * time.Second
	}
	tc.RequestTimeout = 5 * time.Second
	return tc
}

// listenerPortMap maps every listener port of every Gateway in the suite's
// manifests to a free local port, so the gateways run unprivileged.
func listenerPortMap(fsys fs.FS) (map[uint32]uint32, error) {
	m := map[uint32]uint32{}
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		dec := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if u.GetKind() != "Gateway" {
				continue
			}
			ls, _, _ := unstructured.NestedSlice(u.Object, "spec", "listeners")
			for _, l := range ls {
				if p, ok := l.(map[string]any)["port"].(int64); ok {
					m[uint32(p)] = 0
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	for p := range m {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		m[p] = uint32(l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	return m, nil
}

func logSince(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	lines := strings.Split(string(b[off:]), "\n")
	if len(lines) > 300 {
		lines = slices.Concat([]string{"..."}, lines[len(lines)-300:])
	}
	return strings.Join(lines, "\n")
}

package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ambitmesh/ambit/internal/echo"
	"github.com/ambitmesh/ambit/internal/testkit"
)

func TestEchoFlags(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    echo.Options
		wantErr string
	}{
		{
			name: "defaults, context from the environment",
			env:  map[string]string{"NAMESPACE": "env-ns", "POD_NAME": "env-pod", "SERVICE_NAME": "env-svc", "INGRESS_NAME": "env-gw"},
			want: echo.Options{
				HTTPAddress: ":8080", GRPCAddress: ":7070", TCPAddress: ":9090",
				Context:  echo.Context{Namespace: "env-ns", Pod: "env-pod", Service: "env-svc", Ingress: "env-gw"},
				MaxDelay: echo.DefaultMaxDelay, MaxSize: echo.DefaultMaxSize, ShutdownTimeout: echo.DefaultShutdownTimeout,
			},
		},
		{
			name: "flags win over the environment, 0 disables",
			env:  map[string]string{"NAMESPACE": "env-ns", "POD_NAME": "env-pod"},
			args: []string{"--listen", "10.0.0.7", "--http-port", "80", "--grpc-port", "0", "--tcp-port", "9000",
				"--namespace", "flag-ns", "--service", "flag-svc", "--max-delay", "2s", "--max-size", "1024", "--shutdown-timeout", "1s"},
			want: echo.Options{
				HTTPAddress: "10.0.0.7:80", TCPAddress: "10.0.0.7:9000",
				Context:  echo.Context{Namespace: "flag-ns", Pod: "env-pod", Service: "flag-svc"},
				MaxDelay: 2 * time.Second, MaxSize: 1024, ShutdownTimeout: time.Second,
			},
		},
		{
			name: "IPv6 listen address",
			args: []string{"--listen", "::1", "--grpc-port", "0", "--tcp-port", "0"},
			want: echo.Options{
				HTTPAddress: "[::1]:8080",
				MaxDelay:    echo.DefaultMaxDelay, MaxSize: echo.DefaultMaxSize, ShutdownTimeout: echo.DefaultShutdownTimeout,
			},
		},
		{name: "port too large", args: []string{"--tcp-port", "70000"}, wantErr: "--tcp-port 70000: want a port from 1 to 65535"},
		{name: "negative port", args: []string{"--http-port", "-1"}, wantErr: "--http-port -1"},
		{name: "everything disabled", args: []string{"--http-port", "0", "--grpc-port", "0", "--tcp-port", "0"}, wantErr: "enable at least one"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "--log-level \"loud\""},
		{name: "zero max delay", args: []string{"--max-delay", "0s"}, wantErr: "--max-delay 0s"},
		{name: "bad port syntax", args: []string{"--http-port", "http"}, wantErr: "invalid argument \"http\""},
		{name: "TLS certificate without key", args: []string{"--tls-cert", "tls.crt"}, wantErr: "HTTPS needs both files and an HTTP port"},
		{name: "TLS without an HTTP port", args: []string{"--tls-cert", "tls.crt", "--tls-key", "tls.key", "--http-port", "0"}, wantErr: "HTTPS needs both files and an HTTP port"},
		{name: "TLS files missing", args: []string{"--tls-cert", "/nonexistent/tls.crt", "--tls-key", "/nonexistent/tls.key"}, wantErr: "--tls-cert /nonexistent/tls.crt --tls-key /nonexistent/tls.key: open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"NAMESPACE", "POD_NAME", "SERVICE_NAME", "INGRESS_NAME"} {
				t.Setenv(k, tc.env[k])
			}
			cmd, f := newEchoCommand()
			err := cmd.ParseFlags(tc.args)
			var got echo.Options
			if err == nil {
				got, err = f.options(cmd)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Logger == nil {
				t.Error("no logger")
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(echo.Options{}, "Logger")); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEchoCommandServes(t *testing.T) {
	t.Setenv("POD_NAME", "pod-from-env")
	port := int(testkit.CommonPort(t, "127.0.0.1"))
	root := NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"echo", "--listen", "127.0.0.1", "--http-port", strconv.Itoa(port),
		"--grpc-port", "0", "--tcp-port", "0", "--namespace", "demo"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/hi"
	var resp *http.Response
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if resp, err = http.Get(url); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("ambit echo exited: %v\n%s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ambit echo not answering after 10s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var got echo.Response
	err := json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if err != nil {
		t.Fatal(err)
	}
	if got.Namespace != "demo" || got.Pod != "pod-from-env" || got.Path != "/hi" {
		t.Errorf("answer %+v, want namespace demo, pod pod-from-env, path /hi", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ambit echo after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ambit echo did not stop 10s after cancel")
	}
}

func TestEchoFlagsTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"echo.test"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for file, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd, f := newEchoCommand()
	if err := cmd.ParseFlags([]string{"--tls-cert", certFile, "--tls-key", keyFile}); err != nil {
		t.Fatal(err)
	}
	opts, err := f.options(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if opts.TLS == nil || len(opts.TLS.Certificates) != 1 || !bytes.Equal(opts.TLS.Certificates[0].Certificate[0], der) {
		t.Fatalf("TLS %+v, want the certificate of %s", opts.TLS, certFile)
	}
	cmd, f = newEchoCommand()
	if err := cmd.ParseFlags([]string{"--tls-cert", keyFile, "--tls-key", certFile}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.options(cmd); err == nil || !strings.Contains(err.Error(), "--tls-cert "+keyFile) {
		t.Fatalf("swapped files: error %v, want one naming --tls-cert %s", err, keyFile)
	}
}

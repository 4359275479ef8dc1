package conformance_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/apimachinery/pkg/util/remotecommand"

	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/echo"
)

// podExec plays the API server's pods/exec for the mesh cases. They send
// every request by exec-ing the echo client in a client pod
// (conformance/utils/echo: `client URL [--method=M] [-H name:value]...
// [--count=N]` over SPDY, remotecommand v4) and parse its Key=Value output.
// Here the "client pod" is an echo server on its own loopback address whose
// node proxy has an explicit-mode CONNECT proxy on that address: the
// request is sent through it, to the VIP the Service's name resolves to, so
// it takes the mesh path an app's would.
type podExec struct{ e *env }

func (x podExec) register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/namespaces/{ns}/pods/{name}/exec", x.serve)
}

// execStreamWait bounds how long the client takes to open its streams.
const execStreamWait = 10 * time.Second

func (x podExec) serve(w http.ResponseWriter, r *http.Request) {
	if _, err := httpstream.Handshake(r, w, []string{remotecommand.StreamProtocolV4Name}); err != nil {
		return // Handshake answered the client
	}
	type opened struct {
		s    httpstream.Stream
		sent <-chan struct{}
	}
	streams := make(chan opened, 4)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, sent <-chan struct{}) error {
		streams <- opened{s, sent}
		return nil
	})
	if conn == nil {
		return // UpgradeResponse answered the client
	}
	defer conn.Close()
	// The client opens error, stdout and stderr (no stdin, no TTY).
	byType := map[string]httpstream.Stream{}
	deadline := time.After(execStreamWait)
	for len(byType) < 3 {
		select {
		case o := <-streams:
			select {
			case <-o.sent:
			case <-deadline:
				return
			}
			byType[o.s.Headers().Get(corev1.StreamType)] = o.s
		case <-deadline:
			x.e.log.Error("exec: client did not open its streams", "pod", r.PathValue("name"), "have", len(byType))
			return
		}
	}
	stdout, stderr, errStream := byType[corev1.StreamTypeStdout], byType[corev1.StreamTypeStderr], byType[corev1.StreamTypeError]
	if stdout == nil || stderr == nil || errStream == nil {
		x.e.log.Error("exec: want stdout, stderr and error streams", "pod", r.PathValue("name"))
		return
	}
	out, err := x.run(r.Context(), r.PathValue("ns"), r.PathValue("name"), r.URL.Query()["command"])
	_, _ = stdout.Write([]byte(out))
	stdout.Close()
	st := metav1.Status{Status: metav1.StatusSuccess}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, err)
		st = metav1.Status{Status: metav1.StatusFailure, Reason: "NonZeroExitCode", Message: err.Error(),
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: "1"}}}}
	}
	stderr.Close()
	_ = json.NewEncoder(errStream).Encode(st)
	errStream.Close()
}

// meshRequest is one parsed `client` command.
type meshRequest struct {
	url     *url.URL
	method  string
	headers [][2]string
	count   int
}

func parseClientCommand(cmd []string) (meshRequest, error) {
	r := meshRequest{method: http.MethodGet, count: 1}
	if len(cmd) < 2 || cmd[0] != "client" {
		return r, fmt.Errorf("exec: %q: only the echo client (client URL [flags]) runs in this pod", strings.Join(cmd, " "))
	}
	u, err := url.Parse(cmd[1])
	if err != nil || u.Scheme != "http" {
		return r, fmt.Errorf("exec: client: URL %q: want http://host[:port]/path (%v)", cmd[1], err)
	}
	r.url = u
	for i := 2; i < len(cmd); i++ {
		a := cmd[i]
		switch {
		case strings.HasPrefix(a, "--method="):
			r.method = strings.TrimPrefix(a, "--method=")
		case strings.HasPrefix(a, "--count="):
			if r.count, err = strconv.Atoi(strings.TrimPrefix(a, "--count=")); err != nil || r.count < 1 {
				return r, fmt.Errorf("exec: client: %s: want a positive count", a)
			}
		case a == "-H" && i+1 < len(cmd):
			i++
			k, v, ok := strings.Cut(cmd[i], ":")
			if !ok {
				return r, fmt.Errorf("exec: client: header %q: want name:value", cmd[i])
			}
			r.headers = append(r.headers, [2]string{k, v})
		default:
			return r, fmt.Errorf("exec: client: unknown argument %q", a)
		}
	}
	return r, nil
}

// run performs the client command from pod namespace/name and returns the
// echo client's output: per response "[i] Key=Value" lines, responses
// separated by a blank line.
func (x podExec) run(ctx context.Context, namespace, name string, cmd []string) (string, error) {
	req, err := parseClientCommand(cmd)
	if err != nil {
		return "", err
	}
	ip := x.e.podIP(namespace, name)
	if ip == "" {
		return "", fmt.Errorf("exec: pod %s/%s does not run here", namespace, name)
	}
	dst, err := x.resolve(namespace, req.url)
	if err != nil {
		return "", err
	}
	var out []string
	for i := range req.count {
		s, err := x.roundTrip(ctx, ip, dst, req)
		if err != nil {
			return strings.Join(out, "\n\n"), fmt.Errorf("exec: client: request %d to %s (%s): %w", i, req.url, dst, err)
		}
		out = append(out, prefixLines(fmt.Sprintf("[%d] ", i), s))
	}
	return strings.Join(out, "\n\n") + "\n", nil
}

// resolve is the cluster DNS for the client: NAME, NAME.NS, NAME.NS.svc and
// NAME.NS.svc.<domain> resolve to the Service's VIP from the control plane's
// model; an IP address is itself. The port is the URL's.
func (x podExec) resolve(clientNS string, u *url.URL) (string, error) {
	port := u.Port()
	if port == "" {
		port = "80"
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
		return net.JoinHostPort(ip.String(), port), nil
	}
	parts := strings.SplitN(u.Hostname(), ".", 3)
	ref := model.Ref{Namespace: clientNS, Name: parts[0]}
	if len(parts) > 1 {
		ref.Namespace = parts[1]
	}
	r := x.e.cp.Result()
	if r == nil || r.Mesh == nil {
		return "", errors.New("exec: client: the control plane has no model yet")
	}
	for _, s := range r.Mesh.Services {
		if s.Ref == ref && (len(parts) < 3 || s.Hostname == u.Hostname() || parts[2] == "svc") && len(s.VIPs) > 0 {
			return net.JoinHostPort(s.VIPs[0].String(), port), nil
		}
	}
	return "", fmt.Errorf("exec: client: lookup %s: no such host", u.Hostname())
}

// roundTrip sends one request through the client pod's node proxy (HTTP
// CONNECT to dst on podIP:meshProxyPort, from podIP) and renders the answer.
func (x podExec) roundTrip(ctx context.Context, podIP, dst string, mr meshRequest) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(podIP)}}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(podIP, strconv.Itoa(meshProxyPort)))
	if err != nil {
		return "", err
	}
	defer c.Close()
	context.AfterFunc(ctx, func() { c.Close() })
	br := bufio.NewReader(c)
	connect := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: dst}, Host: dst, Header: http.Header{}}
	if err := connect.Write(c); err != nil {
		return "", err
	}
	cr, err := http.ReadResponse(br, connect)
	if err != nil {
		return "", fmt.Errorf("CONNECT %s: %w", dst, err)
	}
	if cr.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(cr.Body, 1024))
		return "", fmt.Errorf("CONNECT %s: %s: %s", dst, cr.Status, strings.TrimSpace(string(b)))
	}

	req, err := http.NewRequestWithContext(ctx, mr.method, mr.url.String(), nil)
	if err != nil {
		return "", err
	}
	for _, h := range mr.headers {
		if strings.EqualFold(h[0], "host") {
			req.Host = h[1]
			continue
		}
		req.Header.Add(h[0], h[1])
	}
	req.Close = true
	if err := req.Write(c); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	return renderResponse(resp, body), nil
}

// renderResponse prints a response as the echo client does: the status,
// the response headers and, when an echo server answered, what it saw.
func renderResponse(resp *http.Response, body []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "StatusCode=%d\n", resp.StatusCode)
	for k, vs := range resp.Header {
		for _, v := range vs {
			fmt.Fprintf(&b, "ResponseHeader=%s:%s\n", k, v)
		}
	}
	var e echo.Response
	if json.Unmarshal(body, &e) == nil && e.Pod != "" {
		fmt.Fprintf(&b, "URL=%s\nHost=%s\nMethod=%s\nProto=%s\nHostname=%s\n", e.Path, e.Host, e.Method, e.Proto, e.Pod)
		for k, vs := range e.Headers {
			for _, v := range vs {
				fmt.Fprintf(&b, "RequestHeader=%s:%s\n", k, v)
			}
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func prefixLines(prefix, s string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

package conformance_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// podLogs plays the API server's pod log endpoint for the suite's mirror
// cases, which look for the conformance echo server's line "Echoing back
// request made to PATH to client" in a backend's logs. Each line here is
// rendered from the request record of that pod's `ambit echo` log (the
// request target as sent, query included, as upstream prints it).
type podLogs struct {
	mu    sync.Mutex
	lines map[string][]logLine // "namespace/pod" -> lines
}

type logLine struct {
	at   time.Time
	text string
}

// handler wraps next so the echo server of namespace/pod also writes
// its request records to the pod's log.
func (p *podLogs) handler(namespace, pod string, next slog.Handler) slog.Handler {
	return &echoLogHandler{key: namespace + "/" + pod, logs: p, next: next}
}

type echoLogHandler struct {
	key  string
	logs *podLogs
	next slog.Handler
}

func (h *echoLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelDebug // the echo server's request records are debug
}

func (h *echoLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "echo: http request" {
		var target, remote string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "target":
				target = a.Value.String()
			case "remote":
				remote = a.Value.String()
			}
			return true
		})
		h.logs.mu.Lock()
		h.logs.lines[h.key] = append(h.logs.lines[h.key], logLine{at: r.Time, text: fmt.Sprintf("Echoing back request made to %s to client (%s)", target, remote)})
		h.logs.mu.Unlock()
	}
	return h.next.Handle(ctx, r)
}

func (h *echoLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &echoLogHandler{key: h.key, logs: h.logs, next: h.next.WithAttrs(as)}
}

func (h *echoLogHandler) WithGroup(name string) slog.Handler {
	return &echoLogHandler{key: h.key, logs: h.logs, next: h.next.WithGroup(name)}
}

// register answers GET /api/v1/namespaces/NS/pods/NAME/log[?sinceTime=RFC3339].
func (p *podLogs) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}/log", func(w http.ResponseWriter, r *http.Request) {
		var since time.Time
		if v := r.URL.Query().Get("sinceTime"); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				http.Error(w, "sinceTime: "+err.Error(), http.StatusBadRequest)
				return
			}
			since = t
		}
		p.mu.Lock()
		var out []string
		for _, l := range p.lines[r.PathValue("ns")+"/"+r.PathValue("name")] {
			if !l.at.Before(since) {
				out = append(out, l.text)
			}
		}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		_, _ = fmt.Fprint(w, strings.Join(out, "\n"))
	})
}

// serveAPI plays the API server endpoints the suite reaches through its
// Clientset and RestConfig rather than its client (pod logs, pod exec) on a
// loopback port until ctx ends; it returns the server's address.
func serveAPI(ctx context.Context, mux *http.ServeMux) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return ln.Addr().String(), nil
}

package echo

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
)

// Response is the JSON body of an HTTP echo. Fields up to TLS are those of
// the Gateway API conformance echo server, with its names and order; the
// rest are ambit's additions.
type Response struct {
	// Path is the request target as sent (path and query), like upstream.
	Path    string              `json:"path"`
	Host    string              `json:"host"`
	Method  string              `json:"method"`
	Proto   string              `json:"proto"`
	Headers map[string][]string `json:"headers"`
	// HTTPPort is the port the request arrived on.
	HTTPPort string `json:"httpPort"`

	Context

	TLS *TLSAssertions `json:"tls,omitempty"`

	// RemoteAddr is the client address the server saw (ip:port): through a
	// mesh that preserves the client IP it is the original client's.
	RemoteAddr string `json:"remoteAddr"`
	// LocalAddr is the address the request arrived on (ip:port).
	LocalAddr string `json:"localAddr"`
	// BodyBytes is how many request body bytes were read (and discarded).
	BodyBytes int64 `json:"bodyBytes"`
}

// TLSAssertions describes the TLS connection a request came over; same
// fields as the conformance echo server's.
type TLSAssertions struct {
	Version            string   `json:"version"`
	PeerCertificates   []string `json:"peerCertificates,omitempty"`
	ServerName         string   `json:"serverName"`
	NegotiatedProtocol string   `json:"negotiatedProtocol,omitempty"`
	CipherSuite        string   `json:"cipherSuite"`
}

// EchoSetHeader is the request header through which a client asks for
// response headers, as in the conformance echo server: a comma-separated
// list of name:value pairs, e.g. "X-Foo: 1, X-Bar: 2".
const EchoSetHeader = "X-Echo-Set-Header"

func (s *Server) newHTTPServer(base context.Context) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	// Prior-knowledge h2c only: Go's server does not do the HTTP/1.1
	// Upgrade dance, and proxies (Envoy, ours) speak h2c with prior knowledge.
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(s.opts.TLS != nil)
	return &http.Server{
		Handler:           s.handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    s.opts.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 1000,
			// Windows large enough that one bulk stream is not throttled
			// on a fast link.
			MaxReceiveBufferPerConnection: 16 << 20,
			MaxReceiveBufferPerStream:     8 << 20,
		},
		BaseContext: func(net.Listener) context.Context { return base },
		// Failed TLS handshakes (a proxy refusing our certificate) are the
		// backend's view of a test, not noise on stderr.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

func (s *Server) newHTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "OK")
	})
	// websocket.Server rather than websocket.Handler: the latter refuses
	// clients without an Origin header, which test clients rarely send.
	mux.Handle("/ws", websocket.Server{Handler: func(ws *websocket.Conn) {
		// The request context ends when Run's grace period is over; a
		// hijacked connection is not closed by the http.Server.
		stop := context.AfterFunc(ws.Request().Context(), func() { _ = ws.Close() })
		defer stop()
		// Whole messages back, text as text and binary as binary, until
		// the client closes.
		var m wsMessage
		for wsCodec.Receive(ws, &m) == nil {
			if wsCodec.Send(ws, m) != nil {
				return
			}
		}
	}})
	mux.HandleFunc("/retry/", s.retry)
	mux.HandleFunc("/", s.echo)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.inflight.enter() {
			http.Error(w, "echo: shutting down", http.StatusServiceUnavailable)
			return
		}
		defer s.inflight.leave()
		// The conformance server collapses "//" so that paths rewritten by
		// a gateway still reach the echo handler.
		r.URL.Path = strings.ReplaceAll(r.URL.Path, "//", "/")
		if !s.log.Enabled(r.Context(), slog.LevelDebug) {
			mux.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		mux.ServeHTTP(rec, r)
		s.log.Debug("echo: http request", "method", r.Method, "target", r.RequestURI, "proto", r.Proto,
			"remote", r.RemoteAddr, "status", rec.status, "bytes", rec.bytes, "duration", time.Since(start))
	})
}

type wsMessage struct {
	data []byte
	typ  byte
}

// wsCodec keeps a message's frame type, which websocket.Message does not.
var wsCodec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		m := v.(wsMessage)
		return m.data, m.typ, nil
	},
	Unmarshal: func(data []byte, typ byte, v any) error {
		m := v.(*wsMessage)
		m.data, m.typ = data, typ
		return nil
	},
}

// echo answers every path but /health and /ws: /status/NNN with that status,
// ?size=N with N bytes, anything else with the JSON Response.
func (s *Server) echo(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := http.StatusOK
	isStatus := false
	if code, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
		n, err := strconv.Atoi(code)
		if err != nil || len(code) != 3 || n < 200 || n > 599 {
			s.fail(w, http.StatusBadRequest, fmt.Errorf("path %q: want /status/NNN with NNN a status code from 200 to 599", r.URL.Path))
			return
		}
		status, isStatus = n, true
	}
	size := int64(-1)
	if v := q.Get("size"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > s.opts.MaxSize {
			s.fail(w, http.StatusBadRequest, fmt.Errorf("query size=%q: want a byte count from 0 to %d", v, s.opts.MaxSize))
			return
		}
		size = n
	}
	var delay time.Duration
	if v := q.Get("delay"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > s.opts.MaxDelay {
			s.fail(w, http.StatusBadRequest, fmt.Errorf("query delay=%q: want a Go duration from 0s to %s, e.g. 250ms", v, s.opts.MaxDelay))
			return
		}
		delay = d
	}

	// Read the body first so uploads through a proxy can be measured and
	// keep-alive survives large bodies.
	bodyBytes, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		// The client went away or sent a broken body; nobody reads an answer.
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	setEchoHeaders(w.Header(), r.Header)
	switch {
	case size >= 0:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(status)
		writeFiller(w, size)
	case isStatus:
		// Like the conformance server: the status alone, no body.
		w.WriteHeader(status)
	default:
		resp := Response{
			Path:       r.RequestURI,
			Host:       r.Host,
			Method:     r.Method,
			Proto:      r.Proto,
			Headers:    r.Header,
			Context:    s.opts.Context,
			TLS:        tlsAssertions(r.TLS),
			RemoteAddr: r.RemoteAddr,
			BodyBytes:  bodyBytes,
		}
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			resp.LocalAddr = la.String()
			if _, port, err := net.SplitHostPort(resp.LocalAddr); err == nil {
				resp.HTTPPort = port
			}
		}
		js, err := json.MarshalIndent(resp, "", " ")
		if err != nil {
			s.fail(w, http.StatusInternalServerError, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Length", strconv.Itoa(len(js)))
		w.WriteHeader(status)
		_, _ = w.Write(js)
	}
}

// filler is the content of ?size= bodies: one shared read-only chunk, so a
// body of any size costs no allocation. Built on first use: every ambit
// command links this package, and only the echo serves bodies.
var filler = sync.OnceValue(func() []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789\n"
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = alphabet[i%len(alphabet)]
	}
	return b
})

func writeFiller(w io.Writer, n int64) {
	fill := filler()
	for n > 0 {
		chunk := fill[:min(n, int64(len(fill)))]
		if _, err := w.Write(chunk); err != nil {
			return
		}
		n -= int64(len(chunk))
	}
}

// setEchoHeaders applies X-Echo-Set-Header the way the conformance server
// does: names keep the client's casing, repeated names are joined by ",".
func setEchoHeaders(dst, req http.Header) {
	for _, list := range req[EchoSetHeader] {
		for kv := range strings.SplitSeq(list, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(kv), ":")
			name, value = strings.TrimSpace(name), strings.TrimSpace(value)
			if name == "" {
				continue
			}
			if len(dst[name]) == 0 {
				dst[name] = []string{value}
			} else {
				dst[name][0] += "," + value
			}
		}
	}
}

func (s *Server) fail(w http.ResponseWriter, code int, err error) {
	body, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{"echo: " + err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func tlsAssertions(cs *tls.ConnectionState) *TLSAssertions {
	if cs == nil {
		return nil
	}
	t := &TLSAssertions{
		Version:            tlsVersion(cs.Version),
		ServerName:         cs.ServerName,
		NegotiatedProtocol: cs.NegotiatedProtocol,
		CipherSuite:        tls.CipherSuiteName(cs.CipherSuite),
	}
	for _, c := range cs.PeerCertificates {
		t.PeerCertificates = append(t.PeerCertificates,
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	return t
}

// tlsVersion spells versions like the conformance server ("TLSv1.3"), not
// like tls.VersionName ("TLS 1.3").
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1.0"
	}
	return ""
}

// recorder captures status and size for the debug request log only.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Hijack is for the WebSocket handler, which type-asserts http.Hijacker.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

func (r *recorder) Flush() { _ = http.NewResponseController(r.ResponseWriter).Flush() }

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

package proxy

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// FuzzParseHead feeds request heads to the downstream server's parser: it
// must not crash (a remote DoS), and what it accepts net/http's parser
// must accept and read the same way (method, target, host, framing,
// fields), so the routes see what a Go server would.
//
//	go test ./internal/waypoint/proxy -run '^$' -fuzz FuzzParseHead -fuzztime 30s
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a/b?c=d&e HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
		"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
		"GET http://example.com/x?y HTTP/1.1\r\nHost: other\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /%61dmin/%2e%2e/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\n",
		"GET /\r\n\r\n",
		"GET / HTTP/1.1\r\nhost: a\r\nx-lower: ü\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// As readHead: empty lines before the head are skipped.
		s = s[skipEmptyLines([]byte(s)):]
		end := headEnd([]byte(s), 0)
		if end < 0 || s == "" {
			return
		}
		head := s[:end]
		h, refusal := parseHead(head)
		if refusal != nil {
			if refusal.status < 400 || refusal.msg == "" {
				t.Fatalf("refusal %+v", refusal)
			}
			return
		}
		for k, vs := range h.header {
			if !validToken(k) {
				t.Fatalf("field name %q accepted", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("field %s value %q accepted", k, v)
				}
			}
		}
		if h.chunked != (h.contentLength == -1) || h.contentLength < -1 {
			t.Fatalf("framing: chunked %v, length %d", h.chunked, h.contentLength)
		}
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatalf("accepted %q, which net/http refuses: %v", head, err)
		}
		if r.Method != h.method || r.RequestURI != h.target || r.Host != h.host {
			t.Fatalf("%q: method %q target %q host %q; net/http %q %q %q", head, h.method, h.target, h.host, r.Method, r.RequestURI, r.Host)
		}
		if *r.URL != h.url {
			t.Fatalf("%q: URL %#v; net/http %#v", head, h.url, *r.URL)
		}
		if r.ContentLength != h.contentLength && !(h.chunked && r.ContentLength == -1) {
			t.Fatalf("%q: length %d; net/http %d", head, h.contentLength, r.ContentLength)
		}
		for k, vs := range r.Header {
			switch k {
			case "Expect", "Transfer-Encoding", "Content-Length":
				continue // the server's framing fields
			}
			if strings.Join(h.header[k], "\n") != strings.Join(vs, "\n") {
				t.Fatalf("%q: field %s %q; net/http %q", head, k, h.header[k], vs)
			}
		}
	})
}

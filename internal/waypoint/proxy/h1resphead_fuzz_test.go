package proxy

import (
	"bufio"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzParseResponseHead feeds response heads to the upstream client's
// parser, after a GET or a HEAD: what it accepts http.ReadResponse must
// accept and read the same way (status, fields, framing, keep-alive,
// announced trailers, whether a body follows); what it refuses,
// http.ReadResponse must refuse too, but for the refusals the parser's
// comment lists (obs-fold, a space in a field name, HTTP other than 1.x,
// a signed status code, a Content-Length longer than 18 digits).
//
//	go test ./internal/waypoint/proxy -run '^$' -fuzz FuzzParseResponseHead -fuzztime 30s
func FuzzParseResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 404 Not  Found\r\nConnection: close\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nTrailer: X-Sum, grpc-status\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 200 OK\r\nPragma: no-cache\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/1.1 +20 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\n\n",
		"HTTP/1.1 200 OK\r\nx-lower: ü\r\nconnection: Close, x\r\n\r\n",
	} {
		f.Add(s, false)
	}
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true)
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true)
	f.Fuzz(func(t *testing.T, s string, head bool) {
		end := headEnd([]byte(s), 0)
		if end < 0 {
			return
		}
		s = s[:end]
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		got := &http.Response{}
		err := parseResponseHead(got, s, method)
		want, werr := http.ReadResponse(bufio.NewReader(strings.NewReader(s)), &http.Request{Method: method})
		if err != nil {
			if werr == nil && !refusedByDesign(s, want) {
				t.Fatalf("refused (%v), net/http accepts:\n%q", err, s)
			}
			return
		}
		if werr != nil {
			t.Fatalf("accepted, net/http refuses (%v):\n%q", werr, s)
		}
		if got.Status != want.Status || got.StatusCode != want.StatusCode || got.Proto != want.Proto ||
			got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor {
			t.Fatalf("status line: got %q %d %q, net/http %q %d %q", got.Status, got.StatusCode, got.Proto, want.Status, want.StatusCode, want.Proto)
		}
		if !reflect.DeepEqual(got.Header, want.Header) {
			t.Fatalf("fields of %q:\ngot     %q\nnet/http %q", s, got.Header, want.Header)
		}
		if got.ContentLength != want.ContentLength || got.Close != want.Close ||
			!slices.Equal(got.TransferEncoding, want.TransferEncoding) {
			t.Fatalf("framing of %q: got length %d close %v TE %q, net/http %d %v %q", s,
				got.ContentLength, got.Close, got.TransferEncoding, want.ContentLength, want.Close, want.TransferEncoding)
		}
		if g, w := slices.Sorted(maps.Keys(got.Trailer)), slices.Sorted(maps.Keys(want.Trailer)); !slices.Equal(g, w) {
			t.Fatalf("announced trailers of %q: got %q, net/http %q", s, g, w)
		}
		b := &h1Body{pc: &h1Conn{br: bufio.NewReader(strings.NewReader(""))}}
		if hasBody := b.framed(got, method); hasBody != (want.Body != http.NoBody) {
			t.Fatalf("body after %q: got %v, net/http %v", s, hasBody, want.Body != http.NoBody)
		}
	})
}

// refusedByDesign: a head net/http accepts that parseResponseHead refuses
// on purpose (see its comment).
func refusedByDesign(s string, r *http.Response) bool {
	if r.ProtoMajor != 1 || strings.HasPrefix(strings.TrimLeft(strings.SplitN(s, " ", 2)[1], " "), "+") {
		return true
	}
	_, fields, _ := strings.Cut(s, "\n")
	for line := range strings.Lines(fields) {
		if line[0] == ' ' || line[0] == '\t' {
			return true // obs-fold
		}
		if name, _, ok := strings.Cut(line, ":"); ok && strings.Contains(name, " ") {
			return true
		}
	}
	for _, v := range r.Header["Content-Length"] {
		if len(strings.Trim(v, " \t")) > 18 {
			return true
		}
	}
	return false
}

// BenchmarkResponseHead: reading a typical upstream head (an echo's, 1 KiB
// body) with the engine's parser against http.ReadResponse.
//
//	go test ./internal/waypoint/proxy -run '^$' -bench ResponseHead -benchmem
func BenchmarkResponseHead(b *testing.B) {
	const head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Mon, 23 Nov 2026 20:40:00 GMT\r\nContent-Length: 1024\r\n\r\n"
	req := &http.Request{Method: http.MethodGet}
	b.Run("engine", func(b *testing.B) {
		br := bufio.NewReader(nil)
		for b.Loop() {
			br.Reset(strings.NewReader(head))
			s, err := readResponseHead(br)
			if err != nil {
				b.Fatal(err)
			}
			resp := &http.Response{}
			if err := parseResponseHead(resp, s, req.Method); err != nil || resp.ContentLength != 1024 {
				b.Fatal(err)
			}
		}
	})
	b.Run("net-http", func(b *testing.B) {
		br := bufio.NewReader(nil)
		for b.Loop() {
			br.Reset(strings.NewReader(head))
			resp, err := http.ReadResponse(br, req)
			if err != nil || resp.ContentLength != 1024 {
				b.Fatal(err)
			}
		}
	})
}

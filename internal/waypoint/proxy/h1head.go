package proxy

import (
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// h1Refusal is a request head the downstream HTTP/1.1 server refuses:
// the status answered and what the access log says was wrong (the
// metric's reason label follows from the status, see refused).
type h1Refusal struct {
	status int
	msg    string
}

func (r *h1Refusal) Error() string { return r.msg }

func badRequest(msg string) *h1Refusal {
	return &h1Refusal{status: http.StatusBadRequest, msg: msg}
}

// chunkedTE is the TransferEncoding of every chunked request: nothing
// writes to it.
var chunkedTE = []string{"chunked"}

// h1Head is a parsed request head. Its strings are substrings of the one
// string the head was copied into: one allocation for all of them.
type h1Head struct {
	method, target, proto string
	minor                 int // HTTP/1.minor
	url                   url.URL
	header                http.Header
	host                  string
	contentLength         int64 // -1 when chunked
	chunked               bool
	close                 bool // no keep-alive after this request
	expectContinue        bool
	trailer               http.Header // the keys the client announced
}

// headEnd returns the length of the head at the start of b (through the
// empty line ending it, CRLF or LF), or -1 when it is not complete. from
// is where a previous call stopped looking, so a head arriving in pieces
// is scanned once.
func headEnd(b []byte, from int) int {
	for i := max(from, 0); ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// skipEmptyLines returns how many bytes of empty lines start b: a client
// may send a CRLF after a request body (RFC 9112 §2.2).
func skipEmptyLines(b []byte) int {
	n := 0
	for n < len(b) {
		switch {
		case b[n] == '\n':
			n++
		case b[n] == '\r' && n+1 < len(b) && b[n+1] == '\n':
			n += 2
		default:
			return n
		}
	}
	return n
}

// nextLine splits s at its first LF, dropping the line's CR.
func nextLine(s string) (line, rest string) {
	line, rest, _ = strings.Cut(s, "\n")
	return strings.TrimSuffix(line, "\r"), rest
}

// parseHead parses a complete request head (as headEnd found it, empty
// lines before it removed). What it refuses, net/http refused too, with
// the same status; in addition it refuses obs-fold (RFC 9112 §5.2, as
// Envoy does).
func parseHead(s string) (*h1Head, *h1Refusal) {
	h := &h1Head{contentLength: 0}
	line, rest := nextLine(s)
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 {
		return nil, badRequest("malformed request line")
	}
	if method == "" || !validToken(method) {
		return nil, badRequest("invalid method")
	}
	h.method, h.target, h.proto = method, target, proto
	switch {
	case proto == "HTTP/1.1":
		h.minor = 1
	case proto == "HTTP/1.0":
	case len(proto) == 8 && strings.HasPrefix(proto, "HTTP/") && isDigit(proto[5]) && proto[6] == '.' && isDigit(proto[7]):
		if proto[5] != '1' {
			return nil, &h1Refusal{status: http.StatusHTTPVersionNotSupported, msg: "unsupported protocol version " + proto}
		}
		h.minor = int(proto[7] - '0')
	default:
		return nil, badRequest("malformed HTTP version")
	}
	if err := h.parseTarget(); err != nil {
		return nil, err
	}
	header, err := parseFields(rest)
	if err != nil {
		return nil, err
	}
	h.header = header
	if err := h.framing(); err != nil {
		return nil, err
	}
	return h, nil
}

// parseFields parses the field lines of a head, through the empty line
// ending them: the requests' heads, and the responses' and trailers the
// upstream client reads.
func parseFields(rest string) (http.Header, *h1Refusal) {
	n := strings.Count(rest, "\n")
	header := make(http.Header, n)
	// One backing array for the values; each key's slice is capped so an
	// append by a filter copies instead of overwriting its neighbour.
	vals := make([]string, 0, n)
	for {
		var line string
		line, rest = nextLine(rest)
		if line == "" {
			return header, nil
		}
		name, value, err := splitField(line)
		if err != nil {
			return nil, err
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		if cur, ok := header[key]; ok {
			header[key] = append(cur, value)
			continue
		}
		vals = append(vals, value)
		header[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
}

// splitField splits and checks a header field line.
func splitField(line string) (name, value string, err *h1Refusal) {
	if line[0] == ' ' || line[0] == '\t' {
		return "", "", badRequest("obsolete line folding in a header field")
	}
	name, value, ok := strings.Cut(line, ":")
	if !ok || !validToken(name) {
		return "", "", badRequest("invalid header name")
	}
	value = strings.Trim(value, " \t") // OWS only: a CR is an error
	if !httpguts.ValidHeaderFieldValue(value) {
		return "", "", badRequest("invalid byte in the value of header " + name)
	}
	return name, value, nil
}

// parseTarget fills h.url from the request target as url.ParseRequestURI
// does, without its allocations for the common origin form.
func (h *h1Head) parseTarget() *h1Refusal {
	t := h.target
	if t == "" {
		return badRequest("empty request target")
	}
	for i := 0; i < len(t); i++ {
		if t[i] < 0x20 || t[i] == 0x7f {
			return badRequest("control character in the request target")
		}
	}
	if t[0] == '/' {
		p, q, hasQuery := strings.Cut(t, "?")
		if plainPath(p) {
			h.url.Path, h.url.RawQuery, h.url.ForceQuery = p, q, hasQuery && q == ""
			return nil
		}
	}
	raw := t
	if h.method == http.MethodConnect && t[0] != '/' {
		raw = "http://" + t // authority form
	}
	u, err := url.ParseRequestURI(raw)
	if err != nil {
		return badRequest("malformed request target")
	}
	if raw != t {
		u.Scheme = ""
	}
	h.url = *u
	return nil
}

// plainPath: p is a path url.URL keeps as it is, no escape to decode
// and nothing its EscapedPath would escape, so Path is p and RawPath "".
func plainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		if !plainPathByte[p[i]] {
			return false
		}
	}
	return true
}

var plainPathByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~$&+,/:;=@", byte(c)) >= 0
	}
	return t
}()

// framing reads Host, Content-Length, Transfer-Encoding, Connection and
// Expect, as net/http's server does.
func (h *h1Head) framing() *h1Refusal {
	hosts := h.header["Host"]
	switch {
	case h.minor >= 1 && len(hosts) == 0:
		return badRequest("missing required Host header")
	case len(hosts) > 1:
		return badRequest("too many Host headers")
	case len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]):
		return badRequest("malformed Host header")
	}
	h.host = h.url.Host
	if h.host == "" && len(hosts) == 1 {
		h.host = hosts[0]
	}
	delete(h.header, "Host")

	if cls := h.header["Content-Length"]; len(cls) > 0 {
		for _, v := range cls[1:] {
			if v != cls[0] {
				return badRequest("conflicting Content-Length headers")
			}
		}
		n, ok := parseLength(cls[0])
		if !ok {
			return badRequest("invalid Content-Length " + cls[0])
		}
		h.contentLength = n
		if len(cls) > 1 {
			h.header["Content-Length"] = cls[:1:1]
		}
	}
	te, hasTE := h.header["Transfer-Encoding"]
	if hasTE && h.minor == 0 {
		// Transfer-Encoding means nothing before HTTP/1.1, but a sender
		// may have framed the body by it: the framing is faulty and the
		// connection closes after the answer (RFC 9112 §6.1).
		delete(h.header, "Transfer-Encoding")
		h.close = true
	} else if hasTE {
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return &h1Refusal{status: http.StatusNotImplemented, msg: "unsupported transfer encoding " + strings.Join(te, ", ")}
		}
		// It overrides Content-Length (RFC 9112 §6.3): the body is
		// re-framed upstream, so both sides agree where it ends. With
		// both, a parser in front may have split the stream elsewhere:
		// what follows is not served (the connection closes, §6.1).
		_, hasCL := h.header["Content-Length"]
		h.chunked, h.contentLength, h.close = true, -1, hasCL
		delete(h.header, "Content-Length")
		delete(h.header, "Transfer-Encoding")
		h.trailer = announcedTrailers(h.header["Trailer"])
	}
	conn := h.header["Connection"]
	if h.minor >= 1 {
		h.close = h.close || httpguts.HeaderValuesContainsToken(conn, "close")
	} else {
		h.close = h.close || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	if e, ok := h.header["Expect"]; ok && h.minor >= 1 {
		if len(e) != 1 || !strings.EqualFold(e[0], "100-continue") {
			return &h1Refusal{status: http.StatusExpectationFailed, msg: "unsupported expectation " + strings.Join(e, ", ")}
		}
		h.expectContinue = h.contentLength != 0
		delete(h.header, "Expect")
	}
	return nil
}

// announcedTrailers are the keys a Trailer field announces, nil values;
// nil when none.
func announcedTrailers(vv []string) http.Header {
	var trailer http.Header
	for _, v := range vv {
		for k := range strings.SplitSeq(v, ",") {
			if k = textproto.TrimString(k); k != "" {
				if trailer == nil {
					trailer = http.Header{}
				}
				trailer[textproto.CanonicalMIMEHeaderKey(k)] = nil
			}
		}
	}
	return trailer
}

// parseLength parses a Content-Length: digits only.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return s != ""
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The upstream client's reading of response heads and bodies: what
// http.ReadResponse does, with the header parser of the downstream server
// (parseFields) and without its allocations. What it refuses,
// http.ReadResponse refused too, except obs-fold (RFC 9112 §5.2 lets a
// proxy answer 502), a space in a field name (which net/http keeps for
// old servers, go.dev/issue/34540, and RFC 9112 §5.1 does not allow), a
// protocol other than HTTP/1.x, a status code with a sign ("+20") and a
// Content-Length of more than 18 digits. A refused head fails the round
// trip as any broken response does (503, UC).

var errH1TrailerTooLarge = errors.New("trailer section larger than the read buffer")

// readResponseHead reads one response head from br, all of it before the
// body (h1Reader bounds it).
func readResponseHead(br *bufio.Reader) (string, error) {
	scanned := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		if end := headEnd(buf, scanned); end >= 0 {
			head := string(buf[:end])
			_, _ = br.Discard(end)
			return head, nil
		}
		if len(buf) == br.Size() {
			return readLongHead(br, buf)
		}
		scanned = max(len(buf)-3, 0)
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return "", unexpectedEOF(err)
		}
	}
}

// readLongHead reads a head that outgrows br's buffer, whose bytes are
// the first of it, line by line: a line ends where the head may.
func readLongHead(br *bufio.Reader, buf []byte) (string, error) {
	long := append(make([]byte, 0, 2*len(buf)), buf...)
	_, _ = br.Discard(len(buf))
	for {
		scanned := max(len(long)-3, 0)
		line, err := br.ReadSlice('\n')
		long = append(long, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", unexpectedEOF(err)
		}
		if end := headEnd(long, scanned); end >= 0 {
			return string(long[:end]), nil
		}
	}
}

// parseResponseHead parses into resp a response head to a request with
// the given method, as http.ReadResponse would: framing (Content-Length,
// Transfer-Encoding, no body for HEAD, 1xx, 204 and 304), Connection,
// announced trailers. The body is the caller's to set.
func parseResponseHead(resp *http.Response, head, method string) error {
	line, rest := nextLine(head)
	proto, status, ok := strings.Cut(line, " ")
	if !ok {
		return fmt.Errorf("malformed HTTP response %q", line)
	}
	if len(proto) != 8 || !strings.HasPrefix(proto, "HTTP/1.") || !isDigit(proto[7]) {
		return fmt.Errorf("malformed or unsupported HTTP version %q", proto)
	}
	status = strings.TrimLeft(status, " ")
	code, _, _ := strings.Cut(status, " ")
	if len(code) != 3 || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) {
		return fmt.Errorf("malformed HTTP status code %q", code)
	}
	header, refusal := parseFields(rest)
	if refusal != nil {
		return refusal
	}
	*resp = http.Response{
		Status:        status,
		StatusCode:    int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0'),
		Proto:         proto,
		ProtoMajor:    1,
		ProtoMinor:    int(proto[7] - '0'),
		Header:        header,
		ContentLength: -1,
	}
	if hp := header["Pragma"]; len(hp) > 0 && hp[0] == "no-cache" && header["Cache-Control"] == nil {
		header["Cache-Control"] = []string{"no-cache"}
	}
	conn := header["Connection"]
	if resp.ProtoMinor == 0 {
		resp.Close = !httpguts.HeaderValuesContainsToken(conn, "keep-alive") || httpguts.HeaderValuesContainsToken(conn, "close")
	} else if httpguts.HeaderValuesContainsToken(conn, "close") {
		resp.Close = true
		delete(header, "Connection")
	}
	// Transfer-Encoding means nothing before HTTP/1.1 (RFC 9112 §6.1).
	chunked := false
	if te, ok := header["Transfer-Encoding"]; ok {
		delete(header, "Transfer-Encoding")
		if resp.ProtoMinor >= 1 {
			if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
				return fmt.Errorf("unsupported transfer encoding %q", te)
			}
			chunked = true
			resp.TransferEncoding = chunkedTE
		}
	}
	length := int64(-1)
	if cls := header["Content-Length"]; len(cls) > 0 {
		for _, v := range cls[1:] {
			if v != cls[0] {
				return fmt.Errorf("conflicting Content-Length headers %q", cls)
			}
		}
		n, ok := parseLength(cls[0])
		if !ok {
			return fmt.Errorf("invalid Content-Length %q", cls[0])
		}
		length = n
		header["Content-Length"] = cls[:1:1]
	}
	switch code := resp.StatusCode; {
	case method == http.MethodHead:
		// The length of the body a GET would have had.
		resp.ContentLength = length
	case code/100 == 1 || code == http.StatusNoContent || code == http.StatusNotModified:
		resp.ContentLength = 0
	case chunked:
		// It overrides Content-Length (RFC 9112 §6.3).
		delete(header, "Content-Length")
	default:
		resp.ContentLength = length
		// Without a length the body ends with the connection.
		resp.Close = resp.Close || length < 0
	}
	if vv, ok := header["Trailer"]; ok && chunked {
		delete(header, "Trailer")
		resp.Trailer = announcedTrailers(vv)
		for _, k := range [...]string{"Transfer-Encoding", "Trailer", "Content-Length"} {
			if _, ok := resp.Trailer[k]; ok {
				return fmt.Errorf("bad trailer key %q", k)
			}
		}
	}
	return nil
}

// framed says how a response body is read; false: it has none.
func (b *h1Body) framed(resp *http.Response, method string) bool {
	noBody := method == http.MethodHead || !bodyAllowedForStatus(resp.StatusCode)
	switch {
	case resp.TransferEncoding != nil:
		if noBody {
			return false
		}
		b.chunks = httputil.NewChunkedReader(b.pc.br)
		b.resp = resp
	case noBody || resp.ContentLength == 0:
		return false
	case resp.ContentLength > 0:
		b.left = resp.ContentLength
	case !resp.Close:
		return false
	default:
		b.left = -1 // to the connection's end
	}
	return true
}

// readFrame reads the body as its framing says, with io.EOF at its end.
func (b *h1Body) readFrame(p []byte) (int, error) {
	br := b.pc.br
	switch {
	case b.chunks != nil:
		n, err := b.chunks.Read(p)
		if err == io.EOF {
			if terr := b.readTrailer(); terr != nil {
				err = terr
			}
		}
		return n, err
	case b.left < 0:
		return br.Read(p)
	case b.left == 0:
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := br.Read(p)
	b.left -= int64(n)
	switch {
	case b.left == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// readTrailer reads the trailer section after the last chunk into the
// response's Trailer. Like net/http it must fit in the read buffer.
func (b *h1Body) readTrailer() error {
	br := b.pc.br
	for {
		buf, _ := br.Peek(br.Buffered())
		switch {
		case len(buf) > 0 && buf[0] == '\n':
			_, _ = br.Discard(1)
			return nil
		case len(buf) > 1 && buf[0] == '\r' && buf[1] == '\n':
			_, _ = br.Discard(2)
			return nil
		}
		if end := headEnd(buf, 0); end >= 0 {
			t, refusal := parseFields(string(buf[:end]))
			_, _ = br.Discard(end)
			if refusal != nil {
				return refusal
			}
			if b.resp.Trailer == nil {
				b.resp.Trailer = t
			} else {
				for k, vv := range t {
					b.resp.Trailer[k] = vv
				}
			}
			return nil
		}
		if len(buf) == br.Size() {
			return errH1TrailerTooLarge
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return unexpectedEOF(err)
		}
	}
}

func bodyAllowedForStatus(code int) bool {
	return code/100 != 1 && code != http.StatusNoContent && code != http.StatusNotModified
}

package proxy

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1Response is the http.ResponseWriter (with Flusher and Hijacker) of
// the downstream HTTP/1.1 server, one per connection, reset per request.
// The head is written with the first body bytes; a body that is complete
// within h1BufferedBody when the handler returns goes out with its head in
// one write, with a Content-Length when it had none.
type h1Response struct {
	c      *downConn
	req    *http.Request
	body   *downBody // nil when the request has none
	header http.Header

	status      int
	wroteHeader bool  // the final status is set
	committed   bool  // its head is in c.out or sent
	declared    int64 // the handler's Content-Length, -1 when none
	written     int64
	noBody      bool // HEAD, or a status without a body
	head        bool
	chunked     bool
	closeAfter  bool
	keepAlive   bool // an HTTP/1.0 client asked for keep-alive
	minor       int
	trailers    []string // the keys the handler announced in Trailer
	pending     []byte   // body held back before the head is written
	// expectContinue: the client waits for 100 Continue before sending
	// its body; sent100: one went out (never a second).
	expectContinue, sent100 bool
	err                     error // a write to the client failed
}

func (w *h1Response) reset(req *http.Request, h *h1Head, body *downBody) {
	if w.header == nil {
		w.header = make(http.Header, 16)
	} else {
		clear(w.header)
	}
	*w = h1Response{c: w.c, req: req, body: body, header: w.header, declared: -1, head: req.Method == http.MethodHead,
		closeAfter: h.close, keepAlive: h.minor == 0 && !h.close, minor: h.minor,
		pending: w.pending[:0], trailers: w.trailers[:0], expectContinue: h.expectContinue}
}

func (w *h1Response) Header() http.Header { return w.header }

func (w *h1Response) WriteHeader(code int) {
	if w.c.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("proxy: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.write1xx(code)
		return
	}
	w.c.wmu.Lock()
	w.wroteHeader = true
	w.c.wmu.Unlock()
	w.status = code
	w.noBody = w.head || code == http.StatusNoContent || code == http.StatusNotModified || code < 200
	if cl, ok := w.header["Content-Length"]; ok {
		if n, ok := parseLength(strings.TrimSpace(strings.Join(cl, ""))); ok && len(cl) == 1 {
			w.declared = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
	if w.expectContinue && !w.sent100 {
		// The client may or may not send the body it was waiting to
		// send: the connection cannot be reused.
		w.closeAfter = true
	}
	if httpguts.HeaderValuesContainsToken(w.header["Connection"], "close") {
		w.closeAfter = true
	}
	for _, v := range w.header["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
			}
		}
	}
}

// write1xx sends an interim response at once (HTTP/1.1 clients only).
func (w *h1Response) write1xx(code int) {
	if w.minor == 0 {
		return
	}
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	if w.wroteHeader || code == http.StatusContinue && w.sent100 {
		return
	}
	if code == http.StatusContinue {
		w.sent100 = true
	}
	b := appendStatusLine(nil, code)
	b = appendHeader(b, w.header)
	b = append(b, "\r\n"...)
	// A failure shows in the response's own writes.
	_ = w.c.writeLocked(b)
}

// sentContinue sends 100 Continue when the handler first reads a body
// the client waits to send; false when the client is gone.
func (w *h1Response) sentContinue() bool {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	if w.sent100 || w.wroteHeader {
		return true
	}
	w.sent100 = true
	return w.c.writeLocked([]byte("HTTP/1.1 100 Continue\r\n\r\n")) == nil
}

func (w *h1Response) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.noBody {
		if w.head {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	var tooLong error
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		p, tooLong = p[:w.declared-w.written], http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed && len(w.pending)+len(p) <= h1BufferedBody {
		w.pending = append(w.pending, p...)
		return len(p), tooLong
	}
	if !w.committed {
		w.commit(false)
	}
	if err := w.writeBody(p); err != nil {
		return 0, err
	}
	return len(p), tooLong
}

// commit puts the head and the held-back body in c.out. final: the
// handler is done, so the held-back body is all of it.
func (w *h1Response) commit(final bool) {
	w.committed = true
	cl := int64(-1)
	switch {
	case w.noBody:
	case w.declared >= 0:
	case final && len(w.trailers) == 0:
		cl = int64(len(w.pending))
	case w.minor >= 1:
		w.chunked = true
	default:
		w.closeAfter = true // an HTTP/1.0 body ends with the connection
	}
	if w.req.Close || w.c.serve.Err() != nil {
		// Shutting down: the client is told not to send another
		// request on the connection, which closes after this one.
		w.closeAfter = true
	}
	if w.body != nil && !w.closeAfter && !w.body.drain() {
		w.closeAfter = true
	}
	b := appendStatusLine(w.c.out[:0], w.status)
	b = appendHeader(b, w.header)
	if _, ok := w.header["Date"]; !ok {
		b = append(b, "Date: "...)
		b = appendDate(b)
		b = append(b, "\r\n"...)
	}
	if cl >= 0 {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, cl, 10)
		b = append(b, "\r\n"...)
	}
	if w.chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if _, ok := w.header["Connection"]; !ok {
		switch {
		case w.closeAfter:
			b = append(b, "Connection: close\r\n"...)
		case w.keepAlive:
			b = append(b, "Connection: keep-alive\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	w.c.out = b
	if len(w.pending) > 0 {
		p := w.pending
		w.pending = w.pending[:0]
		_ = w.writeBody(p)
	}
}

// writeBody frames p (a chunk, or identity bytes) after the head; the
// bytes go out when c.out is full, on Flush, or at the end.
func (w *h1Response) writeBody(p []byte) error {
	if len(p) == 0 || w.err != nil {
		return w.err
	}
	c := w.c
	if w.chunked {
		c.out = strconv.AppendInt(c.out, int64(len(p)), 16)
		c.out = append(c.out, "\r\n"...)
	}
	if len(c.out)+len(p) <= 2*h1BufferedBody {
		c.out = append(c.out, p...)
	} else {
		w.send(c.out)
		w.send(p)
		c.out = c.out[:0]
	}
	if w.chunked {
		c.out = append(c.out, "\r\n"...)
	}
	if len(c.out) >= h1BufferedBody {
		w.send(c.out)
		c.out = c.out[:0]
	}
	return w.err
}

// send writes b to the client; the first failure is kept and ends the
// connection after the request.
func (w *h1Response) send(b []byte) {
	if w.err != nil || len(b) == 0 {
		return
	}
	if err := w.c.writeRaw(b); err != nil {
		w.err, w.closeAfter = err, true
	}
}

// FlushError sends what is buffered: the head, chunked when the body
// has no declared length.
func (w *h1Response) FlushError() error {
	if w.c.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(false)
	}
	w.send(w.c.out)
	w.c.out = w.c.out[:0]
	return w.err
}

func (w *h1Response) Flush() { _ = w.FlushError() }

// finish completes the response when the handler returns.
func (w *h1Response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true)
	}
	c := w.c
	if w.chunked {
		c.out = append(c.out, "0\r\n"...)
		for _, k := range w.trailers {
			c.out = appendField(c.out, k, w.header[k])
		}
		for k, vs := range w.header {
			if t, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				c.out = appendField(c.out, t, vs)
			}
		}
		c.out = append(c.out, "\r\n"...)
	}
	w.send(c.out)
	c.out = c.out[:0]
	if w.declared >= 0 && w.written < w.declared && !w.noBody {
		w.closeAfter = true // the client waits for bytes that never come
	}
}

// Hijack hands the connection to the handler (an upgrade), with what
// the client sent beyond the request head.
func (w *h1Response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	c.watch.stop()
	if w.committed {
		w.send(c.out)
		c.out = c.out[:0]
	}
	c.hijacked = true
	_ = c.nc.SetDeadline(time.Time{})
	nc := &helloConn{Conn: c.nc, hello: append([]byte(nil), c.buf[c.r:c.w]...)}
	c.consume(c.w - c.r)
	return nc, bufio.NewReadWriter(bufio.NewReader(nc), bufio.NewWriter(nc)), nil
}

func appendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if t := http.StatusText(code); t != "" {
		b = append(b, t...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, "\r\n"...)
}

// appendHeader writes the response's fields but the ones the server
// frames itself; a field name that is not a token is left out and line
// breaks in a value become spaces, as net/http does.
func appendHeader(b []byte, h http.Header) []byte {
	for k, vs := range h {
		if k == "Transfer-Encoding" || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		b = appendField(b, k, vs)
	}
	return b
}

func appendField(b []byte, k string, vs []string) []byte {
	if !httpguts.ValidHeaderFieldName(k) {
		return b
	}
	for _, v := range vs {
		b = append(b, k...)
		b = append(b, ": "...)
		if strings.ContainsAny(v, "\r\n") {
			v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
		}
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	return b
}

type dateEntry struct {
	sec  int64
	text []byte
}

var dateCache atomic.Pointer[dateEntry]

// appendDate appends the Date field's value, formatted once a second.
func appendDate(b []byte) []byte {
	now := time.Now()
	d := dateCache.Load()
	if d == nil || d.sec != now.Unix() {
		d = &dateEntry{sec: now.Unix(), text: now.UTC().AppendFormat(nil, http.TimeFormat)}
		dateCache.Store(d)
	}
	return append(b, d.text...)
}

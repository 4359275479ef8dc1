package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The downstream HTTP/1.1 server: one goroutine per connection reading
// requests into one reused buffer, answering each before reading the next
// (pipelined requests are answered in order). What net/http's server
// spends per keep-alive request — a background read goroutine started and
// aborted, read deadlines re-armed, a bufio reader and writer, header
// parsing by field — was a tenth of the gateway's CPU; here a request
// costs a head parse into one string and one map, and a small response
// goes out in one write with its head.
//
// HTTP/2 (h2c prior knowledge) is told apart by its preface and handed
// to net/http's HTTP/2 server.

const (
	// h1ReadBuffer is a connection's read buffer; it grows up to the
	// head limit for a large head and shrinks back once it is served.
	h1ReadBuffer = 4 << 10
	// h1BufferedBody is how much of a response body is held back to send
	// with its head, and to give a length to a response without one.
	h1BufferedBody = 8 << 10
	// h1DrainBody is how much of a request body the handler left unread
	// is read when the response head is written, to keep the connection
	// (net/http's figure).
	h1DrainBody = 256 << 10
	// h1DrainWait bounds that read in time: a client that stops sending
	// (waiting for the answer) gets it then, and the connection closes.
	h1DrainWait = 100 * time.Millisecond
	// h1WatchDelay is how long a request waits for its upstream before
	// the connection is watched for the client leaving (which cancels
	// the request, as Envoy resets the upstream stream): most requests
	// are answered sooner and never pay for the watch.
	h1WatchDelay = 50 * time.Millisecond
)

// errClientGone ends reads from a connection whose client left while the
// request was being served.
var errClientGone = errors.New("proxy: client closed the connection")

type downConnKey struct{}

// downConn is one downstream HTTP/1.x connection.
type downConn struct {
	e       *Engine
	port    uint32
	handler http.Handler
	nc      net.Conn
	tls     *tls.ConnectionState
	ctx     context.Context // values common to the connection's requests
	serve   context.Context // ends on shutdown
	remote  string

	buf     []byte // buf[r:w] is read and not yet consumed
	r, w    int
	scanned int   // how far headEnd looked in buf[r:w]
	rerr    error // the read error that ended the connection's input

	out []byte // the response head and buffered body, written at once
	rw  h1Response
	// wmu serialises writes to nc: 1xx answers and 100 Continue may come
	// from the goroutines of the upstream round trip.
	wmu sync.Mutex
	// wrearm: when the write deadline is next moved (under wmu).
	wrearm time.Time

	// idle is set while waiting for a request head, when shutdown may
	// close the connection.
	idle atomic.Bool
	// hijacked: the connection belongs to the handler (an upgrade).
	hijacked bool

	watch watcher
}

// ServeConn serves HTTP/1.x on c with h until the client closes it, the
// idle timeout, an error, or ctx's end (after the request in flight);
// the requests' contexts carry ctx's values. h2c, when not nil, is given
// a connection that starts with the HTTP/2 preface (the bytes read
// replayed); false from it closes the connection.
func (e *Engine) ServeConn(ctx context.Context, c net.Conn, h http.Handler, h2c func(net.Conn) bool) {
	e.serveH1(ctx, c, 0, h, nil, h2c)
}

// serveH1 is ServeConn for a listener port, with the TLS state of a
// terminated connection.
func (e *Engine) serveH1(ctx context.Context, nc net.Conn, port uint32, handler http.Handler, state *tls.ConnectionState, h2c func(net.Conn) bool) {
	c := &downConn{e: e, port: port, handler: handler, nc: nc, tls: state, serve: ctx, remote: nc.RemoteAddr().String(),
		buf: make([]byte, h1ReadBuffer)}
	c.ctx = context.WithValue(context.WithoutCancel(ctx), downConnKey{}, c)
	c.rw.c = c
	c.watch.c = c
	c.watch.cond.L = &c.watch.mu
	stop := context.AfterFunc(ctx, func() {
		// Shutdown: an idle connection is closed now, one serving a
		// request after its response.
		if c.idle.Load() {
			_ = nc.SetReadDeadline(aLongTimeAgo)
		}
	})
	defer stop()
	if h2c != nil && c.h2Preface() {
		// net/http's HTTP/2 server reads the preface again.
		_ = nc.SetReadDeadline(time.Time{})
		if !h2c(&helloConn{Conn: nc, hello: c.buf[c.r:c.w]}) {
			_ = nc.Close()
		}
		return
	}
	for {
		closing := c.serveOne(ctx)
		if c.hijacked {
			return
		}
		if closing || ctx.Err() != nil {
			c.close()
			return
		}
	}
}

// aLongTimeAgo interrupts a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// h2Preface reads until the connection's first bytes either are the
// HTTP/2 preface or cannot be.
func (c *downConn) h2Preface() bool {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	_ = c.nc.SetReadDeadline(time.Now().Add(c.e.cfg.ReadHeaderTimeout))
	c.idle.Store(true) // nothing received yet: shutdown closes it
	for c.w < len(preface) {
		if string(c.buf[:c.w]) != preface[:c.w] {
			return false
		}
		if c.fill() != nil {
			return false
		}
	}
	return string(c.buf[:len(preface)]) == preface
}

// fill reads more of the connection into the buffer, growing it up to
// the head limit when full.
func (c *downConn) fill() error {
	if c.rerr != nil {
		return c.rerr
	}
	if c.w == len(c.buf) {
		if c.r > 0 {
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		} else {
			nb := make([]byte, 2*len(c.buf))
			copy(nb, c.buf[:c.w])
			c.buf = nb
		}
	}
	n, err := c.nc.Read(c.buf[c.w:])
	c.w += n
	if err != nil && n == 0 {
		c.rerr = err
		return err
	}
	return nil
}

// consume marks n buffered bytes read; an emptied buffer starts over.
func (c *downConn) consume(n int) {
	c.r += n
	if c.r == c.w {
		c.r, c.w = 0, 0
		if len(c.buf) > h1ReadBuffer {
			c.buf = make([]byte, h1ReadBuffer)
		}
	}
	c.scanned = 0
}

// readHead waits for the next request head: idle until its first byte
// (the idle timeout), then the read header timeout for the rest. The read
// deadline is armed once per request, and not at all for a head already
// buffered (pipelining).
func (c *downConn) readHead(ctx context.Context) (head string, ok bool) {
	limit := c.e.cfg.MaxHeaderBytes
	armed := false
	for {
		if skip := skipEmptyLines(c.buf[c.r:c.w]); skip > 0 {
			c.consume(skip)
		}
		if c.r < c.w {
			if end := headEnd(c.buf[c.r:c.w], c.scanned); end >= 0 {
				if end > limit {
					c.refuse(&h1Refusal{status: http.StatusRequestHeaderFieldsTooLarge, msg: "request head larger than " + strconv.Itoa(limit) + " bytes"})
					return "", false
				}
				head = string(c.buf[c.r : c.r+end])
				c.consume(end)
				c.idle.Store(false)
				return head, true
			}
			c.scanned = max(c.w-c.r-3, 0)
			if c.w-c.r > limit {
				c.refuse(&h1Refusal{status: http.StatusRequestHeaderFieldsTooLarge, msg: "request head larger than " + strconv.Itoa(limit) + " bytes"})
				return "", false
			}
			if !armed || c.idle.Load() {
				c.idle.Store(false)
				armed = true
				_ = c.nc.SetReadDeadline(time.Now().Add(c.e.cfg.ReadHeaderTimeout))
			}
		} else if !c.idle.Load() {
			_ = c.nc.SetReadDeadline(time.Now().Add(c.e.cfg.IdleTimeout))
			c.idle.Store(true)
			if ctx.Err() != nil {
				return "", false // shutting down
			}
		}
		if err := c.fill(); err != nil {
			partial := c.w - c.r
			if partial > 0 && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
				c.e.log.Info("proxy: request head not received within the read header timeout; connection closed",
					"port", c.port, "client", c.remote, "head_bytes", partial, "read_header_timeout", c.e.cfg.ReadHeaderTimeout)
				downstreamRejected.WithLabelValues("header_timeout").Inc()
			}
			return "", false
		}
	}
}

// serveOne reads and serves one request; true when the connection must
// close after it.
func (c *downConn) serveOne(ctx context.Context) (closing bool) {
	raw, ok := c.readHead(ctx)
	if !ok {
		return true
	}
	h, refusal := parseHead(raw)
	if refusal != nil {
		c.refuse(refusal)
		return true
	}
	rctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	req := (&http.Request{
		Method:     h.method,
		URL:        &h.url,
		Proto:      h.proto,
		ProtoMajor: 1,
		ProtoMinor: h.minor,
		Header:     h.header,
		Body:       http.NoBody,
		Host:       h.host,
		Close:      h.close,
		RemoteAddr: c.remote,
		RequestURI: h.target,
		TLS:        c.tls,
		Trailer:    h.trailer,
	}).WithContext(rctx)
	req.ContentLength = h.contentLength
	var body *downBody
	if h.chunked || h.contentLength > 0 {
		// The head's deadline (or the idle one) is still armed: a body
		// has no time limit, as with net/http's server.
		_ = c.nc.SetReadDeadline(time.Time{})
		body = &downBody{c: c, remaining: h.contentLength, chunked: h.chunked, req: req, expectContinue: h.expectContinue}
		req.Body = body
		if h.chunked {
			req.TransferEncoding = chunkedTE
		}
	}
	rw := &c.rw
	rw.reset(req, h, body)
	// While a body arrives, its reads see a client leaving; then only a
	// read of the connection does. An upgrade hands the connection over.
	if c.r == c.w && !isUpgrade(req) {
		c.watch.start(cancel, body == nil)
	}
	panicked := c.callHandler(rw, req)
	if body != nil {
		body.handlerDone()
	}
	c.watch.stop()
	if c.hijacked {
		return true
	}
	if panicked || c.watch.gone {
		return true
	}
	rw.finish()
	if body != nil {
		body.close()
	}
	return rw.closeAfter
}

// callHandler runs the handler; true when it panicked (ReverseProxy
// aborts a response that cannot be completed with http.ErrAbortHandler).
func (c *downConn) callHandler(rw *h1Response, req *http.Request) (panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			panicked = true
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.e.log.Error("proxy: panic serving a request", "client", c.remote, "panic", fmt.Sprint(p), "stack", string(buf))
			}
		}
	}()
	c.handler.ServeHTTP(rw, req)
	return false
}

// close ends the connection, after a half close and up to half a second
// of reading what the client still sends (net/http's wait): closing a
// socket with unread input resets it, and the client could lose the
// response.
func (c *downConn) close() {
	if c.rerr == nil {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
			_ = c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			_, _ = io.Copy(io.Discard, c.nc)
		}
	}
	_ = c.nc.Close()
}

// refuse answers a request the server does not serve, with Envoy's
// status and its DPE flag in the access log and metrics (recorded first:
// whoever reads the answer may look for them).
func (c *downConn) refuse(r *h1Refusal) {
	status := strconv.Itoa(r.status) + " " + http.StatusText(r.status)
	body := status + ": " + r.msg
	resp := "HTTP/1.1 " + status +
		"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nConnection: close\r\n\r\n" + body
	c.e.refused(c.nc, r.status, body, len(resp))
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.e.cfg.ReadHeaderTimeout))
	_, _ = io.WriteString(c.nc, resp)
}

// writeRaw writes b to the connection under the write lock.
func (c *downConn) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b)
}

// writeLocked writes b, the write lock held. A client that takes none of
// it for the idle timeout is gone (Envoy's stream idle timeout): else it
// would hold the request and its upstream connection forever.
// The deadline is moved at most every eighth of the timeout (keep-alive
// responses come faster), so a client gets 7/8 of it at least.
func (c *downConn) writeLocked(b []byte) error {
	if now := time.Now(); now.After(c.wrearm) {
		_ = c.nc.SetWriteDeadline(now.Add(c.e.cfg.IdleTimeout))
		c.wrearm = now.Add(c.e.cfg.IdleTimeout / 8)
	}
	_, err := c.nc.Write(b)
	return err
}

// downBody is a request body read from the connection: Content-Length
// bytes, or chunks. Reads are locked: the upstream round trip reads it on
// its own goroutine, which may outlive the handler.
type downBody struct {
	c              *downConn
	req            *http.Request
	mu             sync.Mutex
	remaining      int64 // of the body, or of the current chunk
	chunked        bool
	chunkState     int // 0: expecting a size line, 1: in data, 2: after data (CRLF), 3: done
	expectContinue bool
	eof, closed    bool
	// afterHandler: reads are the server's draining, not the request's.
	afterHandler bool
	err          error
}

var errMalformedChunked = errors.New("proxy: malformed chunked request body")

func (b *downBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.expectContinue {
		b.expectContinue = false
		if !b.c.rw.sentContinue() {
			b.err = errClientGone
			return 0, b.err
		}
	}
	n, err := b.read(p)
	if err == io.EOF {
		b.eof = true
		// The request is complete: from now on, the end of the input is
		// the client leaving.
		if b.c.r == b.c.w && !b.afterHandler {
			b.c.watch.bodyDone()
		}
	} else if err != nil {
		b.err = err
	}
	return n, err
}

func (b *downBody) read(p []byte) (int, error) {
	c := b.c
	if !b.chunked {
		if b.remaining == 0 {
			return 0, io.EOF
		}
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		var n int
		if c.r < c.w {
			n = copy(p, c.buf[c.r:c.w])
			c.consume(n)
		} else {
			var err error
			n, err = c.nc.Read(p)
			if n == 0 && err != nil {
				c.rerr = err
				return 0, unexpectedEOF(err)
			}
		}
		b.remaining -= int64(n)
		return n, nil
	}
	for {
		switch b.chunkState {
		case 0, 2:
			line, err := b.line()
			if err != nil {
				return 0, err
			}
			if b.chunkState == 2 {
				if line != "" {
					return 0, errMalformedChunked
				}
				b.chunkState = 0
				continue
			}
			size, ok := parseChunkSize(line)
			if !ok {
				return 0, errMalformedChunked
			}
			if size == 0 {
				if err := b.readTrailer(); err != nil {
					return 0, err
				}
				b.chunkState = 3
				return 0, io.EOF
			}
			b.remaining, b.chunkState = size, 1
		case 1:
			if c.r == c.w {
				if err := c.fill(); err != nil {
					return 0, unexpectedEOF(err)
				}
			}
			n := copy(p[:min(int64(len(p)), b.remaining)], c.buf[c.r:c.w])
			c.consume(n)
			b.remaining -= int64(n)
			if b.remaining == 0 {
				b.chunkState = 2
			}
			return n, nil
		default:
			return 0, io.EOF
		}
	}
}

// line reads one CRLF-terminated line of the chunked framing (at most
// 4 KiB: a chunk extension is no reason to buffer more).
func (b *downBody) line() (string, error) {
	c := b.c
	for {
		for i := c.r; i < c.w; i++ {
			if c.buf[i] == '\n' {
				l := c.buf[c.r:i]
				c.consume(i + 1 - c.r)
				if len(l) == 0 || l[len(l)-1] != '\r' {
					return "", errMalformedChunked
				}
				return string(l[:len(l)-1]), nil
			}
		}
		if c.w-c.r > 4<<10 {
			return "", errMalformedChunked
		}
		if err := c.fill(); err != nil {
			return "", unexpectedEOF(err)
		}
	}
}

// readTrailer reads the trailer section into the request's Trailer.
func (b *downBody) readTrailer() error {
	total := 0
	for {
		line, err := b.line()
		if err != nil {
			return err
		}
		if line == "" {
			return nil
		}
		if total += len(line); total > b.c.e.cfg.MaxHeaderBytes {
			return errMalformedChunked
		}
		name, value, refusal := splitField(line)
		if refusal != nil {
			return fmt.Errorf("%w: %s", errMalformedChunked, refusal.msg)
		}
		if b.req.Trailer == nil {
			b.req.Trailer = http.Header{}
		}
		b.req.Trailer.Add(name, value)
	}
}

// parseChunkSize parses a chunk size line: hex digits only (no sign or
// prefix, which another parser may read differently), then optional
// whitespace and extensions, ignored (RFC 9112 §7.1).
func parseChunkSize(line string) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		n = n<<4 | int64(d)
	}
	if i == 0 || i > 15 {
		return 0, false
	}
	rest := strings.TrimLeft(line[i:], " \t")
	return n, rest == "" || rest[0] == ';'
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// drain reads what the handler left of the body when the response head
// is written (as net/http does: a client may send its whole request
// before reading the answer), so the connection can serve the next
// request; false when it cannot be reused.
func (b *downBody) drain() bool {
	b.mu.Lock()
	done, failed, waiting := b.eof, b.err != nil, b.expectContinue
	b.mu.Unlock()
	if done {
		return true
	}
	if failed || waiting {
		// A client waiting for 100 Continue sends no body.
		return false
	}
	c := b.c
	_ = c.nc.SetReadDeadline(time.Now().Add(h1DrainWait))
	_, err := io.CopyN(io.Discard, b, h1DrainBody)
	_ = c.nc.SetReadDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Not the client's end: close lingers for what it still sends,
		// so the answer is not lost to a reset.
		c.rerr = nil
	}
	return err == io.EOF
}

func (b *downBody) handlerDone() {
	b.mu.Lock()
	b.afterHandler = true
	b.mu.Unlock()
}

func (b *downBody) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// Close is the handler's: net/http's server closes the body itself.
func (b *downBody) Close() error { return nil }

// watcher notices a client leaving while its request waits for the
// upstream, and cancels the request. Reading the connection is the only
// way to know, so a request with no body left to read arms a timer; if
// the response is not done when it fires, a read of the connection on the
// timer's goroutine waits for the client. Requests answered sooner (most)
// never start that read, where net/http's server starts one per request.
type watcher struct {
	c      *downConn
	mu     sync.Mutex
	cond   sync.Cond
	timer  *time.Timer
	state  int
	cancel context.CancelFunc
	// gone: the watch read saw the client leave.
	gone bool
	b    [1]byte
}

const (
	watchOff = iota
	// watchBody: armed when the request body has been read to its end.
	watchBody
	watchArmed
	watchReading
	// watchInterrupted: stop interrupted the read; its error is not the
	// client's.
	watchInterrupted
)

// start watches the current request: now when it has no body left to
// read, else once its body is read (bodyDone).
func (w *watcher) start(cancel context.CancelFunc, now bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cancel, w.gone, w.state = cancel, false, watchBody
	if now {
		w.armLocked()
	}
}

func (w *watcher) armLocked() {
	w.state = watchArmed
	if w.timer == nil {
		w.timer = time.AfterFunc(h1WatchDelay, w.read)
	} else {
		w.timer.Reset(h1WatchDelay)
	}
}

// bodyDone arms the watch when the request body has been read to its end
// with nothing of the next request buffered (from the reading goroutine,
// with the body's lock held).
func (w *watcher) bodyDone() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == watchBody {
		w.armLocked()
	}
}

func (w *watcher) read() {
	w.mu.Lock()
	if w.state != watchArmed {
		w.mu.Unlock()
		return
	}
	w.state = watchReading
	c := w.c
	_ = c.nc.SetReadDeadline(time.Time{})
	w.mu.Unlock()
	n, err := c.nc.Read(w.b[:])
	w.mu.Lock()
	defer w.mu.Unlock()
	if n == 1 {
		// The next pipelined request: the client is still there.
		c.buf[c.w] = w.b[0]
		c.w++
	} else if err != nil && w.state == watchReading {
		// The client left (EOF or a reset).
		w.gone = true
		c.rerr = err
		w.cancel()
	}
	w.state = watchOff
	w.cond.Broadcast()
}

// stop ends the watch when the response is done, waiting for a watch
// read in progress to end (interrupted by a deadline in the past).
func (w *watcher) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.state {
	case watchArmed:
		w.timer.Stop()
	case watchReading:
		w.state = watchInterrupted
		_ = w.c.nc.SetReadDeadline(aLongTimeAgo)
		for w.state != watchOff {
			w.cond.Wait()
		}
		// The deadline is in the past: the next head read must arm one.
		w.c.idle.Store(false)
	}
	w.state, w.cancel = watchOff, nil
}

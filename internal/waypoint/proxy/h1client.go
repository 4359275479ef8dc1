package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1Client is the engine's HTTP/1.1 upstream client for requests that do
// not ask for a protocol upgrade. Unlike http.Transport, whose every round
// trip hands the request to a connection's write goroutine and the
// response back from its read goroutine, it writes the request and reads
// the response head on the calling goroutine, and the response body
// straight from the connection: a plain keep-alive request costs no
// goroutine switch and fewer allocations. Only a request body is written
// from a goroutine of its own, so that a server answering before it has
// read the whole body is heard (the upload then stops, see h1Body).
//
// Connections are pooled per endpoint address (the request URL's host),
// most recently used first, and dialled with dial: plain TCP, HBONE
// tunnels or TLS (BackendTLSPolicy), whatever it returns.
type h1Client struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu     sync.Mutex
	idle   map[string][]*h1Conn // oldest first
	closed bool
	sweep  *time.Timer // closes connections idle too long; nil when none are
}

const (
	// h1MaxIdlePerHost and h1IdleTimeout are the pool limits, as the
	// http.Transport the client replaces had them.
	h1MaxIdlePerHost = 256
	h1IdleTimeout    = 90 * time.Second
	// h1ProbeAfter: a connection idle longer than this is checked for a
	// close by the server before it is used (one non-blocking peek); one
	// used within it is not, a GET that meets a closed one is retried.
	h1ProbeAfter = time.Second
	// h1MaxResponseHead bounds a response head (1xx heads included).
	h1MaxResponseHead = 1 << 20
	// h1Max1xx bounds the informational responses before the final one.
	h1Max1xx = 5
	// h1WriteGrace is how long a finished response waits for its
	// request's body write to end before the connection is given up
	// (http.Transport's 50 ms).
	h1WriteGrace = 50 * time.Millisecond
)

var (
	errH1HeadTooLarge = fmt.Errorf("proxy: upstream response head larger than %d bytes", h1MaxResponseHead)
	errH1Too1xx       = fmt.Errorf("proxy: upstream sent more than %d informational responses", h1Max1xx)
	errH1Switch       = errors.New("proxy: upstream switched protocols on a request that asked for no upgrade")
	// errH1BadHead: the request's own head cannot be sent (a filter set
	// a field HTTP/1.1 does not allow); no connection is at fault.
	errH1BadHead = errors.New("proxy: request head not valid HTTP/1.1")
	// h1Past is a deadline in the past: setting it aborts blocked I/O.
	h1Past = time.Unix(1, 0)
)

func newH1Client(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *h1Client {
	return &h1Client{dial: dial, idle: map[string][]*h1Conn{}}
}

// h1Conn is one upstream connection; it is the reader and writer of its
// own buffers, to bound response heads and count bytes.
type h1Conn struct {
	client *h1Client
	key    string
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	reused bool
	// abort cuts the connection's I/O short (a request's context ended).
	abort func()
	// headLeft bounds the bytes read while a response head is read (-1:
	// no bound); nread and nwritten count one round trip's bytes.
	headLeft        int64
	nread, nwritten int64
}

type h1Reader h1Conn

func (r *h1Reader) Read(p []byte) (int, error) {
	if r.headLeft == 0 {
		return 0, errH1HeadTooLarge
	}
	if r.headLeft > 0 && int64(len(p)) > r.headLeft {
		p = p[:r.headLeft]
	}
	n, err := r.conn.Read(p)
	r.nread += int64(n)
	if r.headLeft > 0 {
		r.headLeft -= int64(n)
	}
	return n, err
}

type h1Writer h1Conn

func (w *h1Writer) Write(p []byte) (int, error) {
	n, err := w.conn.Write(p)
	w.nwritten += int64(n)
	return n, err
}

// RoundTrip sends req on a pooled or new connection to req.URL.Host. A
// request that met a pooled connection the server had closed is sent
// again, once, on another when that is safe: it has no body and is
// idempotent, or nothing of it was written. A request whose head is not
// valid HTTP/1.1 takes no connection at all.
func (c *h1Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkHead(req); err != nil {
		return nil, fmt.Errorf("proxy: upstream %s: %w", req.URL.Host, err)
	}
	ctx := req.Context()
	noBody := req.Body == nil || req.Body == http.NoBody
	retriable := noBody && idempotent(req)
	for retried := false; ; retried = true {
		pc, err := c.get(ctx, req.URL.Host, retriable)
		if err != nil {
			return nil, err
		}
		resp, err := pc.roundTrip(req, noBody)
		if err == nil {
			return resp, nil
		}
		// Stale: the server closed the pooled connection before it saw
		// the request (nothing came back at all).
		stale := pc.reused && pc.nread == 0 && ctx.Err() == nil && noBody && (retriable || pc.nwritten == 0)
		if retried || !stale {
			return nil, err
		}
	}
}

func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != ""
}

// get takes the most recently used idle connection to key, or dials one.
func (c *h1Client) get(ctx context.Context, key string, retriable bool) (*h1Conn, error) {
	now := time.Now()
	for {
		c.mu.Lock()
		l := c.idle[key]
		if len(l) == 0 {
			c.mu.Unlock()
			break
		}
		pc := l[len(l)-1]
		l[len(l)-1] = nil
		c.idle[key] = l[:len(l)-1]
		c.mu.Unlock()
		idle := now.Sub(pc.idleAt)
		// A request that cannot be sent again is worth a check even on a
		// connection used a moment ago.
		if idle < h1IdleTimeout && (idle < h1ProbeAfter && retriable || connAlive(pc.conn)) {
			pc.reused = true
			return pc, nil
		}
		_ = pc.conn.Close()
	}
	conn, err := c.dial(ctx, "tcp", key)
	if err != nil {
		return nil, err
	}
	pc := &h1Conn{client: c, key: key, conn: conn, headLeft: -1}
	pc.abort = func() {
		// Streams without deadlines (HBONE) are closed instead: the
		// connection is not reused after an abort anyway.
		if conn.SetDeadline(h1Past) != nil {
			_ = conn.Close()
		}
	}
	pc.br = bufio.NewReader((*h1Reader)(pc))
	pc.bw = bufio.NewWriter((*h1Writer)(pc))
	return pc, nil
}

// put returns a connection whose last response was read to its end.
func (c *h1Client) put(pc *h1Conn) {
	if pc.br.Buffered() > 0 {
		_ = pc.conn.Close() // bytes no request asked for
		return
	}
	pc.idleAt = time.Now()
	c.mu.Lock()
	l := c.idle[pc.key]
	if c.closed || len(l) >= h1MaxIdlePerHost {
		c.mu.Unlock()
		_ = pc.conn.Close()
		return
	}
	c.idle[pc.key] = append(l, pc)
	if c.sweep == nil {
		c.sweep = time.AfterFunc(h1IdleTimeout, c.sweepIdle)
	}
	c.mu.Unlock()
}

// sweepIdle closes the connections idle longer than h1IdleTimeout, and
// runs again while some are left.
func (c *h1Client) sweepIdle() {
	cutoff := time.Now().Add(-h1IdleTimeout)
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, l := range c.idle {
		n := 0
		for n < len(l) && !l[n].idleAt.After(cutoff) {
			_ = l[n].conn.Close()
			n++
		}
		if n == len(l) {
			delete(c.idle, key)
		} else {
			c.idle[key] = append(l[:0:0], l[n:]...)
		}
	}
	if len(c.idle) > 0 && !c.closed {
		c.sweep.Reset(h1IdleTimeout)
	} else {
		c.sweep = nil
	}
}

// Close closes the idle connections; the ones in use are closed when
// their response ends.
func (c *h1Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, l := range c.idle {
		for _, pc := range l {
			_ = pc.conn.Close()
		}
	}
	clear(c.idle)
	if c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
	}
}

// roundTrip writes req and reads the response head. The context's end
// (the route's timeouts, the client gone) aborts the connection's I/O
// through its deadline, until the response body ends.
func (pc *h1Conn) roundTrip(req *http.Request, noBody bool) (*http.Response, error) {
	ctx := req.Context()
	pc.nread, pc.nwritten = 0, 0
	stop := context.AfterFunc(ctx, pc.abort)
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = pc.conn.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("proxy: upstream %s: %w", pc.key, cerr)
		}
		return nil, fmt.Errorf("proxy: upstream %s: %w", pc.key, err)
	}
	var wrote chan error
	if noBody {
		writeHead(pc.bw, req)
		if err := pc.bw.Flush(); err != nil {
			return fail(err)
		}
	} else {
		// The body streams from its own goroutine while the response is
		// awaited: the server may answer before reading it all.
		wrote = make(chan error, 1)
		go func() {
			err := req.Write(pc.bw)
			if err == nil {
				err = pc.bw.Flush()
			}
			if err != nil {
				_ = pc.conn.Close() // the response cannot be trusted
			}
			wrote <- err
		}()
	}
	trace := httptrace.ContextClientTrace(ctx)
	for n1xx := 0; ; n1xx++ {
		pc.headLeft = h1MaxResponseHead
		head, err := readResponseHead(pc.br)
		pc.headLeft = -1
		// The response and its body in one allocation.
		rb := &struct {
			resp http.Response
			body h1Body
		}{}
		resp := &rb.resp
		if err == nil {
			err = parseResponseHead(resp, head, req.Method)
		}
		if err != nil {
			// A failed body write explains a failed read best.
			if wrote != nil {
				select {
				case werr := <-wrote:
					if werr != nil {
						err = werr
					}
				case <-time.After(h1WriteGrace):
				}
			}
			return fail(err)
		}
		code := resp.StatusCode
		if code == http.StatusSwitchingProtocols {
			return fail(errH1Switch)
		}
		if code < 100 || code >= 200 {
			resp.Request = req
			b := &rb.body
			*b = h1Body{ctx: ctx, pc: pc, stop: stop, wrote: wrote, reuse: !resp.Close && !req.Close}
			if b.framed(resp, req.Method) {
				resp.Body = b
			} else {
				resp.Body = http.NoBody
				b.finish(true)
			}
			return resp, nil
		}
		if n1xx >= h1Max1xx {
			return fail(errH1Too1xx)
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
}

// h1Body is a response body read straight from its connection. At its end
// the connection goes back to the pool when it can carry another request:
// the response did not ask to close, the request was written whole, and
// the context did not end. A body closed before its end, or whose request
// is still uploading when it ends (the server answered early), closes the
// connection, which stops the upload (after h1WriteGrace at the end of
// the body: a server may answer before it reads the last bytes).
type h1Body struct {
	ctx   context.Context
	pc    *h1Conn
	stop  func() bool
	wrote chan error
	reuse bool
	done  bool
	// The framing (see framed): chunks or, when nil, left bytes (-1: to
	// the connection's end); resp receives the trailers.
	chunks io.Reader
	left   int64
	resp   *http.Response
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.readFrame(p)
	switch {
	case err == io.EOF:
		b.finish(true)
	case err != nil:
		b.finish(false)
		if cerr := b.ctx.Err(); cerr != nil {
			err = cerr // the deadline that cut the body, not its symptom
		}
		err = fmt.Errorf("proxy: upstream %s: response body: %w", b.pc.key, err)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

// finish ends the round trip; complete says the body was read to its end.
func (b *h1Body) finish(complete bool) {
	b.done = true
	pc := b.pc
	if !b.stop() || !complete || !b.reuse {
		_ = pc.conn.Close()
		return
	}
	if b.wrote == nil {
		pc.client.put(pc)
		return
	}
	var err error
	select {
	case err = <-b.wrote:
	default:
		// The upload is still going (the server answered early), or its
		// goroutine has not reported yet: wait a little for it, as
		// http.Transport does before it reuses a connection.
		t := time.NewTimer(h1WriteGrace)
		select {
		case err = <-b.wrote:
		case <-t.C:
			err = errors.New("upload unfinished")
		}
		t.Stop()
	}
	if err != nil {
		_ = pc.conn.Close()
		return
	}
	pc.client.put(pc)
}

// h1Unsent are the header fields neither writeHead nor
// http.Request.Write copies from req.Header: framing is the client's, Host
// is req.Host.
func h1Unsent(name string) bool {
	switch name {
	case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// headHost is the Host a request is sent with.
func headHost(req *http.Request) string {
	if req.Host != "" {
		return req.Host
	}
	return req.URL.Host
}

// checkHead refuses a request head that is not valid HTTP/1.1, for the
// requests writeHead writes and for those http.Request.Write does (which
// would send a bad name and only blank a line break in a value), as
// http.Transport does: a filter must not smuggle a field upstream.
func checkHead(req *http.Request) error {
	if host := headHost(req); !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("%w: invalid Host %q", errH1BadHead, host)
	}
	for k, vs := range req.Header {
		if h1Unsent(k) {
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("%w: invalid header field name %q", errH1BadHead, k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("%w: invalid value for header field %q", errH1BadHead, k)
			}
		}
	}
	return nil
}

// writeHead writes the head of a request without a body, which checkHead
// passed, as http.Request.Write would (Host from req.Host,
// "Content-Length: 0" for methods other than GET and HEAD, User-Agent only
// when not empty), but without its allocations and header sorting. Header
// fields go in map order: the order of fields with different names
// carries no meaning (RFC 9110 §5.3). Write errors surface at Flush.
func writeHead(w *bufio.Writer, req *http.Request) {
	host := headHost(req)
	w.WriteString(req.Method)
	w.WriteByte(' ')
	if u := req.URL; u.Opaque != "" {
		w.WriteString(u.RequestURI())
	} else {
		p := u.EscapedPath()
		if p == "" {
			p = "/"
		}
		w.WriteString(p)
		if u.ForceQuery || u.RawQuery != "" {
			w.WriteByte('?')
			w.WriteString(u.RawQuery)
		}
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	for k, vs := range req.Header {
		if h1Unsent(k) || k == "User-Agent" && (len(vs) == 0 || vs[0] == "") {
			continue
		}
		for _, v := range vs {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(strings.TrimSpace(v))
			w.WriteString("\r\n")
		}
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.WriteString("Content-Length: 0\r\n")
	}
	if req.Close {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
}

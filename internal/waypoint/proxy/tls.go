package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ambitmesh/ambit/internal/connset"
	"github.com/ambitmesh/ambit/internal/waypoint/route"
)

// ServeListener serves ln, the port of one listener family (see Family),
// until ctx is cancelled; connections in flight then get shutdownGrace to
// finish. The port's listeners are read from the current configuration
// for every connection, so listeners, routes and certificates change
// without the port closing or an established connection dropping.
func (e *Engine) ServeListener(ctx context.Context, ln net.Listener, port uint32, family string, shutdownGrace time.Duration) error {
	switch family {
	case FamilyHTTP, FamilyTLS, FamilyTCP:
		return e.serveConns(ctx, ln, port, family, shutdownGrace)
	}
	_ = ln.Close()
	return errors.New("proxy: listener family " + family + " is not served; use http, tls or tcp")
}

// serveConns accepts the connections of a port. HTTP/1.x, plain or
// terminated HTTPS, is served by serveH1; h2c and HTTP/2 chosen by ALPN
// by an http.Server per port; TLS and TCP listeners' connections are
// forwarded as bytes.
func (e *Engine) serveConns(ctx context.Context, ln net.Listener, port uint32, family string, grace time.Duration) error {
	var conns connset.Set
	var srv *http.Server
	var https *connQueue
	var h1 http.Handler
	srvDone := make(chan struct{})
	switch family {
	case FamilyTLS:
		https = newConnQueue(ln.Addr())
		srv = e.httpsServer(port)
		h1 = srv.Handler
	case FamilyHTTP:
		https = newConnQueue(ln.Addr())
		srv = e.h2cServer(port)
		h1 = srv.Handler
	}
	if srv != nil {
		go func() {
			defer close(srvDone)
			_ = srv.Serve(https)
		}()
	} else {
		close(srvDone)
	}
	acceptDone := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-acceptDone:
		}
		_ = ln.Close()
	}()
	var err error
	var delay time.Duration
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				break
			}
			// Out of file descriptors, say: the port must outlive it, as
			// net/http's do, for the gateway never reopens a port it
			// holds.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			e.log.Warn("proxy: accept failed; retrying", "port", port, "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		delay = 0
		done, ok := conns.Start(c)
		if !ok {
			_ = c.Close()
			continue
		}
		go func() {
			defer done()
			if family == FamilyHTTP {
				e.serveH1(ctx, c, port, h1, nil, https.put)
				return
			}
			if family == FamilyTCP {
				e.serveTCP(ctx, c, port, &conns)
				return
			}
			e.serveTLSConn(ctx, c, port, https, h1, &conns)
		}()
	}
	close(acceptDone)
	// No new connection from here: give those in flight the grace period.
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if srv != nil && srv.Shutdown(sctx) != nil {
		_ = srv.Close()
	}
	<-srvDone
	conns.Drain(sctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// h2cServer serves the h2c (prior knowledge) connections of a plain HTTP
// port, which serveH1 recognises by their preface.
func (e *Engine) h2cServer(port uint32) *http.Server {
	srv := e.Server(port)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	return srv
}

// httpsServer serves the terminated HTTPS connections of a port, with the
// limits and timeouts of Server: the listener each connection was
// accepted for (by SNI) travels in the connection's context, and its
// routes are looked up per request in the current configuration.
func (e *Engine) httpsServer(port uint32) *http.Server {
	srv := e.Server(port)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true) // chosen by ALPN
	srv.Protocols = &p
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, _ := r.Context().Value(listenerKey{}).(string)
		e.serve(w, r, port, "", func(c *config) *route.Table {
			tl, p := c.tlsListeners[name], c.tlsPorts[port]
			if tl == nil || !tl.https || p == nil {
				return nil
			}
			// A client may reuse a connection for another name its
			// certificate covers (HTTP/2 coalescing, or a Host unlike its
			// SNI): when a new connection with that name would land on
			// another listener of the port, this one must not answer
			// (421 tells the client to open one). A Host no listener
			// serves is this listener's to 404.
			if other, ok := p.byName.Lookup(r.Host); ok && other != tl {
				return misdirected
			}
			return tl.table
		})
	})
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if tc, ok := c.(*tls.Conn); ok {
			if hc, ok := tc.NetConn().(*helloConn); ok {
				ctx = context.WithValue(ctx, listenerKey{}, hc.listener)
			}
		}
		return ctx
	}
	return srv
}

type listenerKey struct{}

// serveTLSConn reads the ClientHello, picks the listener of the port
// whose hostname best matches the server name (exact, then the longest
// wildcard, then the listener without hostname), and terminates or passes
// the connection through.
func (e *Engine) serveTLSConn(ctx context.Context, c net.Conn, port uint32, https *connQueue, h1 http.Handler, conns *connset.Set) {
	_ = c.SetDeadline(time.Now().Add(e.cfg.ReadHeaderTimeout))
	sni, hello, err := peekClientHello(c)
	if err != nil {
		e.log.Info("proxy: connection refused: no TLS ClientHello", "port", port, "client", c.RemoteAddr().String(), "error", err)
		_ = c.Close()
		return
	}
	cfg := e.cur.Load()
	var tl *tlsListener
	if p := cfg.tlsPorts[port]; p != nil {
		tl, _ = p.byName.Lookup(sni)
	}
	if tl == nil {
		e.log.Info("proxy: TLS connection refused: no listener for its server name", "port", port, "sni", sni, "client", c.RemoteAddr().String())
		_ = c.Close()
		return
	}
	hc := &helloConn{Conn: c, hello: hello, listener: tl.name}
	if tl.passthrough {
		_ = c.SetDeadline(time.Time{})
		e.forward(ctx, hc, port, tl.name, tl.table, sni, conns)
		return
	}
	// The handshake runs under the ClientHello's deadline too, so a client
	// stalling it cannot hold the connection; its failure (no usable
	// certificate, no common version or cipher) is one log line.
	tc := tls.Server(hc, tl.conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		e.log.Info("proxy: TLS handshake failed", "listener", tl.name, "sni", sni, "client", c.RemoteAddr().String(), "error", err)
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	if tl.https {
		// HTTP/2 (by ALPN) goes to net/http's server, HTTP/1.x to the
		// engine's; the listener travels in the context either way.
		if state := tc.ConnectionState(); state.NegotiatedProtocol != "h2" {
			e.serveH1(context.WithValue(ctx, listenerKey{}, tl.name), tc, port, h1, &state, nil)
			return
		}
		if !https.put(tc) {
			_ = tc.Close()
		}
		return
	}
	e.forward(ctx, tc, port, tl.name, tl.table, sni, conns)
}

// errHelloRead stops the handshake peekClientHello runs once it has the
// ClientHello.
var errHelloRead = errors.New("client hello read")

// peekClientHello reads the ClientHello from c with crypto/tls's own
// parser and returns its server name (lowercase, "" when the client sent
// none) and the bytes read, which the caller must replay.
func peekClientHello(c net.Conn) (sni string, hello []byte, err error) {
	var buf bytes.Buffer
	got := false
	err = tls.Server(readOnlyConn{r: io.TeeReader(c, &buf)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni, got = strings.ToLower(h.ServerName), true
			return nil, errHelloRead
		},
	}).Handshake()
	if got {
		return sni, buf.Bytes(), nil
	}
	return "", nil, err
}

// readOnlyConn feeds the ClientHello to the peeking handshake; what that
// handshake would send (an alert) goes nowhere.
type readOnlyConn struct {
	net.Conn
	r io.Reader
}

func (c readOnlyConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c readOnlyConn) Write(p []byte) (int, error) { return len(p), nil }
func (readOnlyConn) Close() error                  { return nil }
func (readOnlyConn) SetDeadline(time.Time) error   { return nil }
func (readOnlyConn) SetReadDeadline(time.Time) error {
	return nil
}
func (readOnlyConn) SetWriteDeadline(time.Time) error { return nil }

// helloConn is a client connection whose ClientHello was already read:
// reads replay it first. It remembers the listener it was accepted for.
type helloConn struct {
	net.Conn
	hello    []byte
	listener string
}

func (c *helloConn) Read(p []byte) (int, error) {
	if len(c.hello) > 0 {
		n := copy(p, c.hello)
		c.hello = c.hello[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// WriteTo lets io.Copy from the client splice once the replay is done.
func (c *helloConn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(c.hello) > 0 {
		m, err := w.Write(c.hello)
		n += int64(m)
		c.hello = c.hello[m:]
		if err != nil {
			return n, err
		}
	}
	m, err := io.Copy(w, c.Conn)
	return n + m, err
}

// CloseWrite half-closes the client connection.
func (c *helloConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// connQueue is a net.Listener fed by serveTLSConn with the connections
// it terminated for HTTPS listeners.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) put(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

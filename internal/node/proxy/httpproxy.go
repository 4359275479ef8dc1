package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ambitmesh/ambit/internal/hbone"
)

// HTTPProxy is an explicit-mode HTTP CONNECT proxy listener.
type HTTPProxy struct {
	Listen netip.AddrPort
	// Source: see Explicit.Source.
	Source string
}

// ParseHTTPProxy parses "listen[@namespace/name]", e.g. "127.0.0.1:15080".
func ParseHTTPProxy(s string) (HTTPProxy, error) {
	var h HTTPProxy
	l, src, hasSrc := cutLast(s, "@")
	var err error
	if h.Listen, err = netip.ParseAddrPort(l); err != nil {
		return h, fmt.Errorf("node proxy: HTTP proxy %q: want listen ip:port[@namespace/name]: %w", s, err)
	}
	if hasSrc {
		if err := CheckWorkloadKey(src); err != nil {
			return h, fmt.Errorf("node proxy: HTTP proxy %q: source %w", s, err)
		}
		h.Source = src
	}
	return h, nil
}

// requestHeaderTimeout bounds how long a client may take to send its CONNECT.
const requestHeaderTimeout = 10 * time.Second

func (p *Proxy) serveHTTPProxy(ctx context.Context, lis net.Listener, h HTTPProxy) {
	if err := acceptLoop(ctx, lis, func(c net.Conn) { p.serveConnect(ctx, c, h.Source) }); err != nil {
		p.log.Warn("HTTP proxy listener stopped", "addr", h.Listen, "err", err)
	}
}

// serveConnect reads one CONNECT request and forwards the connection to its
// authority, answering 200 only once the upstream is connected (502 if not).
func (p *Proxy) serveConnect(ctx context.Context, c net.Conn, source string) {
	_ = c.SetReadDeadline(time.Now().Add(requestHeaderTimeout))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		writeStatus(c, http.StatusBadRequest, "malformed request")
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		writeStatus(c, http.StatusMethodNotAllowed, "only CONNECT ip:port is supported")
		c.Close()
		return
	}
	dst, err := hbone.ParseAuthority(req.Host)
	if err != nil {
		writeStatus(c, http.StatusBadRequest, fmt.Sprintf("CONNECT target %q must be ip:port", req.Host))
		c.Close()
		return
	}
	p.outbound(ctx, &bufferedConn{Conn: c, r: br}, dst, source, func(err error) error {
		if err != nil {
			writeStatus(c, http.StatusBadGateway, err.Error())
			return nil
		}
		_, err = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		return err
	})
}

func writeStatus(c net.Conn, code int, msg string) {
	msg = strings.ReplaceAll(msg, "\n", " ")
	_, _ = fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		code, http.StatusText(code), len(msg)+1, msg)
}

// bufferedConn reads what the request reader already buffered (bytes a
// client sent right after its CONNECT) before reading the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *bufferedConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

package telemetry

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/ambitmesh/ambit/internal/sockio"
)

// ReadDirection says what the bytes read from a counted connection are.
type ReadDirection uint8

const (
	// ReadsAreRequest: the connection faces the source (the client side);
	// reads are request bytes and writes response bytes.
	ReadsAreRequest ReadDirection = iota
	// ReadsAreResponse: the connection faces the destination.
	ReadsAreResponse
)

// spliceChunk bounds how many bytes a spliced copy moves between two
// updates of the counters: between two plain TCP sockets the kernel moves
// the data (splice) and Go reports it only when the call returns, so the
// copy is cut into chunks to keep the metrics current.
const spliceChunk = 64 << 10

// copyBufSize is the buffer of the non-splice copy paths (pooled).
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// CountConn wraps c so that every byte read from or written to it is
// accounted to m as it flows. Wrap one side of a proxied pair only
// (usually the one facing the source): each byte crosses both sides.
//
// io.Copy to or from the wrapper between two *net.TCPConn still uses
// splice, in chunks of 64 KiB (the counting granularity on that path);
// otherwise reads and writes are counted per call, with no allocation.
func CountConn(c net.Conn, m *ConnMetrics, reads ReadDirection) net.Conn {
	return &countedConn{Conn: c, m: m, readsAreRequest: reads == ReadsAreRequest, sock: sockio.For(c)}
}

type countedConn struct {
	net.Conn
	m               *ConnMetrics
	readsAreRequest bool
	sock            *sockio.Socket // c's socket (raw reads, TryWrite); nil without one
}

func (c *countedConn) countRead(n int) {
	if c.readsAreRequest {
		c.m.AddRequest(n)
	} else {
		c.m.AddResponse(n)
	}
}

func (c *countedConn) countWrite(n int) {
	if c.readsAreRequest {
		c.m.AddResponse(n)
	} else {
		c.m.AddRequest(n)
	}
}

// Read reads from the socket itself when c has one (sockio: the same
// waits and errors, without waking Go's sysmon on every busy period).
func (c *countedConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if c.sock != nil {
		n, err = c.sock.Read(p)
	} else {
		n, err = c.Conn.Read(p)
	}
	c.countRead(n)
	return n, err
}

// ReadInto is Read into a buffer held only while the socket has bytes to
// read (see internal/sockio), counted like Read: an HBONE stream reads its
// source this way, so that an idle stream holds no relay buffer.
func (c *countedConn) ReadInto(b sockio.Buffer) (int, error) {
	var n int
	var err error
	if c.sock != nil {
		n, err = c.sock.ReadInto(b)
	} else {
		n, err = c.Conn.Read(b.Bytes())
	}
	c.countRead(n)
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.countWrite(n)
	return n, err
}

// TryWrite writes what the socket takes without waiting (see
// internal/sockio), counted like Write: an HBONE connection's reader
// hands a stream's bytes over this way. errors.ErrUnsupported when the
// wrapped connection has no socket.
func (c *countedConn) TryWrite(p []byte) (int, error) {
	if c.sock == nil {
		return 0, errors.ErrUnsupported
	}
	n, err := c.sock.TryWrite(p)
	c.countWrite(n)
	return n, err
}

// WriteBuffers writes bufs with one writev when the wrapped connection is
// a socket (net.Buffers.WriteTo on the wrapper would write them one by
// one), counted like Write. An HBONE stream's writer hands over what
// arrived this way.
func (c *countedConn) WriteBuffers(bufs *net.Buffers) (int64, error) {
	n, err := bufs.WriteTo(c.Conn)
	c.countWrite(int(n))
	return n, err
}

// NetConn returns the wrapped connection (like tls.Conn.NetConn), for
// socket options and SO_ORIGINAL_DST lookups.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the wrapped connection, so a proxy can forward a
// FIN through the wrapper; errors.ErrUnsupported when it cannot.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("telemetry: half-close %T: %w", c.Conn, errors.ErrUnsupported)
}

// ReadFrom serves io.Copy(wrapper, r).
func (c *countedConn) ReadFrom(r io.Reader) (int64, error) {
	if dst, ok := c.Conn.(*net.TCPConn); ok {
		if src, ok := r.(*net.TCPConn); ok {
			return spliceChunks(dst, src, c.countWrite)
		}
	}
	return copyPooled(writerOnly{c}, readerOnly{r})
}

// WriteTo serves io.Copy(w, wrapper).
func (c *countedConn) WriteTo(w io.Writer) (int64, error) {
	if src, ok := c.Conn.(*net.TCPConn); ok {
		if dst, ok := w.(*net.TCPConn); ok {
			return spliceChunks(dst, src, c.countRead)
		}
	}
	return copyPooled(writerOnly{w}, readerOnly{c})
}

// spliceChunks copies src to dst until EOF with TCPConn.ReadFrom (splice)
// on a LimitedReader, which net's splice accepts, counting each chunk.
func spliceChunks(dst, src *net.TCPConn, count func(int)) (int64, error) {
	lr := &io.LimitedReader{R: src}
	var total int64
	for {
		lr.N = spliceChunk
		n, err := dst.ReadFrom(lr)
		total += n
		count(int(n))
		if err != nil {
			return total, err
		}
		if lr.N > 0 { // src reached EOF before the chunk was full
			return total, nil
		}
	}
}

// copyPooled is io.Copy with a pooled buffer; the wrappers hide
// ReaderFrom/WriterTo so neither side falls back to allocating its own.
func copyPooled(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}

type writerOnly struct{ io.Writer }

type readerOnly struct{ io.Reader }

package hbone

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"sync"

	"github.com/ambitmesh/ambit/internal/sockio"
)

// crypto/tls writes every record (at most 16 KiB of plaintext) with its own
// write syscall. A large HTTP/2 DATA frame is one tls.Conn.Write, so the
// records it turns into are gathered under the TLS layer and leave in one
// syscall per batch instead: a bulk stream's 256 KiB read (four 64 KiB
// frames, sixteen records) is one syscall, not sixteen. Small writes (one
// record) go straight through.

// batchSize bounds how much ciphertext is held before it is written: the
// frames of a full bulk read (256 KiB) and the control frames queued
// before them leave in one syscall.
const batchSize = 272 << 10

// Batch buffers are taken for one batch only: a connection that once sent
// in bulk keeps no ~288 KiB buffer while it idles.
var batchBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, batchSize+maxRecordPlaintext+256)
	return &b
}}

// maxRecordPlaintext is crypto/tls's largest record payload: writes up to
// this size are one record (with dynamic record sizing disabled) and gain
// nothing from batching.
const maxRecordPlaintext = 16 << 10

// readBufSize is the read buffer under TLS: crypto/tls asks for one record
// header, then one record, at a time, often a few KiB per read syscall; the
// buffer takes whatever has arrived (up to this much) in one.
const readBufSize = 32 << 10

// batchConn is the raw connection under a tls.Conn. While a batch is open
// its writes are appended to a buffer; otherwise they go straight out.
// Reads are buffered.
type batchConn struct {
	net.Conn
	r    *bufio.Reader // only crypto/tls reads, under its own lock
	sock io.ReadWriter // the socket's raw reads and writes (sockio.Socket), or Conn

	mu       sync.Mutex
	batching bool
	bp       *[]byte // the open batch's buffer (pooled: an idle connection holds none)
	err      error   // sticky: once a buffered write failed, the TLS stream is broken
}

func newBatchConn(c net.Conn) *batchConn {
	var sock io.ReadWriter = c
	if s := sockio.For(c); s != nil {
		sock = s
	}
	return &batchConn{Conn: c, sock: sock, r: bufio.NewReaderSize(sock, readBufSize)}
}

func (b *batchConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.batching {
		n, err := b.sock.Write(p)
		if err != nil {
			b.err = err
		}
		return n, err
	}
	if len(*b.bp)+len(p) > batchSize && len(*b.bp) > 0 {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	*b.bp = append(*b.bp, p...)
	return len(p), nil
}

// begin opens a batch; it reports false when one was open already (the
// outer end writes it).
func (b *batchConn) begin() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		return false
	}
	b.batching = true
	b.bp = batchBufs.Get().(*[]byte)
	return true
}

// end writes what the batch gathered.
func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	err := b.err
	if err == nil {
		err = b.flushLocked()
	}
	*b.bp = (*b.bp)[:0]
	batchBufs.Put(b.bp)
	b.bp = nil
	return err
}

func (b *batchConn) flushLocked() error {
	if len(*b.bp) == 0 {
		return nil
	}
	_, err := b.sock.Write(*b.bp)
	*b.bp = (*b.bp)[:0]
	if err != nil {
		b.err = err
	}
	return err
}

// batchTLS is the tls.Conn HTTP/2 runs on (ConnectionState and the rest
// are promoted); only Write differs. Its writers are serialized by the
// HTTP/2 connection's write lock.
type batchTLS struct {
	*tls.Conn
	raw *batchConn
}

func newBatchTLS(tc *tls.Conn, raw *batchConn) *batchTLS {
	return &batchTLS{Conn: tc, raw: raw}
}

func (t *batchTLS) Write(p []byte) (int, error) {
	if len(p) <= maxRecordPlaintext {
		return t.Conn.Write(p)
	}
	var n int
	err := t.batch(func() (err error) {
		n, err = t.Conn.Write(p)
		return err
	})
	return n, err
}

// batch runs fn, whose TLS writes leave together when it returns.
func (t *batchTLS) batch(fn func() error) error {
	if !t.raw.begin() {
		return fn()
	}
	err := fn()
	if ferr := t.raw.end(); err == nil && ferr != nil {
		// The records were accepted by TLS but never left: the stream is
		// broken.
		return ferr
	}
	return err
}

package hbone

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The server side of HBONE speaks HTTP/2 with x/net's Framer and hpack
// directly instead of x/net's http2.Server, which hands every request
// through several goroutines (frame reader, serve loop, body pipe, handler,
// and one goroutine per flush). Here one goroutine per connection reads
// frames and drops DATA straight into the stream's buffer; per stream, one
// goroutine writes that buffer to the upstream and another reads the
// upstream and frames what it read itself, under the connection's write
// lock. Frames the reader must send (acks, resets) are queued and written
// by whoever writes next, or by a small writer goroutine, so that the
// reader never blocks on the socket: a reader stuck writing while the peer
// is stuck writing to us would deadlock both.

// maxHeaderListSize bounds a request's decoded header list (advertised as
// SETTINGS_MAX_HEADER_LIST_SIZE). A CONNECT carries a handful of short
// headers; x/net's Framer closes the connection when a header block
// (HEADERS plus CONTINUATION) goes far beyond it.
const maxHeaderListSize = 64 << 10

// writeBufSize is the buffer frames are gathered in before a flush: small
// frames written while another writer waits leave together.
const writeBufSize = 16 << 10

var clientPreface = []byte(http2.ClientPreface)

// connConfig is what the HTTP/2 layer needs from a ServerConfig or a
// DialerConfig.
type connConfig struct {
	StreamWindow, ConnWindow  int32  // our receive windows
	MaxFrameSize              uint32 // largest frame we accept
	HandshakeTimeout          time.Duration
	PingInterval, PingTimeout time.Duration
}

// h2Conn is one HTTP/2 connection after the TLS handshake, either side:
// the server's (s set: it accepts CONNECT streams) or the client's (cl
// set: it opens them). Framing, flow control, the write path and the
// stream buffers are the same for both.
type h2Conn struct {
	s             *Server     // server side
	cl            *clientSide // client side
	cfg           connConfig
	raw           net.Conn
	rw            io.ReadWriter // TLS over raw
	fr            *http2.Framer
	peer          spiffeid.ID
	local, remote netip.AddrPort
	log           *slog.Logger
	ctx           context.Context // ends with the connection; parent of every stream's
	cancel        context.CancelFunc
	wg            sync.WaitGroup // stream goroutines

	// Writing: one writer at a time under wmu; the last one out flushes.
	wmu     sync.Mutex
	waiting atomic.Int32
	bw      *bufio.Writer
	werr    error
	// Frames queued by the reader (under cmu), written by the next writer.
	cmu      sync.Mutex
	cbuf     bytes.Buffer
	cfr      *http2.Framer
	cpending atomic.Bool
	ckick    chan struct{}
	closing  atomic.Bool // close once the queued frames are written

	mu      sync.Mutex
	cond    *sync.Cond         // a send window grew, or a stream or the connection ended
	streams map[uint32]*stream // open and half-closed streams
	// unfinished counts streams that may still write (not done): a draining
	// connection closes when it reaches 0.
	unfinished  int
	lastID      uint32 // highest client stream id seen (opened, on the client side)
	goAway      bool   // GOAWAY sent or received: no new streams
	closed      bool
	endCause    error // why the connection ended (client side: streams' error)
	sendConn    int64 // connection send window
	peerInit    int64 // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMax     int   // peer's SETTINGS_MAX_FRAME_SIZE
	peerStreams int   // peer's SETTINGS_MAX_CONCURRENT_STREAMS; -1 until it sent one
	recvConn    int64 // connection receive window left
	ackConn     int64 // consumed bytes not yet returned to the connection window

	lastRead atomic.Int64 // unix nanos of the last frame read (keepalive)
}

// stream is one client stream.
type stream struct {
	c      *h2Conn
	id     uint32
	ctx    context.Context // cancelled on reset and when the connection ends
	cancel context.CancelFunc
	done   atomic.Bool // reset, or removed from the connection

	// Peer -> us: the reader appends, the stream's writer (server: to the
	// upstream; client: Conn.Read or WriteTo) drains.
	mu         sync.Mutex
	in         [][]byte // pooled chunks (see appendChunks)
	off        int      // bytes of in[0] already read (Conn.Read)
	inEOF      bool     // END_STREAM received
	localEnded bool     // END_STREAM about to be sent
	reset      bool
	wake       chan struct{}
	recvAvail  int64 // stream receive window left
	ack        int64 // consumed bytes not yet returned
	// While the stream's writer waits with nothing buffered, the reader
	// writes arriving DATA to sink itself when the socket takes it at once
	// (see drainTo): no hand-off, no wake-up.
	sink     sink
	sinkBusy bool  // the reader is writing to sink
	noSink   bool  // sink turned out unsupported
	sunk     int64 // bytes the reader wrote, not yet counted by drainTo

	sendWin int64 // stream send window, under c.mu

	relay relayBuf // us -> peer: copyFromUpstream's (here: no allocation per stream)

	// Client side: the response. opened is closed by the reader on the
	// final status (status set) or when the stream ended before one.
	opened     chan struct{}
	openedDone bool  // under c.mu
	status     int   // under c.mu
	err        error // why the stream ended, under mu
}

func newH2Conn(ctx context.Context, cfg connConfig, log *slog.Logger, raw net.Conn, rw io.ReadWriter, peer spiffeid.ID, local, remote netip.AddrPort) *h2Conn {
	c := &h2Conn{
		cfg: cfg, raw: raw, rw: rw, peer: peer, local: local, remote: remote,
		log:         log,
		bw:          bufio.NewWriterSize(rw, writeBufSize),
		ckick:       make(chan struct{}, 1),
		streams:     make(map[uint32]*stream),
		sendConn:    65535,
		peerInit:    65535,
		peerMax:     16384,
		peerStreams: -1,
		recvConn:    int64(cfg.ConnWindow),
	}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.cond = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(c.bw, rw)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(cfg.MaxFrameSize)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = maxHeaderListSize
	c.cfr = http2.NewFramer(&c.cbuf, nil)
	return c
}

// writeSettings writes the SETTINGS frame and connection WINDOW_UPDATE each
// side sends first; extra are the side's own.
func (c *h2Conn) writeSettings(fr *http2.Framer, extra ...http2.Setting) error {
	if err := fr.WriteSettings(append(extra,
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: c.cfg.MaxFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	)...); err != nil {
		return err
	}
	if inc := c.cfg.ConnWindow - 65535; inc > 0 { // 0 is not a valid increment
		return fr.WriteWindowUpdate(0, uint32(inc))
	}
	return nil
}

// errConnClosed ends writers once the connection is gone.
var errConnClosed = errors.New("hbone: connection closed")

// write runs fn with the framer under the write lock, after the queued
// control frames, and flushes unless another writer is waiting (it will).
func (c *h2Conn) write(fn func(fr *http2.Framer) error) error {
	c.lockWrite()
	if c.werr == nil && fn != nil {
		c.werr = fn(c.fr)
	}
	return c.unlockWrite()
}

// writeFinal is write for the last frames before the connection closes:
// they are flushed even when another writer waits (it would flush them
// only after the close).
func (c *h2Conn) writeFinal(fn func(fr *http2.Framer) error) error {
	c.lockWrite()
	if c.werr == nil && fn != nil {
		c.werr = fn(c.fr)
	}
	if c.werr == nil {
		c.werr = c.bw.Flush()
	}
	err := c.werr
	c.wmu.Unlock()
	return err
}

// lockWrite takes the write lock and writes the queued control frames.
func (c *h2Conn) lockWrite() {
	c.waiting.Add(1)
	c.wmu.Lock()
	c.waiting.Add(-1)
	c.writeQueuedLocked()
}

// writeQueuedLocked moves the queued frames to the write buffer (drops
// them once the connection failed: nothing can be written any more).
func (c *h2Conn) writeQueuedLocked() {
	if !c.cpending.Load() {
		return
	}
	c.cmu.Lock()
	c.cpending.Store(false)
	if c.werr == nil {
		_, c.werr = c.bw.Write(c.cbuf.Bytes())
	}
	c.cbuf.Reset()
	c.cmu.Unlock()
}

// unlockWrite flushes unless another writer is waiting (it will flush),
// releases the lock, and reports the connection's write error.
func (c *h2Conn) unlockWrite() error {
	if c.werr == nil && c.waiting.Load() == 0 {
		c.werr = c.bw.Flush()
	}
	err := c.werr
	c.wmu.Unlock()
	c.flushQueued()
	return err
}

// flushQueued writes control frames queued while the lock was held, when
// nobody else holds it now (the holder would).
func (c *h2Conn) flushQueued() {
	for c.cpending.Load() && c.wmu.TryLock() {
		c.writeQueuedLocked()
		if c.werr == nil && c.waiting.Load() == 0 {
			c.werr = c.bw.Flush()
		}
		c.wmu.Unlock()
	}
}

// queue appends a frame for the next writer and wakes the control writer;
// the reader uses it so that it never waits on the socket.
func (c *h2Conn) queue(fn func(fr *http2.Framer) error) {
	c.cmu.Lock()
	_ = fn(c.cfr) // writes to a bytes.Buffer cannot fail
	c.cpending.Store(true)
	c.cmu.Unlock()
	select {
	case c.ckick <- struct{}{}:
	default:
	}
}

// controlWriter writes queued frames nobody else picked up.
func (c *h2Conn) controlWriter(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-c.ckick:
			if c.closing.Load() {
				_ = c.raw.SetWriteDeadline(time.Now().Add(time.Second))
				_ = c.writeFinal(nil)
				_ = c.raw.Close()
			} else if c.cpending.Load() {
				_ = c.write(nil)
			}
		}
	}
}

// protoError ends the connection for a protocol violation: GOAWAY with
// the code, one log line, close.
type protoError struct {
	code   http2.ErrCode
	reason string
}

func (e *protoError) Error() string { return fmt.Sprintf("%v: %s", e.code, e.reason) }

func connErr(code http2.ErrCode, format string, args ...any) error {
	return &protoError{code: code, reason: fmt.Sprintf(format, args...)}
}

// serve runs the connection until the peer or shutdown ends it; shutdown
// (ctx) drains: GOAWAY, then open streams get up to DrainTimeout.
func (c *h2Conn) serve(ctx context.Context) {
	stopCtl := make(chan struct{})
	var ctl sync.WaitGroup
	ctl.Go(func() { c.controlWriter(stopCtl) })
	stopDrain := context.AfterFunc(ctx, c.drain)
	ka := c.startKeepalive()

	err := c.readLoop()

	stopDrain()
	ka.Stop()
	var pe *protoError
	if errors.As(err, &pe) {
		c.log.Warn("hbone: connection closed: protocol error", "peer", c.peer.String(), "remote", c.remote.String(), "code", pe.code.String(), "reason", pe.reason)
		c.mu.Lock()
		last := c.lastID
		c.mu.Unlock()
		_ = c.raw.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.writeFinal(func(fr *http2.Framer) error { return fr.WriteGoAway(last, pe.code, []byte(pe.reason)) })
	} else if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.log.Debug("hbone: connection ended", "peer", c.peer.String(), "remote", c.remote.String(), "reason", err.Error())
	}
	c.mu.Lock()
	c.closed = true
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		c.endCause = errConnClosed
	} else {
		c.endCause = fmt.Errorf("%w: %w", errConnClosed, err)
	}
	for _, st := range c.streams {
		st.fail(c.endCause)
		c.removeLocked(st)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.cancel()
	_ = c.raw.Close()
	c.wg.Wait()
	close(stopCtl)
	ctl.Wait()
}

// drain starts a graceful shutdown: GOAWAY naming the last stream served,
// no new streams, and the connection closes when the last stream ends or
// DrainTimeout passed.
func (c *h2Conn) drain() {
	c.mu.Lock()
	c.goAway = true
	last, idle := c.lastID, c.unfinished == 0
	c.mu.Unlock()
	c.queue(func(fr *http2.Framer) error { return fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	if idle {
		c.closeAfterFlush()
		return
	}
	t := time.AfterFunc(c.s.cfg.DrainTimeout, func() { _ = c.raw.Close() })
	context.AfterFunc(c.ctx, func() { t.Stop() })
}

// closeAfterFlush has the control writer close the connection once the
// queued frames are out (a GOAWAY).
func (c *h2Conn) closeAfterFlush() {
	c.closing.Store(true)
	select {
	case c.ckick <- struct{}{}:
	default:
	}
}

// startKeepalive pings a peer silent for PingInterval and closes the
// connection when nothing arrives within PingTimeout after the ping.
func (c *h2Conn) startKeepalive() *time.Timer {
	c.lastRead.Store(time.Now().UnixNano())
	var t *time.Timer
	var pinged int64 // unix nanos of the outstanding ping; only this timer's func
	t = time.AfterFunc(c.cfg.PingInterval, func() {
		last := c.lastRead.Load()
		now := time.Now()
		switch {
		case pinged != 0 && last < pinged:
			c.log.Debug("hbone: connection closed: keepalive ping not answered", "remote", c.remote.String())
			_ = c.raw.Close()
			return
		case now.Sub(time.Unix(0, last)) >= c.cfg.PingInterval:
			pinged = now.UnixNano()
			c.queue(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'k', 'e', 'e', 'p'}) })
			t.Reset(c.cfg.PingTimeout)
		default:
			pinged = 0
			t.Reset(c.cfg.PingInterval - now.Sub(time.Unix(0, last)))
		}
	})
	return t
}

func (c *h2Conn) readLoop() error {
	cfg := c.cfg
	// The preface and the peer's SETTINGS must come within the handshake
	// timeout. A client wrote its preface and SETTINGS before the loop
	// started; a server's go out at once.
	_ = c.raw.SetReadDeadline(time.Now().Add(cfg.HandshakeTimeout))
	if c.s != nil {
		c.queue(func(fr *http2.Framer) error {
			return c.writeSettings(fr, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.s.cfg.MaxConcurrentStreams})
		})
		pre := make([]byte, len(clientPreface))
		if _, err := io.ReadFull(c.rw, pre); err != nil {
			if isTimeout(err) {
				return connErr(http2.ErrCodeProtocol, "no client preface within %v", cfg.HandshakeTimeout)
			}
			return err
		}
		if !bytes.Equal(pre, clientPreface) {
			return connErr(http2.ErrCodeProtocol, "bad client preface %q", pre)
		}
	}
	first := true
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &se) && c.cl != nil:
				// A malformed response: only that stream fails.
				c.mu.Lock()
				st := c.streams[se.StreamID]
				c.mu.Unlock()
				if st != nil {
					c.log.Warn("hbone: stream reset", "peer", c.peer.String(), "remote", c.remote.String(), "reason", fmt.Sprintf("malformed response: %v", se.Cause))
					c.resetStream(st, se.Code)
				}
				continue
			case errors.As(err, &se):
				// A header block that decoded but is malformed opened the
				// stream (RFC 9113 §5.1.1); only that stream is reset.
				c.mu.Lock()
				if se.StreamID > c.lastID && se.StreamID%2 == 1 {
					c.lastID = se.StreamID
				}
				c.mu.Unlock()
				c.refuseStream(se.StreamID, 0, se.Code, fmt.Sprintf("malformed request: %v", se.Cause))
				continue
			case errors.As(err, &ce):
				reason := "malformed frame"
				if d := c.fr.ErrorDetail(); d != nil {
					reason = d.Error()
				}
				return connErr(http2.ErrCode(ce), "%s", reason)
			case errors.Is(err, http2.ErrFrameTooLarge):
				return connErr(http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE (%d)", cfg.MaxFrameSize)
			case isTimeout(err) && first:
				return connErr(http2.ErrCodeProtocol, "no SETTINGS within %v", cfg.HandshakeTimeout)
			}
			return err
		}
		c.lastRead.Store(time.Now().UnixNano())
		if first {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				return connErr(http2.ErrCodeProtocol, "first frame %v, want SETTINGS", f.Header().Type)
			}
			first = false
			_ = c.raw.SetReadDeadline(time.Time{})
		}
		if err := c.handle(f); err != nil {
			return err
		}
	}
}

func (c *h2Conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.MetaHeadersFrame:
		if c.cl != nil {
			return c.onResponse(f)
		}
		return c.onHeaders(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if f.StreamID > c.lastID {
			return connErr(http2.ErrCodeProtocol, "RST_STREAM on idle stream %d", f.StreamID)
		}
		if st := c.streams[f.StreamID]; st != nil {
			st.fail(fmt.Errorf("reset by the server (%v)", f.ErrCode))
			c.removeLocked(st)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			c.queue(func(fr *http2.Framer) error { return fr.WritePing(true, data) })
		}
	case *http2.GoAwayFrame:
		if c.cl != nil {
			c.onGoAway(f)
			return nil
		}
		c.mu.Lock()
		c.goAway = true
		idle := c.unfinished == 0
		c.mu.Unlock()
		if idle {
			c.closeAfterFlush()
		}
	case *http2.PushPromiseFrame:
		// A client disables push (SETTINGS_ENABLE_PUSH 0).
		return connErr(http2.ErrCodeProtocol, "PUSH_PROMISE")
	case *http2.ContinuationFrame:
		// The Framer merges CONTINUATION into MetaHeadersFrame; a stray one
		// is caught by its frame-order check.
		return connErr(http2.ErrCodeProtocol, "unexpected CONTINUATION")
	}
	// PRIORITY and unknown frame types are ignored (RFC 9113 §5.5).
	return nil
}

func (c *h2Conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if c.cl != nil {
		defer c.cl.settingsOnce.Do(func() { close(c.cl.settings) })
	}
	if err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return connErr(http2.ErrCodeProtocol, "setting %v: %v", s, err)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInit
			c.peerInit = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > 1<<31-1 {
					return connErr(http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows stream %d's window", st.id)
				}
			}
			c.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerMax = int(s.Val)
		case http2.SettingMaxConcurrentStreams:
			c.peerStreams = int(min(s.Val, 1<<20))
		}
		// Header blocks we send never use the dynamic table (see
		// statusBlock, requestBlock), so SETTINGS_HEADER_TABLE_SIZE needs
		// nothing.
		return nil
	}); err != nil {
		var pe *protoError
		if errors.As(err, &pe) {
			return err
		}
		return connErr(http2.ErrCodeProtocol, "SETTINGS: %v", err)
	}
	c.queue(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
	return nil
}

func (c *h2Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendConn += inc
		if c.sendConn > 1<<31-1 {
			return connErr(http2.ErrCodeFlowControl, "connection window overflow")
		}
	} else if st := c.streams[f.StreamID]; st != nil {
		st.sendWin += inc
		if st.sendWin > 1<<31-1 {
			c.removeLocked(st)
			id := st.id
			c.queue(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeFlowControl) })
			return nil
		}
	} else if f.StreamID > c.lastID {
		return connErr(http2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream %d", f.StreamID)
	}
	c.cond.Broadcast()
	return nil
}

func (c *h2Conn) onData(f *http2.DataFrame) error {
	n := int64(f.Header().Length)
	data := f.Data()
	pad := n - int64(len(data)) // the Pad Length field and the padding
	c.mu.Lock()
	if n > c.recvConn {
		c.mu.Unlock()
		return connErr(http2.ErrCodeFlowControl, "DATA beyond the connection window")
	}
	c.recvConn -= n
	st := c.streams[f.StreamID]
	if st == nil {
		closed := f.StreamID <= c.lastID
		// Bytes nobody will read return to the connection window at once.
		inc := c.consumedConnLocked(n)
		c.mu.Unlock()
		if !closed {
			return connErr(http2.ErrCodeProtocol, "DATA on idle stream %d", f.StreamID)
		}
		id := f.StreamID
		c.queue(func(fr *http2.Framer) error {
			if inc > 0 {
				if err := fr.WriteWindowUpdate(0, inc); err != nil {
					return err
				}
			}
			return fr.WriteRSTStream(id, http2.ErrCodeStreamClosed)
		})
		return nil
	}
	c.mu.Unlock()

	st.mu.Lock()
	if st.reset {
		st.mu.Unlock()
		c.discarded(n)
		return nil
	}
	if st.inEOF {
		st.mu.Unlock()
		c.resetStream(st, http2.ErrCodeStreamClosed)
		c.discarded(n)
		return nil
	}
	if n > st.recvAvail {
		st.mu.Unlock()
		c.resetStream(st, http2.ErrCodeFlowControl)
		c.discarded(n)
		return nil
	}
	st.recvAvail -= n
	sunk := 0
	if len(st.in) == 0 && st.sink != nil && !st.sinkBusy && len(data) > 0 {
		sk := st.sink
		st.sinkBusy = true
		st.mu.Unlock()
		k, err := sk.TryWrite(data)
		st.mu.Lock()
		st.sinkBusy = false
		if errors.Is(err, errors.ErrUnsupported) {
			st.sink, st.noSink = nil, true
		}
		// Other errors: the writer's own write meets them too.
		st.sunk += int64(k)
		sunk, data = k, data[k:]
	}
	st.in = appendChunks(st.in, data)
	closed := false
	ended := f.StreamEnded()
	if ended {
		st.inEOF = true
		closed = st.localEnded
	}
	// The writer has nothing to do only when every byte went out directly.
	quiet := sunk > 0 && len(data) == 0 && !ended && !st.reset
	st.mu.Unlock()
	if !quiet {
		st.signal()
	}
	// Padding is consumed on arrival, with what went out directly.
	if used := int64(sunk) + pad; used > 0 {
		st.consumed(used, ended, true)
	}
	if closed {
		c.retire(st)
	}
	return nil
}

// discarded gives back to the connection window n received bytes nobody
// will read (their stream ended): the window is shared by every stream,
// and bytes never returned would shrink it for good.
func (c *h2Conn) discarded(n int64) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	inc := c.consumedConnLocked(n)
	c.mu.Unlock()
	if inc > 0 {
		c.queue(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, inc) })
	}
}

// consumedConnLocked records n bytes given back to the connection window
// and returns the WINDOW_UPDATE increment to send, if one is due.
func (c *h2Conn) consumedConnLocked(n int64) uint32 {
	c.ackConn += n
	if c.ackConn < int64(c.cfg.ConnWindow)/4 {
		return 0
	}
	inc := c.ackConn
	c.ackConn = 0
	c.recvConn += inc
	return uint32(inc)
}

func (st *stream) signal() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// retireLocked takes a stream out of the count of open streams
// (MAX_CONCURRENT_STREAMS) and out of frame dispatch: done before the frame
// that lets the client see it closed leaves, so that the client's next
// HEADERS never meets a stale count.
func (c *h2Conn) retireLocked(st *stream) {
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
	}
}

func (c *h2Conn) retire(st *stream) {
	c.mu.Lock()
	c.retireLocked(st)
	c.mu.Unlock()
}

// removeLocked ends a stream: retired, nothing more is written for it, and
// its goroutines stop (the context closes the upstream). A draining
// connection closes after its last stream ended.
func (c *h2Conn) removeLocked(st *stream) {
	c.retireLocked(st)
	if st.done.Swap(true) {
		return
	}
	c.unfinished--
	if c.goAway && c.unfinished == 0 && !c.closed {
		c.closeAfterFlush()
	}
	st.openedLocked()
	st.mu.Lock()
	st.reset = true
	st.mu.Unlock()
	st.signal()
	st.cancel()
	c.cond.Broadcast()
}

func (c *h2Conn) remove(st *stream) {
	c.mu.Lock()
	c.removeLocked(st)
	c.mu.Unlock()
}

// endLocal marks our END_STREAM as about to be sent; a stream whose peer
// already ended is then retired.
func (st *stream) endLocal() {
	st.mu.Lock()
	st.localEnded = true
	closed := st.inEOF
	st.mu.Unlock()
	if closed {
		st.c.retire(st)
	}
}

// endRemote records the peer's END_STREAM.
func (st *stream) endRemote() {
	st.mu.Lock()
	st.inEOF = true
	closed := st.localEnded
	st.mu.Unlock()
	st.signal()
	if closed {
		st.c.retire(st)
	}
}

// resetStream sends RST_STREAM with code and ends the stream.
func (c *h2Conn) resetStream(st *stream, code http2.ErrCode) {
	c.mu.Lock()
	c.removeLocked(st)
	c.mu.Unlock()
	id := st.id
	c.queue(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

// refuseStream answers a stream that never ran: a status (with
// END_STREAM, then RST_STREAM NO_ERROR when the client still had a body
// to send) or, with status 0, RST_STREAM code. One log line says why.
func (c *h2Conn) refuseStream(id uint32, status int, code http2.ErrCode, reason string) {
	c.refuseStreamEnded(id, status, code, reason, false)
}

func (c *h2Conn) refuseStreamEnded(id uint32, status int, code http2.ErrCode, reason string, clientEnded bool) {
	if status != 0 {
		c.log.Warn("hbone: stream refused", "peer", c.peer.String(), "remote", c.remote.String(), "status", status, "reason", reason)
	} else {
		c.log.Warn("hbone: stream refused", "peer", c.peer.String(), "remote", c.remote.String(), "reset", code.String(), "reason", reason)
	}
	c.queue(func(fr *http2.Framer) error {
		if status == 0 {
			return fr.WriteRSTStream(id, code)
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: statusBlock(status), EndHeaders: true, EndStream: true}); err != nil {
			return err
		}
		if !clientEnded {
			return fr.WriteRSTStream(id, http2.ErrCodeNo)
		}
		return nil
	})
}

// statusBlock is the HPACK block of a response carrying only :status. It
// never indexes (Sensitive), so blocks are independent of each other and
// of the peer's table size, and may be written in any order.
func statusBlock(code int) []byte {
	statusBlocksMu.Lock()
	defer statusBlocksMu.Unlock()
	if b, ok := statusBlocks[code]; ok {
		return b
	}
	var buf bytes.Buffer
	_ = hpack.NewEncoder(&buf).WriteField(hpack.HeaderField{Name: ":status", Value: fmt.Sprint(code), Sensitive: true})
	statusBlocks[code] = buf.Bytes()
	return buf.Bytes()
}

var (
	statusBlocksMu sync.Mutex
	statusBlocks   = map[int][]byte{}
)

package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http2"

	"github.com/ambitmesh/ambit/internal/sockio"
)

// Received bytes wait for the upstream in pooled chunks of chunkSize: a
// burst costs no allocation however large it is (up to the stream window),
// and the writer hands the chunks to the upstream in one writev.
const chunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// appendChunks copies data into the chunks in, filling the last one first.
// Every chunk slice starts at its array's first byte.
func appendChunks(in [][]byte, data []byte) [][]byte {
	for len(data) > 0 {
		if n := len(in); n > 0 && len(in[n-1]) < chunkSize {
			last := in[n-1]
			k := copy(last[len(last):chunkSize], data)
			in[n-1] = last[:len(last)+k]
			data = data[k:]
			continue
		}
		in = append(in, chunkPool.Get().(*[chunkSize]byte)[:0])
	}
	return in
}

func freeChunks(in [][]byte) {
	for i, b := range in {
		chunkPool.Put((*[chunkSize]byte)(b[:chunkSize]))
		in[i] = nil
	}
}

func (c *h2Conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return connErr(http2.ErrCodeProtocol, "HEADERS on server-initiated stream id %d", id)
	}
	c.mu.Lock()
	if id <= c.lastID {
		st := c.streams[id]
		c.mu.Unlock()
		if st == nil {
			return connErr(http2.ErrCodeStreamClosed, "HEADERS on closed stream %d", id)
		}
		// Trailers: a CONNECT tunnel has none.
		c.log.Warn("hbone: stream reset", "peer", c.peer.String(), "remote", c.remote.String(), "reason", "trailers on a CONNECT stream")
		c.resetStream(st, http2.ErrCodeProtocol)
		return nil
	}
	c.lastID = id
	goingAway, open := c.goAway, len(c.streams)
	c.mu.Unlock()
	ended := f.StreamEnded()
	switch {
	case goingAway:
		c.queue(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
		return nil
	case open >= int(c.s.cfg.MaxConcurrentStreams):
		c.refuseStream(id, 0, http2.ErrCodeRefusedStream, fmt.Sprintf("more than SETTINGS_MAX_CONCURRENT_STREAMS (%d) open streams", c.s.cfg.MaxConcurrentStreams))
		return nil
	case f.Truncated:
		c.refuseStreamEnded(id, http.StatusRequestHeaderFieldsTooLarge, 0, fmt.Sprintf("header list larger than %d bytes", maxHeaderListSize), ended)
		return nil
	}

	method, authority := f.PseudoValue("method"), f.PseudoValue("authority")
	path, scheme, protocol := f.PseudoValue("path"), f.PseudoValue("scheme"), f.PseudoValue("protocol")
	hdr := make(http.Header, len(f.Fields))
	for _, hf := range f.RegularFields() {
		switch k := strings.ToLower(hf.Name); k {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			c.refuseStream(id, 0, http2.ErrCodeProtocol, fmt.Sprintf("connection-specific header %q", hf.Name))
			return nil
		}
		k := http.CanonicalHeaderKey(hf.Name)
		hdr[k] = append(hdr[k], hf.Value)
	}
	switch {
	case method == "":
		c.refuseStream(id, 0, http2.ErrCodeProtocol, "no :method")
		return nil
	case method != http.MethodConnect:
		if path == "" || scheme == "" {
			c.refuseStream(id, 0, http2.ErrCodeProtocol, fmt.Sprintf("%s without :path or :scheme", method))
			return nil
		}
		c.refuseStreamEnded(id, http.StatusBadRequest, 0, fmt.Sprintf("method %q with protocol %q; want classic CONNECT", method, protocol), ended)
		return nil
	case protocol != "":
		c.refuseStreamEnded(id, http.StatusBadRequest, 0, fmt.Sprintf("method %q with protocol %q; want classic CONNECT", method, protocol), ended)
		return nil
	case path != "" || scheme != "" || authority == "":
		c.refuseStream(id, 0, http2.ErrCodeProtocol, "CONNECT with :path or :scheme, or without :authority")
		return nil
	}
	addr, err := ParseAuthority(authority)
	if err != nil {
		c.refuseStreamEnded(id, http.StatusBadRequest, 0, err.Error(), ended)
		return nil
	}

	req := &Request{Peer: c.peer, LocalAddr: c.local, RemoteAddr: c.remote, Authority: addr, Header: hdr}
	if v := hdr.Get(HeaderForwarded); v != "" {
		req.Forwarded, _ = ParseForwarded(v)
	}
	if vs := hdr.Values(HeaderBaggage); len(vs) > 0 {
		req.Baggage, _ = ParseBaggage(vs...)
	}
	if tp, err := ParseTraceParent(hdr.Get(HeaderTraceParent)); err == nil {
		req.TraceParent = tp
	} else {
		req.TraceParent = NewTraceParent()
	}

	st := &stream{c: c, id: id, wake: make(chan struct{}, 1), recvAvail: int64(c.cfg.StreamWindow), inEOF: ended}
	st.ctx, st.cancel = context.WithCancel(c.ctx)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		st.cancel()
		return nil
	}
	st.sendWin = c.peerInit
	c.streams[id] = st
	c.unfinished++
	c.wg.Add(1)
	c.mu.Unlock()
	go st.run(req)
	return nil
}

// run decides the stream with the Handler, answers, and relays until both
// directions ended or the stream was reset.
func (st *stream) run(req *Request) {
	c := st.c
	defer c.wg.Done()
	up, err := c.s.cfg.Handler.ServeHBONE(st.ctx, req)
	if err != nil || up == nil {
		code := StatusFor(err)
		if code == http.StatusOK {
			code = http.StatusServiceUnavailable
		}
		if err != nil {
			// The Handler logs its own decisions (access log); this is debug.
			c.log.Debug("hbone: stream answered", "peer", c.peer.String(), "authority", req.Authority.String(), "status", code, "reason", err.Error())
		}
		st.answer(code)
		st.freeIn()
		return
	}
	defer up.Close()
	// A reset stream or a dead connection cancels st.ctx; closing the
	// upstream then unblocks both relays.
	stop := context.AfterFunc(st.ctx, func() { _ = up.Close() })
	defer stop()
	if err := c.write(func(fr *http2.Framer) error {
		if st.done.Load() {
			return nil
		}
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: statusBlock(http.StatusOK), EndHeaders: true})
	}); err != nil {
		return
	}

	toUp := make(chan struct{})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(toUp)
		_ = st.copyToUpstream(up)
	}()
	err = st.copyFromUpstream(up)
	if !st.done.Load() {
		st.endLocal()
		// The upstream ended its side: END_STREAM. When it failed instead
		// (or was closed because the client's side failed), the client is
		// also asked to stop sending (RST_STREAM NO_ERROR, RFC 9113 §8.1).
		if werr := c.writeData(st, nil, true); werr == nil && !errors.Is(err, io.EOF) {
			select {
			case <-toUp:
			default:
				c.resetStream(st, http2.ErrCodeNo)
			}
		}
	}
	<-toUp
	c.mu.Lock()
	c.removeLocked(st)
	c.mu.Unlock()
	st.freeIn() // what came after copyToUpstream stopped
}

// answer ends a stream with a non-200 status.
func (st *stream) answer(code int) {
	c := st.c
	st.mu.Lock()
	ended := st.inEOF
	st.mu.Unlock()
	c.retire(st)
	_ = c.write(func(fr *http2.Framer) error {
		if st.done.Load() {
			return nil
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: statusBlock(code), EndHeaders: true, EndStream: true}); err != nil {
			return err
		}
		if !ended {
			return fr.WriteRSTStream(st.id, http2.ErrCodeNo)
		}
		return nil
	})
	c.mu.Lock()
	c.removeLocked(st)
	c.mu.Unlock()
}

var errStreamReset = errors.New("hbone: stream reset")

// copyToUpstream writes what the client sends to up; the client's
// END_STREAM half-closes up (closes it when it cannot half-close).
func (st *stream) copyToUpstream(up io.ReadWriteCloser) error {
	if _, err := st.drainTo(up); err != nil {
		_ = up.Close()
		return err
	}
	if cw, ok := up.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return up.Close()
}

// drainTo writes what the peer sends to w, as it arrives, until the
// peer's END_STREAM (nil) or a reset or write error. Every batch is one
// writev of the received chunks, and its bytes are then returned to the
// flow-control windows.
//
// When w is a socket (or has a TryWrite, like telemetry's counted
// connections), the connection's reader writes what arrives while this
// loop waits with nothing buffered straight to it, as far as the socket
// takes it without waiting; the rest is left here. Small exchanges then
// cost no goroutine hand-off at all.
func (st *stream) drainTo(w io.Writer) (int64, error) {
	direct := asSink(w)
	var spare, wbufs [][]byte
	var total int64
	defer st.freeIn()
	for {
		st.mu.Lock()
		for (len(st.in) == 0 && !st.inEOF && !st.reset) || st.sinkBusy {
			if direct != nil && !st.noSink {
				st.sink = direct
			}
			st.mu.Unlock()
			<-st.wake
			st.mu.Lock()
		}
		st.sink = nil
		total += st.sunk
		st.sunk = 0
		if st.reset && !st.inEOF {
			// Aborted: what arrived is dropped. (A reset after the peer's
			// END_STREAM still delivers everything: the peer ended cleanly.)
			st.mu.Unlock()
			return total, errStreamReset
		}
		bufs, eof, off := st.in, st.inEOF, st.off
		st.in, st.off = spare[:0], 0
		st.mu.Unlock()
		if len(bufs) > 0 {
			// WriteTo consumes its slice; bufs keeps the chunks to free.
			wbufs = append(wbufs[:0], bufs...)
			wbufs[0] = wbufs[0][off:]
			size := int64(-off)
			for _, b := range bufs {
				size += int64(len(b))
			}
			nb := net.Buffers(wbufs)
			var n int64
			var err error
			if bw, ok := w.(buffersWriter); ok {
				n, err = bw.WriteBuffers(&nb)
			} else {
				n, err = nb.WriteTo(w)
			}
			total += n
			freeChunks(bufs)
			if err != nil {
				// The stream is over: the bytes the upstream took return to
				// the connection window too, with those it did not.
				st.c.discarded(size)
				return total, err
			}
			st.consumed(n, eof, false)
		}
		spare = bufs[:0]
		if eof {
			return total, nil
		}
	}
}

// consumed returns n bytes that left (to the upstream, or to the client's
// reader) to the flow-control windows, in WINDOW_UPDATEs of at least a
// quarter window each. The connection's reader (fromReader) queues them:
// it never waits on the socket.
func (st *stream) consumed(n int64, eof, fromReader bool) {
	c := st.c
	var sinc uint32
	if !eof {
		st.mu.Lock()
		st.ack += n
		if st.ack >= int64(c.cfg.StreamWindow)/4 {
			sinc = uint32(st.ack)
			st.recvAvail += st.ack
			st.ack = 0
		}
		st.mu.Unlock()
	}
	c.mu.Lock()
	cinc := c.consumedConnLocked(n)
	c.mu.Unlock()
	if sinc == 0 && cinc == 0 {
		return
	}
	updates := func(fr *http2.Framer) error {
		if cinc > 0 {
			if err := fr.WriteWindowUpdate(0, cinc); err != nil {
				return err
			}
		}
		if sinc > 0 && !st.done.Load() {
			return fr.WriteWindowUpdate(st.id, sinc)
		}
		return nil
	}
	if fromReader {
		c.queue(updates)
		return
	}
	_ = c.write(updates)
}

// buffersWriter is a destination that wraps a socket and keeps its writev
// (telemetry's counted connections): net.Buffers.WriteTo on anything but
// a net.Conn of the net package writes the buffers one by one.
type buffersWriter interface {
	WriteBuffers(bufs *net.Buffers) (int64, error)
}

// sink is a destination the connection's reader may write to without
// waiting (sockio.Socket, telemetry's counted connections).
type sink interface {
	TryWrite(p []byte) (int, error)
}

func asSink(w io.Writer) sink {
	if s, ok := w.(sink); ok {
		return s
	}
	if s := sockio.For(w); s != nil {
		return s
	}
	return nil
}

// copyFromUpstream frames what up sends until its EOF or an error. Reads
// land after room for a frame header, so that each read leaves as one DATA
// frame without a copy (see writeFrames).
func (st *stream) copyFromUpstream(up io.Reader) error {
	buf := &st.relay
	defer buf.Release()
	src := asBufferReader(up)
	for {
		var n int
		var rerr error
		if src != nil {
			n, rerr = src.ReadInto(buf)
		} else {
			n, rerr = up.Read(buf.Bytes())
		}
		if n > 0 {
			if err := st.c.writeFrames(st, buf.bytes()[:frameHeaderLen+n]); err != nil {
				return err
			}
			buf.filled(n)
		}
		if rerr != nil {
			return rerr
		}
	}
}

// bufferReader is a source that holds a read's buffer only while it has
// bytes to read (sockio.Socket, telemetry's counted connections).
type bufferReader interface {
	ReadInto(b sockio.Buffer) (int, error)
}

func asBufferReader(r io.Reader) bufferReader {
	if br, ok := r.(bufferReader); ok {
		return br
	}
	if s := sockio.For(r); s != nil {
		return s
	}
	return nil
}

// frameHeaderLen is the size of an HTTP/2 frame header.
const frameHeaderLen = 9

// writeData sends p as DATA frames within the peer's windows and frame
// size; end sets END_STREAM on the last one (an empty frame when p is).
func (c *h2Conn) writeData(st *stream, p []byte, end bool) error {
	for {
		n, err := c.reserve(st, len(p), false, false)
		if err != nil {
			return err
		}
		last := end && n == len(p)
		c.lockWrite()
		sent := false
		if c.werr == nil && !st.done.Load() {
			c.werr = c.fr.WriteData(st.id, last, p[:n])
			sent = true
		}
		err = c.unlockWrite()
		if !sent {
			c.unreserve(n)
		}
		if err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}

// writeFrames is writeData (without END_STREAM) for a buffer the caller
// lets us write in: b[:frameHeaderLen] is free, the payload follows. Each
// frame's header is written in the bytes just before its payload (free
// room, or payload already sent), and header and payload go to TLS in one
// write, after the queued control frames and in the same syscall: no copy
// into the Framer's buffer, and a 64 KiB frame is four full TLS records.
// The frames the windows allow at once (a bulk read is several) leave
// together, in one syscall.
func (c *h2Conn) writeFrames(st *stream, b []byte) error {
	tb, ok := c.rw.(*batchTLS)
	if !ok {
		return c.writeData(st, b[frameHeaderLen:], false)
	}
	var sizes [maxBatchFrames]int
	for off := 0; off < len(b)-frameHeaderLen; {
		// The first frame waits for the windows; the others are taken
		// only when the windows allow them now.
		k, left, start := 0, len(b)-frameHeaderLen-off, off
		for k < len(sizes) && left > 0 {
			n, err := c.reserve(st, left, true, k > 0)
			if err != nil {
				c.unreserve(len(b) - frameHeaderLen - start - left)
				return err
			}
			if n == 0 {
				break
			}
			sizes[k], left, k = n, left-n, k+1
		}
		c.lockWrite()
		if c.werr == nil && !st.done.Load() {
			c.werr = tb.batch(func() error {
				if c.bw.Buffered() > 0 {
					if err := c.bw.Flush(); err != nil {
						return err
					}
				}
				for _, n := range sizes[:k] {
					frame := b[off : off+frameHeaderLen+n]
					putDataHeader(frame, st.id)
					if _, err := tb.Conn.Write(frame); err != nil {
						return err
					}
					off += n
				}
				return nil
			})
		}
		err := c.unlockWrite()
		// Frames not written (the stream was reset while they waited for
		// the lock, or the write failed) give their window back.
		c.unreserve(len(b) - frameHeaderLen - start - left - (off - start))
		if err != nil {
			return err
		}
		if st.done.Load() {
			return errStreamReset
		}
	}
	return nil
}

// unreserve returns n bytes that reserve took for DATA never sent to the
// connection send window (the stream's is moot: it is over).
func (c *h2Conn) unreserve(n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.sendConn += int64(n)
	c.mu.Unlock()
	c.cond.Broadcast()
}

// maxBatchFrames bounds the DATA frames of one write syscall (a bulk
// relay read is four 64 KiB frames).
const maxBatchFrames = 8

// putDataHeader writes the header of a DATA frame (no flags) carrying
// frame[frameHeaderLen:].
func putDataHeader(frame []byte, id uint32) {
	n := len(frame) - frameHeaderLen
	frame[0], frame[1], frame[2] = byte(n>>16), byte(n>>8), byte(n)
	frame[3] = byte(http2.FrameData)
	frame[4] = 0
	frame[5], frame[6], frame[7], frame[8] = byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id)
}

// reserve waits until the windows allow sending and takes up to want
// bytes of them (a frame's worth at most); want 0 takes nothing. With
// align, a frame that cannot carry all of want ends on a TLS record
// boundary (header included), so that no record is left part-filled. With
// noWait it takes what the windows allow now, possibly 0.
func (c *h2Conn) reserve(st *stream, want int, align, noWait bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for want > 0 && !noWait && !st.done.Load() && !c.closed && (st.sendWin <= 0 || c.sendConn <= 0) {
		c.cond.Wait()
	}
	if st.done.Load() || c.closed {
		return 0, errStreamReset
	}
	if want == 0 || st.sendWin <= 0 || c.sendConn <= 0 {
		// An empty END_STREAM frame: flow control does not count it, and
		// a window the peer's SETTINGS made negative must not size it.
		return 0, nil
	}
	n := int(min(int64(want), st.sendWin, c.sendConn, int64(c.peerMax)))
	if align && n < want && n+frameHeaderLen > maxRecordPlaintext {
		n = (n+frameHeaderLen)/maxRecordPlaintext*maxRecordPlaintext - frameHeaderLen
	}
	st.sendWin -= int64(n)
	c.sendConn -= int64(n)
	return n, nil
}

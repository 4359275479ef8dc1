package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ambitmesh/ambit/internal/identity"
)

// DialRequest is one tunnel to open.
type DialRequest struct {
	// Address is the HBONE endpoint: the destination node's (or waypoint's)
	// ip:15008.
	Address netip.AddrPort
	// Authority is the CONNECT :authority: the original destination
	// "ip:port" (the service VIP:port through a waypoint), or "fqdn:port"
	// for a multi-network gateway.
	Authority string
	// Source is the local identity presented in the client certificate.
	Source spiffeid.ID
	// Destination is the identities the server may present (its URI SAN
	// must be one of them). Order does not matter.
	Destination []spiffeid.ID
	// SourceIP, when valid, is the local address of the outer TCP connection
	// (the workload's IP when spoofing the source); it is part of the pool key.
	SourceIP netip.Addr

	Forwarded Forwarded // sent when For is valid or Host is set
	Baggage   Baggage   // sent when any member is set
	// TraceParent is sent as given, or a fresh one when it is the zero value.
	TraceParent TraceParent

	// Body, when set, is read by the stream itself for the bytes to send,
	// from the 200 answer until EOF (which ends the sending side), instead
	// of Conn.Write: relaying a socket this way saves a goroutine hand-off
	// and a pipe copy per chunk. Conn.Write and CloseWrite then fail; wait
	// on Conn.Sent instead. Closing the Conn stops a blocked Read by setting
	// a past read deadline when Body has SetReadDeadline (a net.Conn does).
	Body io.Reader
}

// DialerConfig configures a Dialer. Zero values take the defaults per field.
type DialerConfig struct {
	Source identity.Source  // local certificates (required)
	Bundle *identity.Bundle // roots the server must chain to (required)
	Logger *slog.Logger     // default slog.Default()
	// DialTCP opens the outer TCP connection from src (invalid: any) to dst.
	// Default: net.Dialer binding src. A node proxy sets socket marks and
	// the network namespace here.
	DialTCP func(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error)

	HandshakeTimeout  time.Duration // TCP connect + TLS handshake; default 10s
	IdleTimeout       time.Duration // close a pooled connection after this long with no stream; default 5m
	MaxStreamsPerConn int           // streams per connection before opening another; default 100 (lowered by the server's SETTINGS)
	StreamWindow      int32         // default 4 MiB
	ConnWindow        int32         // default 16 MiB
	MaxFrameSize      uint32        // default 64 KiB
	// PingInterval/PingTimeout: see ServerConfig. Defaults 30s and 15s.
	PingInterval, PingTimeout time.Duration
	// Linger bounds how long Close waits, in the background, for data
	// already written to be handed to the connection before resetting the
	// stream. Default 30s.
	Linger time.Duration
}

func (c DialerConfig) withDefaults() DialerConfig {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.IdleTimeout, 5*time.Minute)
	def(&c.PingInterval, 30*time.Second)
	def(&c.PingTimeout, 15*time.Second)
	def(&c.Linger, 30*time.Second)
	if c.MaxStreamsPerConn <= 0 {
		c.MaxStreamsPerConn = 100
	}
	if c.StreamWindow <= 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	if c.ConnWindow <= 0 {
		c.ConnWindow = DefaultConnWindow
	}
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.DialTCP == nil {
		c.DialTCP = func(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			if src.IsValid() {
				d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
			}
			return d.DialContext(ctx, "tcp", dst.String())
		}
	}
	return c
}

// PoolKey identifies connections that may carry each other's streams
// (ztunnel's WorkloadKey).
type PoolKey struct {
	Source      spiffeid.ID
	Destination string // the destination identities, sorted, space-separated
	Address     netip.AddrPort
	SourceIP    netip.Addr
}

func keyOf(req *DialRequest) PoolKey {
	ids := make([]string, len(req.Destination))
	for i, id := range req.Destination {
		ids[i] = id.String()
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return PoolKey{Source: req.Source, Destination: strings.Join(ids, " "), Address: req.Address, SourceIP: req.SourceIP}
}

// Dialer opens HBONE tunnels over a pool of mTLS HTTP/2 connections. The
// connections run on the same HTTP/2 layer as the server (conn.go): one
// reader goroutine per connection drops DATA into the stream's buffer,
// which the caller's Read or WriteTo drains; writes are framed by the
// writing goroutine itself under the connection's write lock.
type Dialer struct {
	cfg DialerConfig
	log *slog.Logger

	mu     sync.Mutex
	pools  map[PoolKey]*keyPool
	closed bool
}

type keyPool struct {
	conns   []*poolConn
	dialing chan struct{} // non-nil while the one dial for this key runs
}

type poolConn struct {
	key     PoolKey
	c       *h2Conn
	streams int // guarded by Dialer.mu
	idleGen uint64
	idle    *time.Timer
}

// clientSide is what only the client side of an h2Conn needs.
type clientSide struct {
	nextID       uint32        // next stream id, under h2Conn.mu
	settings     chan struct{} // closed on the server's first SETTINGS
	settingsOnce sync.Once
}

// NewDialer checks cfg; it does no I/O.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if cfg.Source == nil || cfg.Bundle == nil {
		return nil, errors.New("hbone: DialerConfig needs a certificate Source and a Bundle")
	}
	cfg = cfg.withDefaults()
	if cfg.MaxFrameSize < 16<<10 || cfg.MaxFrameSize > 1<<24-1 {
		return nil, fmt.Errorf("hbone: DialerConfig.MaxFrameSize %d outside HTTP/2's 16384..16777215", cfg.MaxFrameSize)
	}
	if cfg.ConnWindow < 65535 {
		// The connection window starts at 65535 and SETTINGS cannot lower it.
		return nil, fmt.Errorf("hbone: DialerConfig.ConnWindow %d is below HTTP/2's initial connection window 65535; use at least that", cfg.ConnWindow)
	}
	return &Dialer{cfg: cfg, log: cfg.Logger, pools: make(map[PoolKey]*keyPool)}, nil
}

// Dial opens a CONNECT stream to req.Authority through req.Address and
// returns it once the server answered 200. A non-200 answer is a
// *StatusError. The net.Conn is a *Conn; closing it releases its slot in
// the pool.
func (d *Dialer) Dial(ctx context.Context, req *DialRequest) (net.Conn, error) {
	if err := validate(req); err != nil {
		return nil, err
	}
	key := keyOf(req)
	pc, err := d.acquire(ctx, key, req)
	if err != nil {
		return nil, err
	}
	c, err := d.open(ctx, pc, req)
	if err != nil {
		d.release(pc)
		return nil, err
	}
	return c, nil
}

func validate(req *DialRequest) error {
	if req == nil {
		return errors.New("hbone: nil DialRequest")
	}
	if !req.Address.IsValid() || req.Address.Port() == 0 {
		return fmt.Errorf("hbone: DialRequest.Address %q: want the HBONE ip:port (e.g. 10.0.0.7:15008)", req.Address)
	}
	host, port, err := net.SplitHostPort(req.Authority)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("hbone: DialRequest.Authority %q: want ip:port or fqdn:port", req.Authority)
	}
	if req.Source.IsZero() {
		return errors.New("hbone: DialRequest.Source is empty; want the local SPIFFE ID")
	}
	if len(req.Destination) == 0 {
		return fmt.Errorf("hbone: dial %s: DialRequest.Destination is empty; want the destination's SPIFFE IDs", req.Address)
	}
	return nil
}

// acquire returns a pooled connection with a free stream slot (counted as
// taken), dialing one when none has room. Only one dial per key runs at a
// time; callers arriving meanwhile wait for it and then re-check.
func (d *Dialer) acquire(ctx context.Context, key PoolKey, req *DialRequest) (*poolConn, error) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, fmt.Errorf("hbone: dial %s: dialer closed", key.Address)
		}
		kp := d.pools[key]
		if kp == nil {
			kp = &keyPool{}
			d.pools[key] = kp
		}
		if pc := d.pickLocked(kp); pc != nil {
			d.mu.Unlock()
			return pc, nil
		}
		if ch := kp.dialing; ch != nil {
			d.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("hbone: dial %s: %w", key.Address, ctx.Err())
			}
		}
		ch := make(chan struct{})
		kp.dialing = ch
		d.mu.Unlock()

		pc, err := d.dialConn(ctx, key, req)

		d.mu.Lock()
		kp.dialing = nil
		close(ch)
		if err != nil {
			if len(kp.conns) == 0 && d.pools[key] == kp {
				delete(d.pools, key)
			}
			d.mu.Unlock()
			return nil, err
		}
		if d.closed {
			d.mu.Unlock()
			pc.c.close()
			return nil, fmt.Errorf("hbone: dial %s: dialer closed", key.Address)
		}
		pc.streams = 1
		kp.conns = append(kp.conns, pc)
		d.mu.Unlock()
		return pc, nil
	}
}

// pickLocked takes a slot on a live connection with room, dropping dead ones.
func (d *Dialer) pickLocked(kp *keyPool) *poolConn {
	live := kp.conns[:0]
	var found *poolConn
	for _, pc := range kp.conns {
		open, peerMax := pc.c.clientState()
		if !open && pc.streams == 0 {
			d.stopIdleLocked(pc)
			pc.c.close()
			continue
		}
		live = append(live, pc)
		if found == nil && open && pc.streams < d.maxStreams(peerMax) {
			found = pc
		}
	}
	clear(kp.conns[len(live):])
	kp.conns = live
	if found != nil {
		found.streams++
		d.stopIdleLocked(found)
	}
	return found
}

// maxStreams is the streams a connection may carry: ours, or fewer when
// the server's SETTINGS_MAX_CONCURRENT_STREAMS is lower.
func (d *Dialer) maxStreams(peerMax int) int {
	m := d.cfg.MaxStreamsPerConn
	if peerMax >= 0 && peerMax < m {
		m = peerMax
	}
	return m
}

func (d *Dialer) stopIdleLocked(pc *poolConn) {
	pc.idleGen++
	if pc.idle != nil {
		pc.idle.Stop()
		pc.idle = nil
	}
}

// release gives back a stream slot; the last one arms the idle timer, or
// closes a connection that takes no new streams.
func (d *Dialer) release(pc *poolConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pc.streams--
	if pc.streams > 0 {
		return
	}
	if open, _ := pc.c.clientState(); !open {
		d.dropLocked(pc)
		pc.c.close()
		return
	}
	pc.idleGen++
	gen := pc.idleGen
	pc.idle = time.AfterFunc(d.cfg.IdleTimeout, func() { d.expire(pc, gen) })
}

func (d *Dialer) dropLocked(pc *poolConn) {
	if kp := d.pools[pc.key]; kp != nil {
		kp.conns = slices.DeleteFunc(kp.conns, func(c *poolConn) bool { return c == pc })
		if len(kp.conns) == 0 && kp.dialing == nil {
			delete(d.pools, pc.key)
		}
	}
}

func (d *Dialer) expire(pc *poolConn, gen uint64) {
	d.mu.Lock()
	if pc.idleGen != gen || pc.streams != 0 {
		d.mu.Unlock()
		return
	}
	pc.idle = nil
	d.dropLocked(pc)
	d.mu.Unlock()
	d.log.Debug("hbone: idle connection released", "address", pc.key.Address.String(), "peer", pc.c.peer.String())
	pc.c.close()
}

// Conns reports how many pooled connections exist, per key.
func (d *Dialer) Conns() map[PoolKey]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[PoolKey]int, len(d.pools))
	for k, kp := range d.pools {
		if len(kp.conns) > 0 {
			out[k] = len(kp.conns)
		}
	}
	return out
}

// Close closes every pooled connection (streams on them fail) and makes
// later Dials fail.
func (d *Dialer) Close() error {
	d.mu.Lock()
	d.closed = true
	var all []*poolConn
	for _, kp := range d.pools {
		all = append(all, kp.conns...)
		for _, pc := range kp.conns {
			d.stopIdleLocked(pc)
		}
	}
	d.pools = make(map[PoolKey]*keyPool)
	d.mu.Unlock()
	for _, pc := range all {
		pc.c.close()
	}
	return nil
}

func (d *Dialer) dialConn(ctx context.Context, key PoolKey, req *DialRequest) (*poolConn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.HandshakeTimeout)
	defer cancel()
	raw, err := d.cfg.DialTCP(ctx, key.SourceIP, key.Address)
	if err != nil {
		return nil, fmt.Errorf("hbone: dial %s: %w", key.Address, err)
	}
	tlsCfg, err := identity.ClientConfig(d.cfg.Source, d.cfg.Bundle, req.Source, req.Destination, "h2")
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("hbone: dial %s: %w", key.Address, err)
	}
	// Records go out whole (16 KiB): dynamic sizing only helps a browser's
	// first paint, and a tunnel's writes are batched below TLS anyway.
	tlsCfg.DynamicRecordSizingDisabled = true
	bc := newBatchConn(raw)
	tc := tls.Client(bc, tlsCfg)
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("hbone: dial %s: TLS handshake: %w", key.Address, err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != "h2" {
		_ = raw.Close()
		return nil, fmt.Errorf("hbone: dial %s: server negotiated ALPN %q; want \"h2\"", key.Address, cs.NegotiatedProtocol)
	}
	peer, err := identity.PeerID(cs)
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("hbone: dial %s: %w", key.Address, err)
	}
	local, _ := netip.ParseAddrPort(raw.LocalAddr().String())
	c := newH2Conn(context.Background(), connConfig{
		StreamWindow: d.cfg.StreamWindow, ConnWindow: d.cfg.ConnWindow, MaxFrameSize: d.cfg.MaxFrameSize,
		HandshakeTimeout: d.cfg.HandshakeTimeout, PingInterval: d.cfg.PingInterval, PingTimeout: d.cfg.PingTimeout,
	}, d.log, raw, newBatchTLS(tc, bc), peer, local, key.Address)
	c.cl = &clientSide{nextID: 1, settings: make(chan struct{})}
	// The preface and our SETTINGS go out under the handshake deadline.
	if err := c.write(func(fr *http2.Framer) error {
		if _, err := c.bw.Write(clientPreface); err != nil {
			return err
		}
		return c.writeSettings(fr, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("hbone: dial %s: HTTP/2 preface: %w", key.Address, err)
	}
	_ = raw.SetWriteDeadline(time.Time{})
	go c.serve(context.Background())
	// The server's SETTINGS (its stream limit) come before the first stream.
	select {
	case <-c.cl.settings:
		return &poolConn{key: key, c: c}, nil
	case <-c.ctx.Done():
		err = c.endErr()
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.close()
	return nil, fmt.Errorf("hbone: dial %s: HTTP/2 SETTINGS: %w", key.Address, err)
}

// clientState reports whether the connection takes new streams and the
// server's stream limit (-1 before its SETTINGS).
func (c *h2Conn) clientState() (open bool, peerMax int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.goAway && c.cl.nextID < 1<<31-1, c.peerStreams
}

// close ends the connection; its reader then fails every stream.
func (c *h2Conn) close() { _ = c.raw.Close() }

// endErr is why a connection ended (after c.ctx is done).
func (c *h2Conn) endErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endCause != nil {
		return c.endCause
	}
	return errConnClosed
}

func (d *Dialer) open(ctx context.Context, pc *poolConn, req *DialRequest) (*Conn, error) {
	fail := func(err error) error {
		return fmt.Errorf("hbone: CONNECT %s via %s: %w", req.Authority, req.Address, err)
	}
	tp := req.TraceParent
	if !tp.IsValid() {
		tp = NewTraceParent()
	}
	c := pc.c
	block := requestBlock(req, tp)
	if len(block) > c.peerMaxFrame() {
		return nil, fail(fmt.Errorf("request headers are %d bytes, over the server's frame size", len(block)))
	}
	st := &stream{c: c, wake: make(chan struct{}, 1), recvAvail: int64(c.cfg.StreamWindow), opened: make(chan struct{})}
	st.ctx, st.cancel = context.WithCancel(c.ctx)

	// The stream id is taken and HEADERS written under the write lock, so
	// that ids reach the wire in increasing order.
	c.lockWrite()
	c.mu.Lock()
	if c.closed || c.goAway || c.werr != nil {
		c.mu.Unlock()
		_ = c.unlockWrite()
		st.cancel()
		return nil, fail(errors.New("connection no longer takes streams (GOAWAY or closed)"))
	}
	st.id = c.cl.nextID
	c.cl.nextID += 2
	c.lastID = st.id
	st.sendWin = c.peerInit
	c.streams[st.id] = st
	c.unfinished++
	c.mu.Unlock()
	if c.werr == nil {
		c.werr = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: block, EndHeaders: true})
	}
	if err := c.unlockWrite(); err != nil {
		c.remove(st)
		return nil, fail(err)
	}

	select {
	case <-st.opened:
	case <-ctx.Done():
		c.resetStream(st, http2.ErrCodeCancel)
		st.freeIn() // the answer and some data may have come meanwhile
		return nil, fail(ctx.Err())
	}
	c.mu.Lock()
	status := st.status
	c.mu.Unlock()
	switch {
	case status == 0:
		return nil, fail(st.failure())
	case status != http.StatusOK:
		if !st.done.Load() {
			c.resetStream(st, http2.ErrCodeCancel)
		}
		st.freeIn()
		return nil, fail(&StatusError{Code: status})
	}
	conn := &Conn{
		d:       d,
		pc:      pc,
		st:      st,
		body:    req.Body,
		peer:    c.peer,
		trace:   tp,
		local:   net.TCPAddrFromAddrPort(c.local),
		remote:  net.TCPAddrFromAddrPort(c.remote),
		sent:    make(chan struct{}),
		wsem:    make(chan struct{}, 1),
		closing: make(chan struct{}),
	}
	if req.Body != nil {
		conn.bodyDone = make(chan struct{})
		go conn.sendBody()
	}
	return conn, nil
}

func (c *h2Conn) peerMaxFrame() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerMax
}

// requestBlock is the HPACK block of the CONNECT. Like statusBlock it
// never indexes, so it depends on no encoder state and streams may be
// opened from any goroutine.
func requestBlock(req *DialRequest, tp TraceParent) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	field := func(name, value string) {
		_ = enc.WriteField(hpack.HeaderField{Name: name, Value: value, Sensitive: true})
	}
	field(":method", http.MethodConnect)
	field(":authority", req.Authority)
	if req.Forwarded.For.IsValid() || req.Forwarded.Host != "" {
		field("forwarded", req.Forwarded.String())
	}
	if b := req.Baggage.String(); b != "" {
		field("baggage", b)
	}
	field("traceparent", tp.String())
	return buf.Bytes()
}

// onResponse handles a response header block on the client side.
func (c *h2Conn) onResponse(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	st := c.streams[id]
	if st == nil {
		idle := id%2 == 0 || id > c.lastID
		c.mu.Unlock()
		if idle {
			return connErr(http2.ErrCodeProtocol, "HEADERS on idle stream %d", id)
		}
		return nil // a stream we reset, or that ended
	}
	if st.status != 0 {
		// Trailers: a CONNECT response has none worth reading, but they
		// must end the stream.
		c.mu.Unlock()
		if !f.StreamEnded() {
			c.resetStream(st, http2.ErrCodeProtocol)
			return nil
		}
		st.endRemote()
		return nil
	}
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || code < 100 || code > 999 {
		c.mu.Unlock()
		c.log.Warn("hbone: stream reset", "peer", c.peer.String(), "remote", c.remote.String(), "reason", fmt.Sprintf("response with :status %q", f.PseudoValue("status")))
		c.resetStream(st, http2.ErrCodeProtocol)
		return nil
	}
	if code < 200 {
		// Informational: the final answer follows.
		c.mu.Unlock()
		if f.StreamEnded() {
			c.resetStream(st, http2.ErrCodeProtocol)
		}
		return nil
	}
	st.status = code
	st.openedLocked()
	c.mu.Unlock()
	if f.StreamEnded() {
		st.endRemote()
	}
	return nil
}

// onGoAway: no new streams on this connection; the streams the server
// says it never processed fail (the caller may retry them elsewhere).
func (c *h2Conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goAway = true
	for id, st := range c.streams {
		if id > f.LastStreamID {
			st.fail(fmt.Errorf("refused by GOAWAY (%v)", f.ErrCode))
			c.removeLocked(st)
		}
	}
	if c.unfinished == 0 {
		c.closeAfterFlush()
	}
}

// openedLocked wakes Dial: the answer arrived or the stream ended.
func (st *stream) openedLocked() {
	if st.opened != nil && !st.openedDone {
		st.openedDone = true
		close(st.opened)
	}
}

// fail records why the stream ended, for the client's Dial, Read and
// Write; the first cause wins.
func (st *stream) fail(err error) {
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.mu.Unlock()
}

func (st *stream) failure() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err != nil {
		return st.err
	}
	return errStreamReset
}

// freeIn drops the bytes still buffered (the stream ended: nobody will
// read them) and gives them back to the connection window.
func (st *stream) freeIn() {
	st.mu.Lock()
	n := -int64(st.off)
	for _, b := range st.in {
		n += int64(len(b))
	}
	freeChunks(st.in)
	st.in, st.off = nil, 0
	st.mu.Unlock()
	st.c.discarded(n)
}

// Conn is one HBONE stream. Reads return what the server's upstream sent;
// writes go to it; CloseWrite sends END_STREAM (a TCP half-close on the far
// side). Deadlines are not supported (os.ErrNoDeadline); close the Conn to
// abort blocked calls.
type Conn struct {
	d      *Dialer
	pc     *poolConn
	st     *stream
	body   io.Reader
	local  net.Addr
	remote net.Addr
	peer   spiffeid.ID
	trace  TraceParent

	rmu      sync.Mutex    // one reader at a time (window accounting)
	wsem     chan struct{} // one writer at a time; Close's linger waits for it
	wEnded   bool          // CloseWrite done, under wsem
	bodyDone chan struct{} // DialRequest.Body: the sending goroutine ended
	sent     chan struct{}
	sentOnce sync.Once

	closeOnce sync.Once
	closing   chan struct{}
}

var (
	errStreamDone = errors.New("hbone: stream closed")
	errBodyMode   = errors.New("hbone: the stream sends DialRequest.Body; Write and CloseWrite are not available")
)

// Read reads bytes the far side sent.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	st := c.st
	st.mu.Lock()
	for len(st.in) == 0 && !st.inEOF && !st.reset {
		st.mu.Unlock()
		<-st.wake
		st.mu.Lock()
	}
	if st.reset && !st.inEOF {
		st.mu.Unlock()
		return 0, c.ioErr()
	}
	n := 0
	for n < len(p) && len(st.in) > 0 {
		k := copy(p[n:], st.in[0][st.off:])
		n += k
		st.off += k
		if st.off == len(st.in[0]) {
			chunkPool.Put((*[chunkSize]byte)(st.in[0][:chunkSize]))
			st.in[0] = nil
			st.in, st.off = st.in[1:], 0
		}
	}
	eof := st.inEOF && len(st.in) == 0
	st.mu.Unlock()
	if n > 0 {
		st.consumed(int64(n), eof, false)
		return n, nil
	}
	return 0, io.EOF
}

// WriteTo writes what the far side sends to w until its END_STREAM (io.Copy
// uses it): each batch that arrived leaves in one writev, without a copy.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.st.drainTo(w)
	if errors.Is(err, errStreamReset) {
		err = c.ioErr()
	}
	return n, err
}

// ioErr is what Read and Write return on a stream that ended.
func (c *Conn) ioErr() error {
	select {
	case <-c.closing:
		return net.ErrClosed
	default:
	}
	return fmt.Errorf("hbone: stream to %s: %w", c.remote, c.st.failure())
}

// Write sends bytes; it returns once they are framed (flow control may
// block it).
func (c *Conn) Write(p []byte) (int, error) {
	if c.body != nil {
		return 0, errBodyMode
	}
	select {
	case c.wsem <- struct{}{}:
	case <-c.closing:
		return 0, net.ErrClosed
	}
	defer func() { <-c.wsem }()
	if c.wEnded {
		return 0, fmt.Errorf("hbone: write after CloseWrite: %w", net.ErrClosed)
	}
	if err := c.st.c.writeData(c.st, p, false); err != nil {
		return 0, c.ioErr()
	}
	return len(p), nil
}

// CloseWrite ends the sending side (END_STREAM); reads keep working.
func (c *Conn) CloseWrite() error {
	if c.body != nil {
		return errBodyMode
	}
	select {
	case c.wsem <- struct{}{}:
	case <-c.closing:
		return net.ErrClosed
	}
	defer func() { <-c.wsem }()
	if c.wEnded {
		return nil
	}
	c.wEnded = true
	defer c.markSent()
	c.st.endLocal()
	if err := c.st.c.writeData(c.st, nil, true); err != nil {
		return c.ioErr()
	}
	return nil
}

// sendBody frames DialRequest.Body until its EOF (END_STREAM). A read
// error (the Conn was closed, or the stream ended and stopped the read)
// resets the stream.
func (c *Conn) sendBody() {
	defer close(c.bodyDone)
	defer c.markSent()
	st := c.st
	// A stream that ends (reset, connection lost, Close) stops a Read
	// waiting on the source: a past read deadline, when it has one.
	// Sent must not fire while that deadline is still to be set: the caller
	// may use its source again once Sent is closed.
	stopped := make(chan struct{})
	stop := context.AfterFunc(st.ctx, func() { defer close(stopped); c.stopBody() })
	defer func() {
		if !stop() {
			<-stopped
		}
	}()
	err := st.copyFromUpstream(c.body)
	if errors.Is(err, io.EOF) {
		st.endLocal()
		_ = st.c.writeData(st, nil, true)
		return
	}
	if !st.done.Load() {
		st.c.resetStream(st, http2.ErrCodeCancel)
	}
}

func (c *Conn) stopBody() {
	if d, ok := c.body.(interface{ SetReadDeadline(time.Time) error }); ok {
		// The caller's reader is not ours to close.
		_ = d.SetReadDeadline(time.Unix(1, 0))
	}
}

func (c *Conn) markSent() { c.sentOnce.Do(func() { close(c.sent) }) }

// Sent is closed once the sending side is over: the writer's EOF (or
// DialRequest.Body's) went out as END_STREAM, or the stream ended.
func (c *Conn) Sent() <-chan struct{} { return c.sent }

// Close ends the stream and releases its pool slot. Bytes already written
// are still delivered (it waits in the background up to Linger for them to
// leave) before the stream is reset.
func (c *Conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closing)
		if c.body != nil {
			// A Body read was framed as soon as it returned; only a Read
			// still waiting for the source remains, and it is stopped.
			c.stopBody()
		}
		go c.finish()
	})
	if !first {
		return net.ErrClosed
	}
	return nil
}

func (c *Conn) finish() {
	t := time.NewTimer(c.d.cfg.Linger)
	defer t.Stop()
	if c.bodyDone != nil {
		select {
		case <-c.bodyDone:
		case <-t.C:
		}
	} else {
		// A Write in progress finishes framing what it was given.
		select {
		case c.wsem <- struct{}{}:
		case <-t.C:
		}
	}
	st := c.st
	st.mu.Lock()
	ended := st.inEOF && st.localEnded
	st.mu.Unlock()
	if ended || st.done.Load() {
		st.c.remove(st)
	} else {
		st.c.resetStream(st, http2.ErrCodeCancel)
	}
	st.freeIn()
	c.d.release(c.pc)
	c.markSent()
}

// LocalAddr is the outer connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the outer connection's remote address (the HBONE endpoint).
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// PeerID is the server's verified SPIFFE ID.
func (c *Conn) PeerID() spiffeid.ID { return c.peer }

// TraceParent is the trace context sent with the CONNECT.
func (c *Conn) TraceParent() TraceParent { return c.trace }

// SetDeadline is not supported.
func (c *Conn) SetDeadline(time.Time) error { return os.ErrNoDeadline }

// SetReadDeadline is not supported.
func (c *Conn) SetReadDeadline(time.Time) error { return os.ErrNoDeadline }

// SetWriteDeadline is not supported.
func (c *Conn) SetWriteDeadline(time.Time) error { return os.ErrNoDeadline }

package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

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

// Dialer opens HBONE tunnels over a pool of mTLS HTTP/2 connections.
type Dialer struct {
	cfg DialerConfig
	t2  *http2.Transport
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
	cc      *http2.ClientConn
	tc      *tls.Conn
	peer    spiffeid.ID
	streams int // guarded by Dialer.mu
	idleGen uint64
	idle    *time.Timer
}

// NewDialer checks cfg; it does no I/O.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if cfg.Source == nil || cfg.Bundle == nil {
		return nil, errors.New("hbone: DialerConfig needs a certificate Source and a Bundle")
	}
	cfg = cfg.withDefaults()
	t1 := &http.Transport{
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     int(cfg.StreamWindow),
			MaxReceiveBufferPerConnection: int(cfg.ConnWindow),
			MaxReadFrameSize:              int(cfg.MaxFrameSize),
		},
	}
	t2, err := http2.ConfigureTransports(t1)
	if err != nil {
		return nil, fmt.Errorf("hbone: HTTP/2 transport: %w", err)
	}
	t2.DisableCompression = true
	t2.ReadIdleTimeout = cfg.PingInterval
	t2.PingTimeout = cfg.PingTimeout
	return &Dialer{cfg: cfg, t2: t2, log: cfg.Logger, pools: make(map[PoolKey]*keyPool)}, nil
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
			_ = pc.cc.Close()
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
		st := pc.cc.State()
		if st.Closed || st.Closing {
			if pc.streams == 0 {
				d.stopIdleLocked(pc)
				go pc.cc.Close()
				continue
			}
			live = append(live, pc)
			continue
		}
		live = append(live, pc)
		if found == nil && pc.streams < d.maxStreams(st) && pc.cc.CanTakeNewRequest() {
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

func (d *Dialer) maxStreams(st http2.ClientConnState) int {
	m := d.cfg.MaxStreamsPerConn
	if st.MaxConcurrentStreams > 0 && int(st.MaxConcurrentStreams) < m {
		m = int(st.MaxConcurrentStreams)
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

// release gives back a stream slot; the last one arms the idle timer.
func (d *Dialer) release(pc *poolConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pc.streams--
	if pc.streams > 0 {
		return
	}
	pc.idleGen++
	gen := pc.idleGen
	pc.idle = time.AfterFunc(d.cfg.IdleTimeout, func() { d.expire(pc, gen) })
}

func (d *Dialer) expire(pc *poolConn, gen uint64) {
	d.mu.Lock()
	if pc.idleGen != gen || pc.streams != 0 {
		d.mu.Unlock()
		return
	}
	pc.idle = nil
	if kp := d.pools[pc.key]; kp != nil {
		kp.conns = slices.DeleteFunc(kp.conns, func(c *poolConn) bool { return c == pc })
		if len(kp.conns) == 0 && kp.dialing == nil {
			delete(d.pools, pc.key)
		}
	}
	d.mu.Unlock()
	d.log.Debug("hbone: idle connection released", "address", pc.key.Address.String(), "peer", pc.peer.String())
	_ = pc.cc.Close()
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
		_ = pc.cc.Close()
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
	// NewClientConn writes the preface and SETTINGS; the deadline bounds it.
	cc, err := d.t2.NewClientConn(newBatchTLS(tc, bc))
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("hbone: dial %s: HTTP/2: %w", key.Address, err)
	}
	_ = raw.SetDeadline(time.Time{})
	return &poolConn{key: key, cc: cc, tc: tc, peer: peer}, nil
}

func (d *Dialer) open(ctx context.Context, pc *poolConn, req *DialRequest) (*Conn, error) {
	h := make(http.Header, 4)
	// An empty value keeps x/net from adding its Go-http-client User-Agent.
	h["User-Agent"] = []string{""}
	if req.Forwarded.For.IsValid() || req.Forwarded.Host != "" {
		h[HeaderForwarded] = []string{req.Forwarded.String()}
	}
	if b := req.Baggage.String(); b != "" {
		h[HeaderBaggage] = []string{b}
	}
	tp := req.TraceParent
	if !tp.IsValid() {
		tp = NewTraceParent()
	}
	h[HeaderTraceParent] = []string{tp.String()}

	body := &requestBody{sent: make(chan struct{}), closed: make(chan struct{})}
	var pw *io.PipeWriter
	if req.Body != nil {
		body.r = req.Body
		body.ready = make(chan struct{})
	} else {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		body.r, body.pr = pr, pr
	}
	fail := func(err error) {
		_ = body.Close()
		if pw != nil {
			_ = pw.CloseWithError(err)
		}
	}
	// The stream outlives ctx (which only bounds the opening); its own
	// context is cancelled by Close, which resets the stream.
	sctx, scancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, scancel)
	hreq := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: req.Authority},
		Host:          req.Authority,
		Header:        h,
		Body:          body,
		ContentLength: -1,
	}).WithContext(sctx)
	resp, err := pc.cc.RoundTrip(hreq)
	stopped := stop()
	if err != nil {
		scancel()
		fail(err)
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", req.Authority, req.Address, err)
	}
	if !stopped {
		// ctx ended just as the answer arrived: the stream is being reset.
		_ = resp.Body.Close()
		fail(ctx.Err())
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", req.Authority, req.Address, ctx.Err())
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		fail(errStreamDone)
		scancel()
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", req.Authority, req.Address, &StatusError{Code: resp.StatusCode})
	}
	if body.ready != nil {
		close(body.ready)
	}
	return &Conn{
		d:       d,
		pc:      pc,
		resp:    resp.Body,
		pw:      pw,
		body:    body,
		cancel:  scancel,
		local:   pc.tc.LocalAddr(),
		remote:  pc.tc.RemoteAddr(),
		peer:    pc.peer,
		trace:   tp,
		closing: make(chan struct{}),
	}, nil
}

// requestBody is what x/net reads the stream's outgoing bytes from: the
// pipe Conn.Write feeds, or DialRequest.Body. It reports when the sending
// side is over: the EOF was consumed (every earlier byte has then been
// framed and flushed) or x/net is done with it.
type requestBody struct {
	r     io.Reader
	pr    *io.PipeReader // nil with DialRequest.Body
	ready chan struct{}  // DialRequest.Body only: closed on the 200 answer
	// started is touched only by x/net's one body-writing goroutine.
	started   bool
	sent      chan struct{}
	closed    chan struct{}
	sentOnce  sync.Once
	closeOnce sync.Once
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.ready != nil && !b.started {
		// Nothing leaves before the server accepted the stream, as when the
		// caller writes after Dial returned.
		select {
		case <-b.ready:
		case <-b.closed:
			return 0, errStreamDone
		}
		b.started = true
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.sentOnce.Do(func() { close(b.sent) })
	}
	return n, err
}

func (b *requestBody) Close() error {
	b.closeOnce.Do(func() {
		close(b.closed)
		b.sentOnce.Do(func() { close(b.sent) })
		if b.pr != nil {
			_ = b.pr.CloseWithError(errStreamDone)
		} else if d, ok := b.r.(interface{ SetReadDeadline(time.Time) error }); ok {
			// Unblocks a Read in progress; the caller's reader is not ours to close.
			_ = d.SetReadDeadline(time.Unix(1, 0))
		}
	})
	return nil
}

var errStreamDone = errors.New("hbone: stream closed")

// Conn is one HBONE stream. Reads return what the server's upstream sent;
// writes go to it; CloseWrite sends END_STREAM (a TCP half-close on the far
// side). Deadlines are not supported (os.ErrNoDeadline); close the Conn to
// abort blocked calls.
type Conn struct {
	d      *Dialer
	pc     *poolConn
	resp   io.ReadCloser
	pw     *io.PipeWriter
	body   *requestBody
	cancel context.CancelFunc
	local  net.Addr
	remote net.Addr
	peer   spiffeid.ID
	trace  TraceParent

	closeOnce sync.Once
	closing   chan struct{}
}

// Read reads bytes the far side sent.
func (c *Conn) Read(p []byte) (int, error) { return c.resp.Read(p) }

var errBodyMode = errors.New("hbone: the stream sends DialRequest.Body; Write and CloseWrite are not available")

// Write sends bytes; it returns once HTTP/2 took them (flow control may
// block it).
func (c *Conn) Write(p []byte) (int, error) {
	if c.pw == nil {
		return 0, errBodyMode
	}
	n, err := c.pw.Write(p)
	if err != nil {
		select {
		case <-c.closing:
			return n, net.ErrClosed
		default:
		}
	}
	return n, err
}

// CloseWrite ends the sending side (END_STREAM); reads keep working.
func (c *Conn) CloseWrite() error {
	if c.pw == nil {
		return errBodyMode
	}
	return c.pw.Close()
}

// Sent is closed once the sending side is over: the writer's EOF (or
// DialRequest.Body's) went out as END_STREAM, or the stream ended.
func (c *Conn) Sent() <-chan struct{} { return c.body.sent }

// Close ends the stream and releases its pool slot. Bytes already written
// are still delivered (it waits in the background up to Linger for them to
// leave) before the stream is reset.
func (c *Conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closing)
		if c.pw != nil {
			_ = c.pw.Close()
		} else {
			// A Body read was handed to HTTP/2 as soon as it returned; only a
			// Read still waiting for the source remains, and it is stopped.
			_ = c.body.Close()
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
	select {
	case <-c.body.sent:
	case <-t.C:
	}
	t.Stop()
	_ = c.resp.Close()
	c.cancel()
	c.d.release(c.pc)
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

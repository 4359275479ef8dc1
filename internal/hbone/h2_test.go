package hbone_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/identity"
)

// rawConn is an HTTP/2 client speaking frames directly over mTLS, for what
// the Dialer never does (resets, windows, malformed frames).
type rawConn struct {
	t    *testing.T
	c    *tls.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func rawDial(t *testing.T, e *env, settings ...http2.Setting) *rawConn {
	t.Helper()
	cfg, err := identity.ClientConfig(e.src, e.bundle, clientID, []spiffeid.ID{serverID}, "h2")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", e.addr.String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
	r.fr.AllowIllegalWrites = true
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.hbuf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rawConn) headers(id uint32, end bool, fields ...string) {
	r.t.Helper()
	r.hbuf.Reset()
	for i := 0; i < len(fields); i += 2 {
		_ = r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) connect(id uint32, authority string) {
	r.t.Helper()
	r.headers(id, false, ":method", "CONNECT", ":authority", authority)
}

// next returns the next frame that is not connection housekeeping
// (SETTINGS, PING, connection WINDOW_UPDATE), or the read error.
func (r *rawConn) next() (http2.Frame, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
			continue
		case *http2.PingFrame:
			continue
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				continue
			}
		}
		return f, nil
	}
}

func (r *rawConn) mustNext() http2.Frame {
	r.t.Helper()
	f, err := r.next()
	if err != nil {
		r.t.Fatalf("read frame: %v", err)
	}
	return f
}

func (r *rawConn) wantStatus(id uint32, status string) {
	r.t.Helper()
	f := r.mustNext()
	h, ok := f.(*http2.MetaHeadersFrame)
	if !ok || h.StreamID != id || h.PseudoValue("status") != status {
		r.t.Fatalf("got %v, want HEADERS :status %s on stream %d", describe(f), status, id)
	}
}

func (r *rawConn) wantRST(id uint32, code http2.ErrCode) {
	r.t.Helper()
	for {
		f := r.mustNext()
		if _, ok := f.(*http2.DataFrame); ok {
			continue // DATA still in flight before the reset
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == id && rst.ErrCode == code {
			return
		}
		r.t.Fatalf("got %v, want RST_STREAM %v on stream %d", describe(f), code, id)
	}
}

// readData reads DATA on stream id until n bytes or END_STREAM.
func (r *rawConn) readData(id uint32, n int) (got []byte, ended bool) {
	r.t.Helper()
	for len(got) < n {
		f := r.mustNext()
		d, ok := f.(*http2.DataFrame)
		if !ok || d.StreamID != id {
			r.t.Fatalf("got %v, want DATA on stream %d", describe(f), id)
		}
		got = append(got, d.Data()...)
		if d.StreamEnded() {
			return got, true
		}
	}
	return got, false
}

func describe(f http2.Frame) string {
	switch f := f.(type) {
	case *http2.RSTStreamFrame:
		return fmt.Sprintf("RST_STREAM %v on %d", f.ErrCode, f.StreamID)
	case *http2.GoAwayFrame:
		return fmt.Sprintf("GOAWAY %v last %d", f.ErrCode, f.LastStreamID)
	case *http2.MetaHeadersFrame:
		return fmt.Sprintf("HEADERS %v on %d", f.Fields, f.StreamID)
	}
	return fmt.Sprint(f)
}

// TestServerHalfCloseKeepsReading: the upstream's EOF becomes END_STREAM
// while the client can still send (x/net's server reset the stream here),
// and the client's END_STREAM then half-closes the upstream.
func TestServerHalfCloseKeepsReading(t *testing.T) {
	e := newEnv(t, envOpts{})
	gotAfter := make(chan string, 1)
	upstream := tcpServer(t, func(c net.Conn) {
		_, _ = c.Write([]byte("hello"))
		_ = c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		gotAfter <- string(b)
	})
	c := e.dial(upstream)
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want \"hello\" then EOF", got, err)
	}
	if _, err := c.Write([]byte("after EOF")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*hbone.Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-gotAfter:
		if s != "after EOF" {
			t.Fatalf("upstream read %q after its half-close, want \"after EOF\"", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream never saw the client's bytes and EOF")
	}
}

// TestSendFlowControl: a client granting a small window receives no more
// than it granted, and everything once it keeps granting.
func TestSendFlowControl(t *testing.T) {
	e := newEnv(t, envOpts{})
	const size = 300000
	payload := bytes.Repeat([]byte("0123456789"), size/10)
	upstream := tcpServer(t, func(c net.Conn) { _, _ = c.Write(payload) })
	const window = 1000
	r := rawDial(t, e, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	r.connect(1, upstream)
	r.wantStatus(1, "200")
	granted, conn := window, 65535
	var got []byte
	for {
		f := r.mustNext()
		d, ok := f.(*http2.DataFrame)
		if !ok || d.StreamID != 1 {
			t.Fatalf("got %v, want DATA", describe(f))
		}
		got = append(got, d.Data()...)
		if len(got) > granted || len(got) > conn {
			t.Fatalf("received %d bytes with %d granted on the stream, %d on the connection", len(got), granted, conn)
		}
		if d.StreamEnded() {
			break
		}
		// Grant what was read, in steps smaller than a frame.
		if n := len(d.Data()); n > 0 {
			if err := r.fr.WriteWindowUpdate(1, uint32(n)); err != nil {
				t.Fatal(err)
			}
			if err := r.fr.WriteWindowUpdate(0, uint32(n)); err != nil {
				t.Fatal(err)
			}
			granted += n
			conn += n
		}
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("received %d bytes, want the %d-byte payload", len(got), len(payload))
	}
}

// TestBulkFramesWithinPeerLimits: a bulk upstream's reads (up to 256 KiB)
// leave as several DATA frames per write, each within the peer's
// SETTINGS_MAX_FRAME_SIZE (16 KiB by default), within the windows, in
// order.
func TestBulkFramesWithinPeerLimits(t *testing.T) {
	e := newEnv(t, envOpts{})
	const size = 3 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7 / 5)
	}
	upstream := tcpServer(t, func(c net.Conn) { _, _ = c.Write(payload) })
	const window = 1 << 20
	r := rawDial(t, e, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	if err := r.fr.WriteWindowUpdate(0, window); err != nil {
		t.Fatal(err)
	}
	r.connect(1, upstream)
	r.wantStatus(1, "200")
	var got []byte
	frames, granted := 0, window
	for {
		d, ok := r.mustNext().(*http2.DataFrame)
		if !ok || d.StreamID != 1 {
			t.Fatal("want DATA on stream 1")
		}
		frames++
		if n := len(d.Data()); n > 16384 {
			t.Fatalf("DATA frame of %d bytes; the client allows 16384", n)
		}
		got = append(got, d.Data()...)
		if len(got) > granted {
			t.Fatalf("received %d bytes with %d granted", len(got), granted)
		}
		if d.StreamEnded() {
			break
		}
		if n := len(d.Data()); n > 0 {
			_ = r.fr.WriteWindowUpdate(1, uint32(n))
			_ = r.fr.WriteWindowUpdate(0, uint32(n))
			granted += n
		}
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("received %d bytes in %d frames, not the %d-byte payload in order", len(got), frames, size)
	}
}

// blockedUpstream never reads what it is sent: nothing is consumed, so no
// window returns to the client.
func blockedUpstream(t *testing.T) hbone.HandlerFunc {
	return func(context.Context, *hbone.Request) (io.ReadWriteCloser, error) {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = b.Close() })
		return a, nil
	}
}

// TestReceiveFlowControl: the client may fill the stream window while the
// upstream is stuck; one byte more resets the stream (FLOW_CONTROL_ERROR),
// and the connection lives on.
func TestReceiveFlowControl(t *testing.T) {
	const window = 64 << 10
	e := newEnv(t, envOpts{
		server:  func(c *hbone.ServerConfig) { c.StreamWindow = window },
		handler: blockedUpstream(t),
	})
	r := rawDial(t, e)
	r.connect(1, "10.0.0.1:80")
	r.wantStatus(1, "200")
	chunk := make([]byte, 16<<10)
	for range window / len(chunk) {
		if err := r.fr.WriteData(1, false, chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.fr.WriteData(1, false, []byte{1}); err != nil {
		t.Fatal(err)
	}
	r.wantRST(1, http2.ErrCodeFlowControl)
	r.connect(3, "10.0.0.1:80")
	r.wantStatus(3, "200")
}

// TestResetStream: the client's RST_STREAM closes the upstream; other
// streams are unaffected, and a reset stream's late DATA is refused.
func TestResetStream(t *testing.T) {
	e := newEnv(t, envOpts{})
	closed := make(chan error, 1)
	upstream := tcpServer(t, func(c net.Conn) {
		_, err := io.ReadAll(c)
		closed <- err
	})
	echo := echoServer(t)
	r := rawDial(t, e)
	r.connect(1, upstream)
	r.wantStatus(1, "200")
	r.connect(3, echo)
	r.wantStatus(3, "200")
	if err := r.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("upstream not closed after RST_STREAM")
	}
	if err := r.fr.WriteData(1, false, []byte("late")); err != nil {
		t.Fatal(err)
	}
	r.wantRST(1, http2.ErrCodeStreamClosed)
	if err := r.fr.WriteData(3, false, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.readData(3, 4); string(got) != "ping" {
		t.Fatalf("stream 3 echoed %q", got)
	}
}

// TestUpstreamFailureResets: an upstream that goes away while the client
// is still sending ends the response and asks the client to stop
// (END_STREAM, then RST_STREAM NO_ERROR).
func TestUpstreamFailureResets(t *testing.T) {
	e := newEnv(t, envOpts{})
	upstream := tcpServer(t, func(c net.Conn) {
		// Reset only once the client spoke: a reset before the handler's
		// dial returned would fail the dial itself.
		_, _ = c.Read(make([]byte, 1))
		_, _ = c.Write([]byte("x"))
		_ = c.(*net.TCPConn).SetLinger(0) // RST, not FIN
	})
	r := rawDial(t, e)
	r.connect(1, upstream)
	r.wantStatus(1, "200")
	if err := r.fr.WriteData(1, false, []byte("go")); err != nil {
		t.Fatal(err)
	}
	got, ended := r.readData(1, 2)
	if string(got) != "x" || !ended {
		t.Fatalf("read %q (END_STREAM %v), want \"x\" and END_STREAM", got, ended)
	}
	r.wantRST(1, http2.ErrCodeNo)
}

// TestGoAwayDrain: shutting the server down sends GOAWAY, refuses new
// streams, lets the open one finish, then closes the connection and Serve
// returns.
func TestGoAwayDrain(t *testing.T) {
	e := newEnv(t, envOpts{server: func(c *hbone.ServerConfig) { c.DrainTimeout = time.Minute }})
	echo := echoServer(t)
	r := rawDial(t, e)
	r.connect(1, echo)
	r.wantStatus(1, "200")
	e.stop()
	f := r.mustNext()
	if ga, ok := f.(*http2.GoAwayFrame); !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
		t.Fatalf("got %v after shutdown, want GOAWAY NO_ERROR last 1", describe(f))
	}
	r.connect(3, echo)
	r.wantRST(3, http2.ErrCodeRefusedStream)
	select {
	case err := <-e.served:
		t.Fatalf("Serve returned (%v) while a stream was open", err)
	default:
	}
	if err := r.fr.WriteData(1, true, []byte("last words")); err != nil {
		t.Fatal(err)
	}
	got, ended := r.readData(1, len("last words"))
	for !ended {
		var more []byte
		more, ended = r.readData(1, 1)
		got = append(got, more...)
	}
	if string(got) != "last words" {
		t.Fatalf("echo during drain: %q", got)
	}
	if f, err := r.next(); err == nil {
		t.Fatalf("got %v, want the connection closed", describe(f))
	}
	select {
	case err := <-e.served:
		e.served <- err // for the cleanup
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
}

// TestMaxConcurrentStreams: a stream beyond the advertised limit is
// refused (REFUSED_STREAM, one log line); once one ends, a new one works.
func TestMaxConcurrentStreams(t *testing.T) {
	e := newEnv(t, envOpts{server: func(c *hbone.ServerConfig) { c.MaxConcurrentStreams = 2 }})
	echo := echoServer(t)
	r := rawDial(t, e)
	r.connect(1, echo)
	r.wantStatus(1, "200")
	r.connect(3, echo)
	r.wantStatus(3, "200")
	r.connect(5, echo)
	r.wantRST(5, http2.ErrCodeRefusedStream)
	if n := len(e.logs.lines("SETTINGS_MAX_CONCURRENT_STREAMS")); n != 1 {
		t.Fatalf("%d log lines for the refused stream, want 1", n)
	}
	if err := r.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	// The reset is processed before the next HEADERS (frames are read in
	// order), so stream 7 fits.
	r.connect(7, echo)
	r.wantStatus(7, "200")
}

// TestMalformedConnections: protocol violations close the connection with
// GOAWAY naming the error and one log line; the server keeps serving.
func TestMalformedConnections(t *testing.T) {
	e := newEnv(t, envOpts{})
	echo := echoServer(t)
	cases := []struct {
		name   string
		send   func(r *rawConn)
		code   http2.ErrCode
		reason string
	}{
		{"DATA on stream 0", func(r *rawConn) { _ = r.fr.WriteData(0, false, []byte("x")) }, http2.ErrCodeProtocol, "DATA"},
		{"DATA on idle stream", func(r *rawConn) { _ = r.fr.WriteData(9, false, []byte("x")) }, http2.ErrCodeProtocol, "idle stream 9"},
		{"HEADERS on even stream", func(r *rawConn) { r.connect(2, echo) }, http2.ErrCodeProtocol, "stream id 2"},
		{"zero WINDOW_UPDATE on the connection", func(r *rawConn) { _ = r.fr.WriteWindowUpdate(0, 0) }, http2.ErrCodeProtocol, "malformed frame"},
		{"connection window overflow", func(r *rawConn) { _ = r.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl, "window overflow"},
		{"oversized frame", func(r *rawConn) {
			_ = r.fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, hbone.DefaultMaxFrameSize+1))
		}, http2.ErrCodeFrameSize, ""},
		{"PUSH_PROMISE", func(r *rawConn) {
			_ = r.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		}, http2.ErrCodeProtocol, ""},
		{"garbage HPACK", func(r *rawConn) {
			_ = r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}, http2.ErrCodeCompression, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rawDial(t, e)
			me := r.c.LocalAddr().String()
			tc.send(r)
			var ga *http2.GoAwayFrame
			for ga == nil {
				f, err := r.next()
				if err != nil {
					t.Fatalf("connection ended (%v) without GOAWAY", err)
				}
				ga, _ = f.(*http2.GoAwayFrame)
			}
			if ga.ErrCode != tc.code {
				t.Fatalf("GOAWAY %v, want %v", ga.ErrCode, tc.code)
			}
			if f, err := r.next(); err == nil {
				t.Fatalf("got %v after GOAWAY, want the connection closed", describe(f))
			}
			var lines []string
			eventually(t, 5*time.Second, "the log line", func() bool {
				lines = e.logs.lines("remote=" + me + " ")
				return len(lines) > 0
			})
			if len(lines) != 1 || !strings.Contains(lines[0], "protocol error") || !strings.Contains(lines[0], tc.reason) {
				t.Fatalf("log lines %q: want one \"protocol error\" line containing %q", lines, tc.reason)
			}
		})
	}
	c := e.dial(echo)
	defer c.Close()
	if _, err := c.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 2); func() error { _, err := io.ReadFull(c, b); return err }() != nil || string(b) != "ok" {
		t.Fatal("server did not keep serving after the malformed connections")
	}
}

// TestContinuationFlood: an endless header block (HEADERS then
// CONTINUATION without END_HEADERS) is cut off long before the client is
// done sending: GOAWAY and close, without the handler seeing a request.
func TestContinuationFlood(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := rawDial(t, e)
	r.hbuf.Reset()
	_ = r.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.hbuf.Bytes()}); err != nil {
		t.Fatal(err)
	}
	sendErr := make(chan error, 1)
	go func() {
		// A literal header field repeated: 16 KiB per frame, 64 MiB in all.
		r.hbuf.Reset()
		for r.hbuf.Len() < 16<<10 {
			_ = r.enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("a", 1000), Sensitive: true})
		}
		frag := bytes.Clone(r.hbuf.Bytes())
		// Its own framer: the reader below writes SETTINGS acks on r.fr.
		wfr := http2.NewFramer(r.c, nil)
		for range 4096 {
			if err := wfr.WriteContinuation(1, false, frag); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	var ga *http2.GoAwayFrame
	for ga == nil {
		f, err := r.next()
		if err != nil {
			t.Fatalf("connection ended (%v) without GOAWAY", err)
		}
		ga, _ = f.(*http2.GoAwayFrame)
	}
	if ga.ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("GOAWAY %v, want PROTOCOL_ERROR", ga.ErrCode)
	}
	select {
	case err := <-sendErr:
		if err == nil {
			t.Fatal("the server read all 64 MiB of CONTINUATION")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the flood's writer is still blocked: connection not closed")
	}
	if n := e.handled.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
	if n := len(e.logs.lines("protocol error")); n != 1 {
		t.Fatalf("%d protocol error log lines, want 1", n)
	}
}

// TestMalformedRequests: bad header blocks reset only their stream.
func TestMalformedRequests(t *testing.T) {
	e := newEnv(t, envOpts{})
	echo := echoServer(t)
	r := rawDial(t, e)
	id := uint32(1)
	for _, tc := range []struct {
		name   string
		fields []string
		status string // or a reset
	}{
		{"CONNECT with :path", []string{":method", "CONNECT", ":authority", echo, ":path", "/"}, ""},
		{"CONNECT without :authority", []string{":method", "CONNECT"}, ""},
		{"connection header", []string{":method", "CONNECT", ":authority", echo, "connection", "close"}, ""},
		{"uppercase header name", []string{":method", "CONNECT", ":authority", echo, "X-Up", "1"}, ""},
		{"extended CONNECT", []string{":method", "CONNECT", ":protocol", "websocket", ":authority", echo, ":scheme", "https", ":path", "/"}, "400"},
		{"authority not ip:port", []string{":method", "CONNECT", ":authority", "example.com:80"}, "400"},
	} {
		r.headers(id, false, tc.fields...)
		if tc.status != "" {
			r.wantStatus(id, tc.status)
			r.wantRST(id, http2.ErrCodeNo)
		} else {
			r.wantRST(id, http2.ErrCodeProtocol)
		}
		id += 2
	}
	r.connect(id, echo)
	r.wantStatus(id, "200")
	if n := e.handled.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1 (the good stream)", n)
	}
	if n := len(e.logs.lines("stream refused")); n != 6 {
		t.Fatalf("%d 'stream refused' lines, want 6:\n%s", n, strings.Join(e.logs.lines(""), "\n"))
	}
}

// TestPingAnswered: the server acks the client's PING.
func TestPingAnswered(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := rawDial(t, e)
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	if err := r.fr.WritePing(false, data); err != nil {
		t.Fatal(err)
	}
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := f.(*http2.PingFrame); ok {
			if !p.IsAck() || p.Data != data {
				t.Fatalf("PING ack %v %v, want ack of %v", p.IsAck(), p.Data, data)
			}
			return
		}
		if errors.Is(err, io.EOF) {
			t.Fatal("closed")
		}
	}
}

// TestKeepalive: a silent client is pinged, and the connection is closed
// when the ping is not answered.
func TestKeepalive(t *testing.T) {
	e := newEnv(t, envOpts{server: func(c *hbone.ServerConfig) {
		c.PingInterval, c.PingTimeout = 100*time.Millisecond, 100*time.Millisecond
	}})
	r := rawDial(t, e)
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	pinged := false
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			if !pinged {
				t.Fatalf("connection ended (%v) before a PING", err)
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("connection kept open after an unanswered PING")
			}
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			pinged = pinged || !f.IsAck()
		}
	}
}

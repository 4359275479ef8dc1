package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ambitmesh/ambit/internal/hbone"
	"github.com/ambitmesh/ambit/internal/node/policy"
	"github.com/ambitmesh/ambit/internal/telemetry"
	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	"github.com/ambitmesh/ambit/internal/waypoint/lb"
	"github.com/ambitmesh/ambit/internal/waypoint/route"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Response flags, as Envoy spells them in access logs and Istio in the
// response_flags label.
const (
	FlagNone            = "-"
	FlagNoRoute         = "NR"
	FlagNoCluster       = "NC"
	FlagNoHealthy       = "UH"
	FlagConnectFailure  = "UF"
	FlagUpstreamReset   = "UR"
	FlagUpstreamClosed  = "UC"
	FlagUpstreamTimeout = "UT"
	FlagDownstreamClose = "DC"
	// FlagRBAC: denied by an AuthorizationPolicy (Envoy reports it as
	// rbac_access_denied_matched_policy in the response code details).
	FlagRBAC = "RBAC"
	// FlagRetryLimit is Envoy's URX, added to the last attempt's flag
	// when the retries of the route's policy are used up.
	FlagRetryLimit = "URX"
)

// Errors the round tripper returns to the error handler.
var (
	errNoHealthy = errors.New("proxy: no endpoint available")
)

type globalRand struct{}

func (globalRand) Uint64N(n uint64) uint64 { return mrand.Uint64N(n) }

// reqState is what one request's phases share; it travels in the
// request context from ServeHTTP to the round tripper and back.
type reqState struct {
	start    time.Time
	port     uint32
	route    *route.Route
	cr       *compiledRoute
	bc       *compiledBackend
	up       *upstream
	fr       *filter.Request
	lbReq    lb.HTTPRequest
	endpoint lb.Endpoint
	picked   bool
	attempts int
	// retriesUsedUp: the last attempt failed in a way the route's retry
	// policy retries, but no attempt was left (Envoy's URX).
	retriesUsedUp bool
	flag          string
	// upstreamStatus is the status of the response forwarded, for
	// upgrades whose 101 bypasses the ResponseWriter.
	upstreamStatus int
	// upstreamErr is a read error on the upstream response body
	// (a reset mid-response).
	upstreamErr error
	// reqBody counts the request body bytes read (istio_request_bytes)
	// and keeps its read error.
	reqBody countingBody
	// reqHead is the request head's size as received, taken before the
	// filters edit the header in place.
	reqHead int64
	// policy is the authorization decision at a waypoint.
	policy policy.Decision

	// What one request would otherwise allocate one by one, kept here
	// (one allocation per request instead of one each; the garbage
	// collector is a sixth of the gateway's CPU at max load).
	rw     respWriter
	frv    filter.Request
	fresp  filter.Response
	url    url.URL
	body   trackedBody
	reqID  [1]string // X-Request-Id's value slice
	trace  [1]string // Traceparent's
	xff    [1]string // X-Forwarded-For's
	xfp    [1]string // X-Forwarded-Proto's
	ua     [1]string // an empty User-Agent's
	cancel context.CancelFunc

	// The fast path's 1xx trace (forwardH1).
	trace1xx httptrace.ClientTrace
	rtGuard
}

// countingBody counts what is read through it, and records the first read
// error (a broken chunked encoding, a client gone mid-body) so the error
// handler does not blame the upstream for it. Both are atomic: the
// upstream transport reads the body on its own goroutine, which may still
// run when the handler finishes.
type countingBody struct {
	io.ReadCloser
	n   atomic.Int64
	err atomic.Pointer[error]
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err != nil && err != io.EOF {
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

type stateKey struct{}

func stateFrom(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

// Handler serves requests arriving on the listener with the given port.
func (e *Engine) Handler(port uint32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.serve(w, r, port, "", func(c *config) *route.Table {
			// Listeners sharing a port: the most specific hostname
			// matching Host takes the request, as SNI does for TLS.
			if idx := c.listeners[port]; idx != nil {
				t, _ := idx.Lookup(r.Host)
				return t
			}
			return nil
		})
	})
}

// Peer is the downstream of a waypoint request as the node proxy's HBONE
// stream describes it; the waypoint's HBONE server attaches it to each
// stream's requests with WithPeer.
type Peer struct {
	// Identity is the verified SPIFFE ID of the HBONE client certificate:
	// the source workload's, which its node proxy presents.
	Identity string
	// Source is the client's original address (the CONNECT's forwarded
	// for=), Destination the service VIP:port it addressed.
	Source, Destination netip.AddrPort
	// Labels describe the source workload in the request metrics (from
	// the identity and the CONNECT's baggage).
	Labels telemetry.Peer
}

type peerKey struct{}

// WithPeer attaches the HBONE peer of a stream to ctx.
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// ServiceHandler serves a waypoint's traffic for one service port
// ("<ns>/<name>"): authorization first (the waypoint's policies, with the
// Peer of the request's context), then the route table for
// "<ns>/<name>:<port>", else "<ns>/<name>", else the pass-through route
// to the service itself.
func (e *Engine) ServiceHandler(service string, port uint32) http.Handler {
	withPort := portKey(service, port)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.serve(w, r, port, service, func(c *config) *route.Table {
			if t := c.services[withPort]; t != nil {
				return t
			}
			if t := c.services[service]; t != nil {
				return t
			}
			return c.passthrough[withPort]
		})
	})
}

// AuthorizeConn applies the waypoint's policies to a TCP stream for
// service ("<ns>/<name>"; "" for a workload addressed directly, which only
// the policies targeting the waypoint itself apply to).
func (e *Engine) AuthorizeConn(service string, p Peer) policy.Decision {
	pe := e.authzTCP.Load()
	if pe == nil {
		return policy.Decision{Allowed: true, Reason: policy.ReasonNoAllowPolicies}
	}
	ns, name, _ := strings.Cut(service, "/")
	return pe.Check(policy.Conn{
		SrcIdentity: p.Identity, SrcIP: p.Source.Addr().Unmap(),
		DstNamespace: ns, DstName: name,
		DstIP: p.Destination.Addr().Unmap(), DstPort: p.Destination.Port(),
	})
}

// authorize applies the waypoint's policies to a request for service;
// false when it was denied (and answered 403).
func (e *Engine) authorize(w http.ResponseWriter, r *http.Request, st *reqState, service string) bool {
	pe := e.authz.Load()
	if pe == nil || pe.Len() == 0 {
		return true
	}
	p, _ := r.Context().Value(peerKey{}).(Peer)
	ns, name, _ := strings.Cut(service, "/")
	d := pe.Check(policy.Conn{
		SrcIdentity: p.Identity, SrcIP: p.Source.Addr().Unmap(),
		DstNamespace: ns, DstName: name,
		DstIP: p.Destination.Addr().Unmap(), DstPort: p.Destination.Port(),
		HTTP: &policy.HTTP{Method: r.Method, Host: r.Host, Path: r.URL.EscapedPath(), Header: r.Header},
	})
	st.policy = d
	if d.Allowed {
		return true
	}
	st.flag = FlagRBAC
	// Envoy's answer; which policy denied is the access log's business,
	// not the client's.
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusForbidden)
	_, _ = io.WriteString(w, "RBAC: access denied")
	return false
}

// Server returns an http.Server for the listener port serving HTTP/1.1
// and h2c (prior knowledge) with the engine's timeouts and limits. The
// engine uses it for HTTP/2 only (h2c streams, h2 by ALPN; see
// serveConns and the waypoint's HBONE server); HTTP/1.x goes to
// ServeConn's loop.
func (e *Engine) Server(port uint32) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           e.Handler(port),
		Protocols:         &p,
		ReadHeaderTimeout: e.cfg.ReadHeaderTimeout,
		IdleTimeout:       e.cfg.IdleTimeout,
		MaxHeaderBytes:    e.cfg.MaxHeaderBytes,
		// Envoy's edge recommendations: a client holds at most
		// MaxConcurrentStreams streams and 64 KiB unread per stream,
		// 1 MiB per connection, so its buffered bytes are bounded.
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          int(e.cfg.MaxConcurrentStreams),
			MaxReceiveBufferPerStream:     64 << 10,
			MaxReceiveBufferPerConnection: 1 << 20,
			// The protocol's default, not Go's 1 MiB: a larger frame is a
			// FRAME_SIZE_ERROR, as with Envoy.
			MaxReadFrameSize: 16 << 10,
		},
		ErrorLog: slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
}

// Serve serves ln as the plain HTTP listener with the given port until
// ctx is cancelled: HTTP/1.x with the engine's own server (h1server.go),
// h2c with net/http's. Then idle connections close at once, and requests
// in flight get shutdownGrace to finish.
func (e *Engine) Serve(ctx context.Context, ln net.Listener, port uint32, shutdownGrace time.Duration) error {
	return e.serveConns(ctx, ln, port, FamilyHTTP, shutdownGrace)
}

// misdirected is the table an HTTPS request gets when its Host belongs to
// another listener than its connection's: serve answers it 421.
var misdirected = new(route.Table)

// serve handles one request; service is the waypoint service it is for
// ("" on a gateway listener).
func (e *Engine) serve(w http.ResponseWriter, r *http.Request, port uint32, service string, table func(*config) *route.Table) {
	e.serveConfig(w, r, port, service, service != "", nil, table)
}

// serveConfig is serve with the waypoint's authorization applied when
// authz is set (with service's policies, or only the waypoint's own for
// ""), and with cfg instead of the current configuration when not nil.
func (e *Engine) serveConfig(w http.ResponseWriter, r *http.Request, port uint32, service string, authz bool, cfg *config, table func(*config) *route.Table) {
	st := &reqState{start: time.Now(), port: port, flag: FlagNone}
	st.reqHead = headSize(len(r.Method)+1+len(r.RequestURI)+1+len(r.Proto), r.Header)
	st.rw.ResponseWriter = w
	rw := &st.rw
	if r.Body != nil && r.Body != http.NoBody {
		st.reqBody.ReadCloser = r.Body
		r.Body = &st.reqBody
	}
	defer func() {
		p := recover()
		if p != nil {
			// ReverseProxy aborts with ErrAbortHandler when the body copy
			// fails after the head was sent.
			if isUpstreamTimeout(st.upstreamErr) {
				st.flag = FlagUpstreamTimeout
			} else if st.upstreamErr != nil {
				st.flag = FlagUpstreamReset
			} else if st.flag == FlagNone {
				st.flag = FlagDownstreamClose
			}
		}
		e.finish(rw, r, st)
		if p != nil {
			panic(p)
		}
	}()
	if p, ok := normalizePath(r.URL.EscapedPath()); ok {
		// Policies, routes and the upstream must all see one path, or
		// "/public/../admin" would pass a DENY on "/admin*" and reach
		// /admin (Envoy's normalize_path, which Istio turns on).
		setPath(r.URL, p)
	}
	if authz && !e.authorize(rw, r, st, service) {
		return
	}
	c := cfg
	if c == nil {
		c = e.cur.Load()
	}
	t := table(c)
	if t == misdirected {
		http.Error(rw, "misdirected request: this connection's server name selects another listener than the Host; open a connection for the Host", http.StatusMisdirectedRequest)
		return
	}
	var rt *route.Route
	if t != nil {
		rt, _ = t.MatchHTTP(r)
	}
	if rt == nil {
		st.flag = FlagNoRoute
		http.Error(rw, "no route", http.StatusNotFound)
		return
	}
	st.route = rt
	st.cr = c.routes[rt.Config]
	if st.cr == nil || st.cr.err != nil {
		http.Error(rw, "route configuration error", http.StatusInternalServerError)
		return
	}
	// The filters edit the client's header in place: ReverseProxy copies
	// it for the upstream request anyway, and forwardH1 does when it has
	// fields to remove, so a copy here would be one too many.
	hdr := r.Header
	if hdr.Get("X-Request-Id") == "" {
		st.reqID[0] = newRequestID()
		hdr["X-Request-Id"] = st.reqID[:]
	}
	// W3C trace context: kept when valid (with tracestate and baggage,
	// which pass unchanged), else started here so every hop of the
	// request logs one trace id.
	if !validTraceParent(hdr.Get("Traceparent")) {
		st.trace[0] = hbone.NewTraceParent().String()
		hdr["Traceparent"] = st.trace[:]
		delete(hdr, "Tracestate")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	st.frv = filter.Request{
		Method: r.Method, Scheme: scheme, Host: r.Host, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Header: hdr, ListenerPort: port, Prefix: rt.Prefix, PrefixMatch: rt.PrefixMatch, Rand: globalRand{},
	}
	fr := &st.frv
	st.fr = fr
	if rep := st.cr.chain.OnRequest(fr); rep != nil {
		writeReply(rw, rep)
		return
	}
	br := route.PickBackend(rt, globalRand{})
	idx := slices.Index(rt.Backends(), br)
	if br == nil || idx < 0 || br.GetInvalid() != "" || br.GetService() == "" {
		http.Error(rw, "invalid backend", http.StatusInternalServerError)
		return
	}
	st.bc = &st.cr.backends[idx]
	if st.bc.err != nil {
		http.Error(rw, "backend filter configuration error", http.StatusInternalServerError)
		return
	}
	if rep := st.bc.chain.OnRequest(fr); rep != nil {
		writeReply(rw, rep)
		return
	}
	st.up = c.backends[balKey{br.GetService(), br.GetPort()}]
	if st.up == nil {
		st.flag = FlagNoCluster
		http.Error(rw, "backend not found", http.StatusInternalServerError)
		return
	}
	for _, m := range fr.Mirrors {
		e.mirror(c, m, r, fr)
	}

	upgrade := isUpgrade(r)
	// HTTP/1.x that is not an upgrade takes forwardH1, the rest (HTTP/2's
	// streams and trailers, upgrades) httputil.ReverseProxy.
	fast := r.ProtoMajor == 1 && !upgrade
	ctx := context.WithValue(r.Context(), stateKey{}, st)
	if fast {
		ctx = st.traceFor(ctx)
	}
	if d := rt.Config.GetTimeouts().GetRequest().AsDuration(); d > 0 && !upgrade {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	out := r.WithContext(ctx)
	out.Header = hdr
	out.Host = fr.Host
	st.url = *r.URL
	st.url.RawQuery = fr.RawQuery
	setPath(&st.url, fr.Path)
	out.URL = &st.url
	st.lbReq = lb.HTTPRequest{Req: out, Source: remoteIP(r)}
	if fast {
		e.forwardH1(rw, r, out, st)
		return
	}
	e.rp.ServeHTTP(rw, out)
}

// setPath sets u's path from its escaped form.
func setPath(u *url.URL, escaped string) {
	if p, err := url.PathUnescape(escaped); err == nil {
		u.Path, u.RawPath = p, escaped
	} else {
		u.Path, u.RawPath = escaped, ""
	}
}

// normalizePath normalises an escaped path as Envoy's normalize_path
// (which Istio turns on) does: percent-encoded unreserved characters are
// decoded (RFC 3986 §2.3: "/%61dmin" is "/admin", which upstreams serve
// as such, so a policy on "/admin" must see it so), then dot segments are
// removed (§5.2.4). Other escapes, "%2F" among them, stay data. ok is
// false when the path has neither (the common case, no allocation).
func normalizePath(p string) (string, bool) {
	if !strings.HasPrefix(p, "/") || (!strings.Contains(p, "/.") && !strings.Contains(p, "%")) {
		return p, false
	}
	segs := strings.Split(decodeUnreserved(p)[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	n := "/" + strings.Join(out, "/")
	return n, n != p
}

// decodeUnreserved decodes the escapes of ALPHA, DIGIT, "-", ".", "_" and
// "~" in p, which mean the same encoded or not (RFC 3986 §2.3).
func decodeUnreserved(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			v, err := strconv.ParseUint(p[i+1:i+3], 16, 8)
			if c := byte(v); err == nil && unreserved(c) {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// validTraceParent says whether s is a usable traceparent; most requests
// carry none, and need no parse (whose error is built with fmt).
func validTraceParent(s string) bool {
	if s == "" {
		return false
	}
	_, err := hbone.ParseTraceParent(s)
	return err == nil
}

func writeReply(w http.ResponseWriter, rep *filter.Reply) {
	for k, vs := range rep.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(rep.Status)
}

// rewrite builds the upstream request. ReverseProxy has already removed
// hop-by-hop headers (Connection and the headers it lists, Keep-Alive,
// Proxy-*, TE but "trailers", Transfer-Encoding, Upgrade unless this is
// an upgrade) and every X-Forwarded-* header.
func (e *Engine) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.Host = pr.In.Host
	e.setForwarded(stateFrom(pr.In.Context()), pr.In, pr.Out)
}

// setForwarded points out at the backend and sets the forwarding fields
// from in, the request as the client sent it.
func (e *Engine) setForwarded(st *reqState, in, out *http.Request) {
	out.URL.Scheme = "http"
	out.URL.Host = st.up.backend.GetHostname() // replaced per attempt
	// Envoy's use_remote_address: append the peer to the client's list.
	prior := in.Header.Values("X-Forwarded-For")
	ip := remoteIP(in)
	switch {
	case !ip.IsValid():
		st.xff[0] = strings.Join(prior, ", ")
	case len(prior) == 0:
		st.xff[0] = ip.String()
	default:
		st.xff[0] = strings.Join(prior, ", ") + ", " + ip.String()
	}
	if st.xff[0] != "" {
		out.Header["X-Forwarded-For"] = st.xff[:]
	}
	if st.fr.Scheme != "" {
		st.xfp[0] = st.fr.Scheme
		out.Header["X-Forwarded-Proto"] = st.xfp[:]
	}
}

func remoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && headerHasToken(r.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// roundTripper is the engine as ReverseProxy's transport: it picks the
// endpoint per attempt and retries.
type roundTripper Engine

func (t *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	e := (*Engine)(t)
	st := stateFrom(req.Context())
	retry := st.route.Config.GetRetry()
	attempts := 1
	if retry != nil {
		attempts += int(retry.GetAttempts())
	}
	upgrade := isUpgrade(req)
	// A body can be sent again only if it is empty or can be re-read.
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	perTry := st.route.Config.GetTimeouts().GetBackendRequest().AsDuration()
	var tried []string
	for attempt := 0; ; attempt++ {
		st.attempts = attempt + 1
		ep, ok := pickAvoiding(st.up.bal, &st.lbReq, tried)
		if !ok {
			return nil, errNoHealthy
		}
		tried = append(tried, ep.ID)
		st.endpoint, st.picked = ep, true
		ctx, cancel := req.Context(), context.CancelFunc(func() {})
		if perTry > 0 && !upgrade {
			ctx, cancel = context.WithTimeout(ctx, perTry)
		}
		rt, scheme := e.upstreamTransport(req.Context(), st.up, ep.Addr, upgrade)
		// ReverseProxy's outgoing request is the engine's to edit: the
		// first attempt without its own deadline sends it as it is.
		areq := req
		if attempt > 0 || perTry > 0 && !upgrade {
			areq = req.WithContext(ctx)
			u := *req.URL
			areq.URL = &u
		}
		areq.URL.Scheme, areq.URL.Host = scheme, ep.Addr.String()
		if attempt > 0 && req.GetBody != nil {
			b, err := req.GetBody()
			if err != nil {
				cancel()
				st.up.bal.Done(ep)
				return nil, err
			}
			areq.Body = b
		}
		resp, err := rt.RoundTrip(areq)
		last := attempt+1 >= attempts || !replayable
		if err != nil {
			cancel()
			st.up.bal.Done(ep)
			// A connect failure sent nothing: always safe to retry when
			// the rule has a retry policy.
			if isDialError(err) {
				if !last && e.backoff(req.Context(), retry, attempt) {
					continue
				}
				st.retriesUsedUp = last && attempt > 0
			}
			return nil, err
		}
		retriable := slices.Contains(retry.GetCodes(), uint32(resp.StatusCode))
		if last && retriable && attempt > 0 {
			st.flag = FlagRetryLimit
		}
		if !last && retriable {
			// Drain a little so the connection can be reused.
			_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
			_ = resp.Body.Close()
			cancel()
			st.up.bal.Done(ep)
			if e.backoff(req.Context(), retry, attempt) {
				continue
			}
			return nil, req.Context().Err()
		}
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			resp.Body = &upgradeBody{ReadWriteCloser: rwc, done: func() { cancel(); st.up.bal.Done(ep) }}
		} else {
			st.cancel = cancel
			st.body = trackedBody{ReadCloser: resp.Body, st: st}
			resp.Body = &st.body
		}
		return resp, nil
	}
}

// pickAvoiding picks an endpoint, preferring one not tried yet (Istio's
// previous-hosts retry predicate). Rejected picks stay counted in flight
// until the end, so least request steers away from them on the next draw.
func pickAvoiding(b *lb.Balancer, req lb.Request, tried []string) (lb.Endpoint, bool) {
	var rejected []lb.Endpoint
	defer func() {
		for _, r := range rejected {
			b.Done(r)
		}
	}()
	for range 5 {
		ep, ok := b.Pick(req)
		if !ok || !slices.Contains(tried, ep.ID) {
			return ep, ok
		}
		rejected = append(rejected, ep)
	}
	return b.Pick(req)
}

// backoff waits before retry n+1: exponential from the policy's backoff
// with full jitter, capped at ten times it, as Envoy. False when ctx ended.
func (e *Engine) backoff(ctx context.Context, r *gatewayv1.Retry, n int) bool {
	base := r.GetBackoff().AsDuration()
	if base <= 0 {
		base = DefaultRetryBackoff
	}
	d := min(base<<min(n, 10), 10*base)
	d = time.Duration(mrand.Int64N(int64(d)) + 1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// isUpstreamTimeout: the route's timeout (request or backendRequest)
// ended the attempt, before the response head or during its body: Envoy's
// UT either way.
func isUpstreamTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded)
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// trackedBody is the response body of the attempt that answered: its
// read errors are the upstream's, and its close ends the attempt (its
// context and its in-flight count at the balancer).
type trackedBody struct {
	io.ReadCloser
	st   *reqState
	once bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	// A cancelled context (deadlines are not cancellations) is the client
	// gone: the downstream's doing (DC), not an upstream reset.
	if err != nil && err != io.EOF && b.st.upstreamErr == nil && !errors.Is(err, context.Canceled) {
		b.st.upstreamErr = err
	}
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	if !b.once {
		b.once = true
		b.st.cancel()
		b.st.up.bal.Done(b.st.endpoint)
	}
	return err
}

type upgradeBody struct {
	io.ReadWriteCloser
	done func()
	once bool
}

func (b *upgradeBody) Close() error {
	err := b.ReadWriteCloser.Close()
	if !b.once {
		b.once = true
		b.done()
	}
	return err
}

func (e *Engine) modifyResponse(resp *http.Response) error {
	st := stateFrom(resp.Request.Context())
	st.fresp = filter.Response{Status: resp.StatusCode, Header: resp.Header}
	fresp := &st.fresp
	st.cr.chain.OnResponse(fresp)
	st.bc.chain.OnResponse(fresp)
	for k, vs := range st.fr.ResponseHeader {
		resp.Header[k] = append(resp.Header[k], vs...)
	}
	if c := st.lbReq.NewCookie; c != nil {
		resp.Header.Add("Set-Cookie", c.String())
	}
	resp.StatusCode = fresp.Status
	st.upstreamStatus = resp.StatusCode
	return nil
}

// errorHandler answers when no upstream response head arrived, as Envoy
// does: 503 for connect failures and resets, 504 for timeouts, 400 when
// the client's body was malformed.
func (e *Engine) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := stateFrom(r.Context())
	if p := st.reqBody.err.Load(); p != nil {
		var ne net.Error
		if errors.Is(*p, io.ErrUnexpectedEOF) || errors.As(*p, &ne) || r.Context().Err() != nil {
			st.flag = FlagDownstreamClose
			w.WriteHeader(499)
			return
		}
		st.flag = FlagDownstreamProtocolError
		e.log.Debug("proxy: malformed request body", "client", r.RemoteAddr, "error", *p)
		http.Error(w, "malformed request body", http.StatusBadRequest)
		return
	}
	status, flag := http.StatusServiceUnavailable, FlagUpstreamClosed
	var tlsErr *upstreamTLSError
	switch {
	case errors.Is(err, errNoHealthy):
		flag = FlagNoHealthy
	case isUpstreamTimeout(err):
		status, flag = http.StatusGatewayTimeout, FlagUpstreamTimeout
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads an answer.
		st.flag = FlagDownstreamClose
		w.WriteHeader(499)
		return
	case isDialError(err):
		flag = FlagConnectFailure
	case errors.As(err, &tlsErr):
		flag = FlagConnectFailure
		e.log.Warn("proxy: upstream TLS handshake failed", "backend", st.up.backend.GetNamespace()+"/"+st.up.backend.GetName(),
			"endpoint", tlsErr.addr, "policy", tlsErr.policy, "error", tlsErr.err)
	case errors.Is(err, syscall.ECONNRESET):
		flag = FlagUpstreamReset
	case errors.Is(err, errH1BadHead):
		// The request's own fault (its filters'), not the upstream's.
		e.log.Warn("proxy: request not sent upstream", "path", r.URL.Path, "error", err)
		st.flag = FlagNone
		http.Error(w, "invalid request header for the upstream", http.StatusBadGateway)
		return
	}
	st.flag = flag
	if st.retriesUsedUp {
		st.flag += "," + FlagRetryLimit
	}
	msg := "upstream connect error or disconnect/reset before headers. reset reason: " + flag
	if tlsErr != nil {
		// Envoy's wording for a TLS transport failure.
		msg = "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS_error: " + tlsErr.err.Error()
	}
	switch flag {
	case FlagUpstreamTimeout:
		msg = "upstream request timeout"
	case FlagNoHealthy:
		msg = "no healthy upstream"
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

// mirror sends a copy of the request head to the mirror backend, fire and
// forget. The body is not mirrored: that would need buffering it.
func (e *Engine) mirror(c *config, ref *gatewayv1.BackendRef, r *http.Request, fr *filter.Request) {
	up := c.backends[balKey{ref.GetService(), ref.GetPort()}]
	if up == nil || e.closed.Load() {
		return
	}
	select {
	case e.mirSem <- struct{}{}:
	default:
		return // too many in flight: drop
	}
	ep, ok := up.bal.Pick(nil)
	if !ok {
		<-e.mirSem
		return
	}
	hdr := fr.Header.Clone()
	removeHopByHop(hdr)
	host := fr.Host
	// Envoy marks shadow traffic by suffixing the host.
	if h, p, err := net.SplitHostPort(host); err == nil {
		host = net.JoinHostPort(h+"-shadow", p)
	} else {
		host += "-shadow"
	}
	// The path as the filters left it so far (a rewrite listed before the
	// mirror applies to the copy too).
	tr, scheme := e.upstreamTransport(e.base, up, ep.Addr, false)
	target := &url.URL{Scheme: scheme, Host: ep.Addr.String(), RawQuery: fr.RawQuery}
	if p, err := url.PathUnescape(fr.Path); err == nil {
		target.Path, target.RawPath = p, fr.Path
	} else {
		target.Path = r.URL.Path
	}
	e.mirrors.Add(1)
	go func() {
		defer e.mirrors.Done()
		defer func() { <-e.mirSem }()
		defer up.bal.Done(ep)
		ctx, cancel := context.WithTimeout(e.base, DefaultMirrorTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, fr.Method, target.String(), nil)
		if err != nil {
			return
		}
		req.Header, req.Host = hdr, host
		resp, err := tr.RoundTrip(req)
		if err != nil {
			e.log.Debug("proxy: mirror failed", "backend", ref.GetService(), "error", err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}()
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// respWriter records what was sent downstream for logs and metrics. It
// unwraps for http.ResponseController, which ReverseProxy uses to flush
// and to hijack for upgrades.
type respWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *respWriter) WriteHeader(code int) {
	if w.status == 0 || w.status < 200 {
		w.status = code
	}
	if code == 499 {
		return // recorded only: the client is gone
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

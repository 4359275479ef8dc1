package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
)

// forwardH1 is httputil.ReverseProxy.ServeHTTP for the requests that need
// nothing of it but the forwarding itself: HTTP/1.x from the client and
// not an upgrade (those stay on e.rp). Same semantics (hop-by-hop fields
// both ways, forwarding fields, "TE: trailers", 1xx answers, trailers,
// flushing of streamed bodies, ErrAbortHandler on a broken body), without
// what ReverseProxy allocates per request for its generality: the request
// clone, the trace closures and context, the per-value header copies.
//
// out is the engine's own copy of the client's request, its context
// already carrying st and st's 1xx trace (see serveConfig). Its header is
// the client's, which the filters already edit in place; it is copied
// only when a field has to be removed from it, since net/http's server
// still reads the client's Connection after the handler.
func (e *Engine) forwardH1(rw *respWriter, in, out *http.Request, st *reqState) {
	if in.ContentLength == 0 {
		out.Body = nil // nothing to send, and a retry need not replay it
	}
	if out.Body != nil {
		// The transport closes a request body when it fails; the
		// client's must stay open (a 100-continue client would hang).
		out.Body = noCloseBody{out.Body}
	}
	out.Close = false
	h := out.Header
	if needsStrip(h) {
		h = h.Clone()
		out.Header = h
		removeHopByHop(h)
		if headerHasToken(in.Header, "Te", "trailers") {
			h["Te"] = []string{"trailers"}
		}
		for _, k := range forwardingFields {
			delete(h, k)
		}
	}
	out.URL.RawQuery = cleanQuery(out.URL.RawQuery)
	e.setForwarded(st, in, out)
	if _, ok := h["User-Agent"]; !ok {
		// Else the Go transports would send their own.
		h["User-Agent"] = st.ua[:]
	}

	res, err := (*roundTripper)(e).RoundTrip(out)
	st.rtMu.Lock()
	st.rtDone = true
	st.rtMu.Unlock()
	if err != nil {
		e.errorHandler(rw, out, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Nothing asked to switch (ReverseProxy refuses it the same way).
		_ = res.Body.Close()
		e.errorHandler(rw, out, errors.New("proxy: the upstream switched protocols without an upgrade request"))
		return
	}
	removeHopByHop(res.Header)
	_ = e.modifyResponse(res) // never fails
	dst := rw.Header()
	// The response's header is the engine's own: its values need no copy.
	for k, vv := range res.Header {
		if cur, ok := dst[k]; ok {
			dst[k] = append(cur, vv...)
		} else {
			dst[k] = vv
		}
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	rw.WriteHeader(res.StatusCode)

	if err := e.copyBody(rw, res); err != nil {
		_ = res.Body.Close()
		if in.Context().Value(http.ServerContextKey) == nil && in.Context().Value(downConnKey{}) == nil {
			return // not under a server: nobody to abort
		}
		panic(http.ErrAbortHandler)
	}
	_ = res.Body.Close() // now, to have res.Trailer
	if len(res.Trailer) > 0 {
		// Chunked, so that net/http does not compute a Content-Length.
		_ = http.NewResponseController(rw).Flush()
	}
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			dst[k] = append(dst[k], vv...)
		}
		return
	}
	for k, vv := range res.Trailer {
		dst[http.TrailerPrefix+k] = append(dst[http.TrailerPrefix+k], vv...)
	}
}

// copyBody copies the response body with a pooled buffer, flushing after
// each write when the body is a stream: length unknown, or server-sent
// events (as ReverseProxy does).
func (e *Engine) copyBody(rw *respWriter, res *http.Response) error {
	var flush func() error
	if res.ContentLength == -1 || isEventStream(res.Header.Get("Content-Type")) {
		flush = http.NewResponseController(rw).Flush
	}
	if flush != nil {
		// The head at once: a stream's first bytes may be long coming.
		_ = flush()
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	for {
		n, rerr := res.Body.Read(buf)
		if rerr != nil && rerr != io.EOF && rerr != context.Canceled {
			e.log.Debug("proxy: upstream body read failed", "error", rerr)
		}
		if n > 0 {
			if _, werr := rw.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush != nil {
				if werr := flush(); werr != nil {
					return werr
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func isEventStream(ct string) bool {
	base, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(base), "text/event-stream")
}

// got1xx forwards a 1xx answer (103 Early Hints, 100 Continue) while the
// round trip lasts; serveConfig installs it as the request's client trace.
func (st *reqState) got1xx(code int, header textproto.MIMEHeader) error {
	st.rtMu.Lock()
	defer st.rtMu.Unlock()
	if st.rtDone {
		return nil // the response is being written: the header map is its
	}
	h := st.rw.Header()
	for k, vv := range header {
		h[k] = append(h[k], vv...)
	}
	st.rw.WriteHeader(code)
	clear(h) // WriteHeader does not for 1xx
	return nil
}

// traceFor returns ctx with st's 1xx trace for the fast path.
func (st *reqState) traceFor(ctx context.Context) context.Context {
	st.trace1xx.Got1xxResponse = st.got1xx
	return httptrace.WithClientTrace(ctx, &st.trace1xx)
}

// hopByHop are the fields that describe one connection (RFC 9110 7.6.1),
// and the ones ReverseProxy also treats so. Expect too: net/http's server
// answers the client's 100-continue itself when the body is first read,
// as Envoy does, so the backend's 100 would be a second one.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Expect"}

// forwardingFields are the client's claims about earlier hops, replaced
// by setForwarded's.
var forwardingFields = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

func needsStrip(h http.Header) bool {
	for _, k := range hopByHop {
		if _, ok := h[k]; ok {
			return true
		}
	}
	for _, k := range forwardingFields {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
}

// cleanQuery re-encodes a query that Go's parser would reject in part
// (a ';' separator, a bad escape), so the upstream sees what the routes
// saw, as ReverseProxy's Rewrite mode does.
func cleanQuery(s string) string {
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			v, _ := url.ParseQuery(s)
			return v.Encode()
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				v, _ := url.ParseQuery(s)
				return v.Encode()
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// noCloseBody keeps the transport from closing the client's body.
type noCloseBody struct{ io.ReadCloser }

func (noCloseBody) Close() error { return nil }

// rtGuard is the state got1xx shares with forwardH1.
type rtGuard struct {
	rtMu   sync.Mutex
	rtDone bool
}

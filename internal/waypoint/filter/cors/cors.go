// Package cors implements the Gateway API CORS filter: it recognises
// preflight requests and answers them directly, and adds the
// Access-Control-* headers to responses for allowed origins.
package cors

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Header names.
const (
	hOrigin          = "Origin"
	hRequestMethod   = "Access-Control-Request-Method"
	hRequestHeaders  = "Access-Control-Request-Headers"
	hAllowOrigin     = "Access-Control-Allow-Origin"
	hAllowCreds      = "Access-Control-Allow-Credentials"
	hAllowMethods    = "Access-Control-Allow-Methods"
	hAllowHeaders    = "Access-Control-Allow-Headers"
	hExposeHeaders   = "Access-Control-Expose-Headers"
	hMaxAge          = "Access-Control-Max-Age"
	defaultMaxAgeSec = 5 // the spec's default
)

// origin is a parsed allowOrigins entry. The host may hold one "*",
// which matches one or more characters (any number of labels) in its
// place; "*" alone matches every origin.
type origin struct {
	any              bool
	scheme, port     string
	hostPre, hostSuf string
	wildcard         bool
}

// Policy is a compiled CORS filter.
type Policy struct {
	origins   []origin
	creds     bool
	anyMethod bool
	methods   string
	anyHeader bool
	headers   string
	expose    string
	maxAge    string
}

// Compile precomputes the origin patterns and the header values.
func Compile(c *gatewayv1.CORS) *Policy {
	p := &Policy{creds: c.GetAllowCredentials()}
	for _, o := range c.GetAllowOrigins() {
		p.origins = append(p.origins, parsePattern(o))
	}
	var methods []string
	for _, m := range c.GetAllowMethods() {
		if m == "*" {
			p.anyMethod = true
		}
		methods = append(methods, m)
	}
	if !p.anyMethod {
		p.methods = strings.Join(methods, ", ")
	}
	var headers []string
	for _, h := range c.GetAllowHeaders() {
		if h == "*" {
			p.anyHeader = true
		}
		headers = append(headers, h)
	}
	if !p.anyHeader {
		p.headers = strings.Join(headers, ", ")
	}
	var expose []string
	for _, h := range c.GetExposeHeaders() {
		// With credentials "*" is a literal name to browsers, so it
		// cannot mean "all"; the spec says not to send it then.
		if h == "*" && p.creds {
			continue
		}
		expose = append(expose, h)
	}
	p.expose = strings.Join(expose, ", ")
	age := c.GetMaxAge()
	if age == 0 {
		age = defaultMaxAgeSec
	}
	p.maxAge = strconv.FormatUint(uint64(age), 10)
	return p
}

func defaultPort(scheme string) string {
	switch scheme {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

// splitOrigin splits "scheme://host[:port]" into lowercase scheme and
// host and the port (the scheme's default when absent).
func splitOrigin(s string) (scheme, host, port string, ok bool) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return "", "", "", false
	}
	scheme = strings.ToLower(scheme)
	host, port = filter.SplitHostPort(strings.TrimSuffix(rest, "/"))
	if port == "" {
		port = defaultPort(scheme)
	}
	return scheme, strings.ToLower(host), port, host != ""
}

func parsePattern(s string) origin {
	if s == "*" {
		return origin{any: true}
	}
	scheme, host, port, ok := splitOrigin(s)
	if !ok {
		// Not an origin: match it verbatim only, which a browser never
		// sends, so it allows nothing.
		return origin{scheme: "\x00", hostPre: s}
	}
	o := origin{scheme: scheme, port: port, hostPre: host}
	if i := strings.IndexByte(host, '*'); i >= 0 {
		o.wildcard, o.hostPre, o.hostSuf = true, host[:i], host[i+1:]
	}
	return o
}

func (o *origin) matches(scheme, host, port string) bool {
	if o.any {
		return true
	}
	if scheme != o.scheme || port != o.port {
		return false
	}
	if !o.wildcard {
		return host == o.hostPre
	}
	return len(host) > len(o.hostPre)+len(o.hostSuf) && strings.HasPrefix(host, o.hostPre) && strings.HasSuffix(host, o.hostSuf)
}

// AllowsOrigin reports whether the Origin header value is allowed.
func (p *Policy) AllowsOrigin(o string) bool {
	if o == "" || o == "null" {
		// "null" comes from opaque origins; only "*" admits it.
		for i := range p.origins {
			if p.origins[i].any && o != "" {
				return true
			}
		}
		return false
	}
	scheme, host, port, ok := splitOrigin(o)
	if !ok {
		return false
	}
	for i := range p.origins {
		if p.origins[i].matches(scheme, host, port) {
			return true
		}
	}
	return false
}

// IsPreflight reports whether a request is a CORS preflight: OPTIONS with
// an Origin and an Access-Control-Request-Method.
func IsPreflight(method string, h http.Header) bool {
	return method == http.MethodOptions && h.Get(hOrigin) != "" && h.Get(hRequestMethod) != ""
}

// Result is what the filter decided for one request.
type Result struct {
	// Preflight: answer the request directly with 200 and Header,
	// without forwarding it.
	Preflight bool
	// Allowed: the origin is allowed (Header carries the CORS headers;
	// for a denied origin it carries none).
	Allowed bool
	// Header holds the headers to add to the response.
	Header http.Header
}

// Evaluate decides what to do with a request. Requests without an Origin
// are not cross-origin and get nothing.
func (p *Policy) Evaluate(method string, h http.Header) Result {
	o := h.Get(hOrigin)
	res := Result{Preflight: IsPreflight(method, h), Header: http.Header{}}
	if o == "" {
		return res
	}
	// The answer depends on Origin, so caches must key on it.
	res.Header.Set("Vary", hOrigin)
	if !p.AllowsOrigin(o) {
		return res
	}
	res.Allowed = true
	// Echoing the origin is always valid, and required with credentials
	// (which forbid "*").
	res.Header.Set(hAllowOrigin, o)
	if p.creds {
		res.Header.Set(hAllowCreds, "true")
	}
	if p.expose != "" {
		res.Header.Set(hExposeHeaders, p.expose)
	}
	if !res.Preflight {
		return res
	}
	switch {
	case p.anyMethod && p.creds:
		res.Header.Set(hAllowMethods, h.Get(hRequestMethod))
	case p.anyMethod:
		res.Header.Set(hAllowMethods, "*")
	case p.methods != "":
		res.Header.Set(hAllowMethods, p.methods)
	}
	switch {
	case p.anyHeader && p.creds:
		if rh := strings.Join(h.Values(hRequestHeaders), ", "); rh != "" {
			res.Header.Set(hAllowHeaders, rh)
		}
	case p.anyHeader:
		res.Header.Set(hAllowHeaders, "*")
	case p.headers != "":
		res.Header.Set(hAllowHeaders, p.headers)
	}
	res.Header.Set(hMaxAge, p.maxAge)
	return res
}

type corsFilter struct{ p *Policy }

func (corsFilter) Kind() string { return filter.KindCORS }

func (f corsFilter) OnRequest(r *filter.Request) *filter.Reply {
	res := f.p.Evaluate(r.Method, r.Header)
	if res.Preflight {
		// A preflight is answered here, allowed or not: forwarding it
		// would let the backend's own answer confuse the browser.
		return &filter.Reply{Status: http.StatusOK, Header: res.Header}
	}
	for k, vs := range res.Header {
		for _, v := range vs {
			r.AddResponseHeader(k, v)
		}
	}
	return nil
}

func init() {
	filter.Register(filter.KindCORS, func(f *gatewayv1.Filter) (filter.Filter, error) {
		return corsFilter{Compile(f.GetCors())}, nil
	})
}

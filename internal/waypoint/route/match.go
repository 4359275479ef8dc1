package route

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"strings"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

type pathKind uint8

const (
	pathAny pathKind = iota // no path match, or PathPrefix "/"
	pathExact
	pathPrefix
	pathRegex
)

type pathMatcher struct {
	kind pathKind
	// value: the exact path, or the prefix without its trailing "/".
	value string
	re    *regexp.Regexp
}

type stringMatcher struct {
	// key is the canonical header key, or the query parameter name.
	key   string
	value string
	re    *regexp.Regexp
}

type matcher struct {
	path    pathMatcher
	method  string
	headers []stringMatcher
	query   []stringMatcher
	grpc    bool
}

func compileMatch(m *gatewayv1.RouteMatch) (matcher, error) {
	out := matcher{method: m.GetMethod(), grpc: m.GetGrpc()}
	if p := m.GetPath(); p != nil {
		switch p.GetType() {
		case gatewayv1.MatchType_MATCH_TYPE_EXACT:
			out.path = pathMatcher{kind: pathExact, value: p.GetValue()}
		case gatewayv1.MatchType_MATCH_TYPE_PATH_PREFIX, gatewayv1.MatchType_MATCH_TYPE_UNSPECIFIED:
			// A trailing "/" does not change what a prefix matches, so
			// "/foo/" and "/foo" both become "/foo" and "/" becomes "".
			v := strings.TrimRight(p.GetValue(), "/")
			if v == "" {
				out.path = pathMatcher{kind: pathPrefix}
			} else {
				out.path = pathMatcher{kind: pathPrefix, value: v}
			}
		case gatewayv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION:
			re, err := fullMatch("path", p.GetValue())
			if err != nil {
				return out, err
			}
			out.path = pathMatcher{kind: pathRegex, value: p.GetValue(), re: re}
		default:
			return out, fmt.Errorf("path: match type %v is not supported; use Exact, PathPrefix or RegularExpression", p.GetType())
		}
	}
	seen := map[string]bool{}
	for i, h := range m.GetHeaders() {
		key := textproto.CanonicalMIMEHeaderKey(h.GetName())
		if seen[key] {
			continue // only the first entry for a name counts
		}
		seen[key] = true
		sm, err := compileString(fmt.Sprintf("headers[%d]", i), key, h)
		if err != nil {
			return out, err
		}
		out.headers = append(out.headers, sm)
	}
	seen = map[string]bool{}
	for i, q := range m.GetQueryParams() {
		if seen[q.GetName()] {
			continue
		}
		seen[q.GetName()] = true
		sm, err := compileString(fmt.Sprintf("queryParams[%d]", i), q.GetName(), q)
		if err != nil {
			return out, err
		}
		out.query = append(out.query, sm)
	}
	return out, nil
}

func compileString(field, key string, s *gatewayv1.StringMatch) (stringMatcher, error) {
	if s.GetName() == "" {
		return stringMatcher{}, fmt.Errorf("%s.name: required", field)
	}
	switch s.GetType() {
	case gatewayv1.MatchType_MATCH_TYPE_EXACT, gatewayv1.MatchType_MATCH_TYPE_UNSPECIFIED:
		return stringMatcher{key: key, value: s.GetValue()}, nil
	case gatewayv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION:
		re, err := fullMatch(field+".value", s.GetValue())
		if err != nil {
			return stringMatcher{}, err
		}
		return stringMatcher{key: key, value: s.GetValue(), re: re}, nil
	}
	return stringMatcher{}, fmt.Errorf("%s.type: %v is not supported; use Exact or RegularExpression", field, s.GetType())
}

func (sm *stringMatcher) matches(v string) bool {
	if sm.re != nil {
		return sm.re.MatchString(v)
	}
	return v == sm.value
}

// MatchPath reports whether path satisfies a PathPrefix match on prefix,
// element by element: "/foo" (or "/foo/") matches "/foo", "/foo/" and
// "/foo/bar" but not "/foobar".
func MatchPath(prefix, path string) bool {
	prefix = strings.TrimRight(prefix, "/")
	return prefixMatch(prefix, path)
}

// prefixMatch is MatchPath with prefix already normalised. Comparing at
// a "/" boundary gives the same answer as splitting both into segments,
// without the allocation.
func prefixMatch(prefix, path string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

func (m *matcher) matches(r *Request) bool {
	switch m.path.kind {
	case pathExact:
		if r.Path != m.path.value {
			return false
		}
	case pathPrefix:
		if !prefixMatch(m.path.value, r.Path) {
			return false
		}
	case pathRegex:
		if !m.path.re.MatchString(r.Path) {
			return false
		}
	}
	if m.method != "" && r.Method != m.method {
		return false
	}
	if m.grpc && !IsGRPC(r.Header) {
		return false
	}
	for i := range m.headers {
		h := &m.headers[i]
		vs := r.Header[h.key]
		switch len(vs) {
		case 0:
			return false
		case 1:
			if !h.matches(vs[0]) {
				return false
			}
		default:
			// A repeated header is matched as the one comma-joined
			// value RFC 9110 §5.3 says it is equivalent to (Envoy does
			// the same).
			if !h.matches(strings.Join(vs, ",")) {
				return false
			}
		}
	}
	for i := range m.query {
		q := &m.query[i]
		v, ok := queryValue(r.RawQuery, q.key)
		if !ok || !q.matches(v) {
			return false
		}
	}
	return true
}

// IsGRPC says whether a request is gRPC (by its content type). It keeps
// GRPCRoute rules from catching plain HTTP POSTs when a waypoint's service
// table holds both kinds.
func IsGRPC(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}

// queryValue returns the first value of the query parameter name, as the
// spec recommends for repeated parameters, without parsing the whole
// query into a map.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") {
			dk, err := url.QueryUnescape(k)
			if err != nil {
				continue
			}
			k = dk
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			dv, err := url.QueryUnescape(v)
			if err != nil {
				return "", false
			}
			v = dv
		}
		return v, true
	}
	return "", false
}

// hostOf strips the port and a trailing dot from a Host header and
// lowercases it (allocating only when it has upper case letters).
func hostOf(h string) string {
	if strings.HasPrefix(h, "[") {
		// IPv6 literal: "[::1]:8080" -> "[::1]".
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[:i+1]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// lookupHost returns the virtual host a request for host (a Host header,
// port allowed) is served by: an exact name, else the wildcard with the
// longest suffix, else "*". ok is false when none applies (the server
// answers 404).
func (t *Table) lookupHost(host string) (*vhost, bool) {
	i, ok := t.index.Lookup(host)
	if !ok {
		return nil, false
	}
	return &t.hosts[i], true
}

// Match returns the first route, in precedence order, of the virtual host
// serving r.Host whose match holds. false means no route: the server
// answers 404.
func (t *Table) Match(r *Request) (*Route, bool) {
	vh, ok := t.lookupHost(r.Host)
	if !ok {
		return nil, false
	}
	for _, rt := range vh.routes {
		if rt.m.matches(r) {
			return rt, true
		}
	}
	return nil, false
}

// MatchHTTP is Match for a *http.Request.
func (t *Table) MatchHTTP(r *http.Request) (*Route, bool) {
	req := FromHTTP(r)
	return t.Match(&req)
}

// Package filter applies Gateway API route filters. Each filter type
// lives in its own sub-package (headermod, redirect, rewrite, mirror,
// cors) as pure functions over headers, paths and status codes, and
// registers a constructor here by type name; a route's filters compile to
// a Chain whose order is the order the route lists them, so the order of
// application is data, never code. Import filter/builtin once (the proxy
// does) to register every built-in filter.
package filter

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Filter type names, as the Gateway API spells them.
const (
	KindRequestHeaderModifier  = "RequestHeaderModifier"
	KindResponseHeaderModifier = "ResponseHeaderModifier"
	KindRequestRedirect        = "RequestRedirect"
	KindURLRewrite             = "URLRewrite"
	KindRequestMirror          = "RequestMirror"
	KindCORS                   = "CORS"
)

// Rand is the random source sampling filters draw from;
// *math/rand/v2.Rand satisfies it.
type Rand interface {
	// Uint64N returns a value in [0, n); n > 0.
	Uint64N(n uint64) uint64
}

// Request is the request as filters see and change it. The proxy fills
// the inputs from the downstream request and the matched route, runs the
// chain, and forwards what the chain left here.
type Request struct {
	Method string
	// Scheme is the downstream scheme: "https" on a TLS listener, else
	// "http".
	Scheme string
	// Host is the Host header (authority), possibly with a port.
	Host string
	// Path is the escaped path without the query; RawQuery the query
	// without "?".
	Path     string
	RawQuery string
	Header   http.Header
	// ListenerPort is the port the request arrived on (redirects keep
	// it when they change neither scheme nor port).
	ListenerPort uint32
	// Prefix and PrefixMatch come from the matched route: the PathPrefix
	// it matched on, normalised without a trailing "/", which
	// ReplacePrefixMatch rewrites are relative to.
	Prefix      string
	PrefixMatch bool
	// Rand drives RequestMirror sampling.
	Rand Rand

	// Mirrors collects the backends a copy of this request goes to.
	Mirrors []*gatewayv1.BackendRef
	// ResponseHeader collects headers to add to the eventual response
	// (CORS); nil until a filter adds one.
	ResponseHeader http.Header
}

// AddResponseHeader records a header for the eventual response.
func (r *Request) AddResponseHeader(name, value string) {
	if r.ResponseHeader == nil {
		r.ResponseHeader = http.Header{}
	}
	r.ResponseHeader.Add(name, value)
}

// Reply is a response a filter answers with instead of forwarding (a
// redirect, a CORS preflight).
type Reply struct {
	Status int
	Header http.Header
}

// Response is the upstream response as response filters see it.
type Response struct {
	Status int
	Header http.Header
}

// Filter is a compiled filter. It implements RequestFilter,
// ResponseFilter or both.
type Filter interface {
	Kind() string
}

// RequestFilter acts on the request; a non-nil Reply ends the chain and
// is sent to the client.
type RequestFilter interface {
	Filter
	OnRequest(r *Request) *Reply
}

// ResponseFilter acts on the response headers before they are sent.
type ResponseFilter interface {
	Filter
	OnResponse(r *Response)
}

// Factory compiles one xDS filter of the kind it was registered for.
type Factory func(f *gatewayv1.Filter) (Filter, error)

var (
	mu       sync.RWMutex
	registry = map[string]Factory{}
)

// Register makes a filter kind available to Compile. It panics on a
// duplicate, which is a programming error caught at init.
func Register(kind string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[kind]; dup {
		panic("filter: " + kind + " registered twice")
	}
	registry[kind] = f
}

// KindOf names the kind of an xDS filter, "" when none is set.
func KindOf(f *gatewayv1.Filter) string {
	switch f.GetKind().(type) {
	case *gatewayv1.Filter_RequestHeaderModifier:
		return KindRequestHeaderModifier
	case *gatewayv1.Filter_ResponseHeaderModifier:
		return KindResponseHeaderModifier
	case *gatewayv1.Filter_RequestRedirect:
		return KindRequestRedirect
	case *gatewayv1.Filter_UrlRewrite:
		return KindURLRewrite
	case *gatewayv1.Filter_RequestMirror:
		return KindRequestMirror
	case *gatewayv1.Filter_Cors:
		return KindCORS
	}
	return ""
}

// Chain is a route's (or backendRef's) filters in the order written.
type Chain []Filter

// Compile builds a chain once per config. Every problem is reported (the
// route should then be treated as invalid: the spec says a filter that
// cannot be applied must not be skipped).
func Compile(fs []*gatewayv1.Filter) (Chain, error) {
	out := make(Chain, 0, len(fs))
	var errs []error
	mu.RLock()
	defer mu.RUnlock()
	for i, f := range fs {
		kind := KindOf(f)
		if kind == "" {
			errs = append(errs, fmt.Errorf("filter: filters[%d]: no filter body set; want one of requestHeaderModifier, responseHeaderModifier, requestRedirect, urlRewrite, requestMirror, cors", i))
			continue
		}
		fac, ok := registry[kind]
		if !ok {
			errs = append(errs, fmt.Errorf("filter: filters[%d]: no implementation of %s is registered (import internal/waypoint/filter/builtin)", i, kind))
			continue
		}
		c, err := fac(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("filter: filters[%d] (%s): %w", i, kind, err))
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

// OnRequest runs the request filters in order and stops at the first
// reply.
func (c Chain) OnRequest(r *Request) *Reply {
	for _, f := range c {
		if rf, ok := f.(RequestFilter); ok {
			if rep := rf.OnRequest(r); rep != nil {
				return rep
			}
		}
	}
	return nil
}

// OnResponse runs the response filters in order.
func (c Chain) OnResponse(r *Response) {
	for _, f := range c {
		if rf, ok := f.(ResponseFilter); ok {
			rf.OnResponse(r)
		}
	}
}

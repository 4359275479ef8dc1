// Package headermod implements the RequestHeaderModifier and
// ResponseHeaderModifier filters: set overwrites every value of a header,
// add appends a value, remove deletes the header; names are
// case-insensitive (they are canonicalised once, at compile time).
package headermod

import (
	"net/http"
	"net/textproto"

	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

type header struct{ key, value string }

// Modifier is a compiled HeaderModifier.
type Modifier struct {
	set, add []header
	remove   []string
}

// Compile canonicalises the names of m.
func Compile(m *gatewayv1.HeaderModifier) *Modifier {
	out := &Modifier{}
	for _, h := range m.GetSet() {
		out.set = append(out.set, header{textproto.CanonicalMIMEHeaderKey(h.GetName()), h.GetValue()})
	}
	for _, h := range m.GetAdd() {
		out.add = append(out.add, header{textproto.CanonicalMIMEHeaderKey(h.GetName()), h.GetValue()})
	}
	for _, n := range m.GetRemove() {
		out.remove = append(out.remove, textproto.CanonicalMIMEHeaderKey(n))
	}
	return out
}

// Apply modifies h: set, then add, then remove (the spec allows one
// action per name, so the order only matters for invalid input).
func (m *Modifier) Apply(h http.Header) {
	for _, s := range m.set {
		h[s.key] = []string{s.value}
	}
	for _, a := range m.add {
		h[a.key] = append(h[a.key], a.value)
	}
	for _, k := range m.remove {
		delete(h, k)
	}
}

type requestFilter struct{ m *Modifier }

func (requestFilter) Kind() string { return filter.KindRequestHeaderModifier }

func (f requestFilter) OnRequest(r *filter.Request) *filter.Reply {
	f.m.Apply(r.Header)
	return nil
}

type responseFilter struct{ m *Modifier }

func (responseFilter) Kind() string { return filter.KindResponseHeaderModifier }

func (f responseFilter) OnResponse(r *filter.Response) { f.m.Apply(r.Header) }

func init() {
	filter.Register(filter.KindRequestHeaderModifier, func(f *gatewayv1.Filter) (filter.Filter, error) {
		return requestFilter{Compile(f.GetRequestHeaderModifier())}, nil
	})
	filter.Register(filter.KindResponseHeaderModifier, func(f *gatewayv1.Filter) (filter.Filter, error) {
		return responseFilter{Compile(f.GetResponseHeaderModifier())}, nil
	})
}

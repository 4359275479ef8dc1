package lb

import (
	"net/http"
	"net/netip"
	"strings"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// HTTPRequest adapts an *http.Request to Request. Use a pointer to it: the
// cookie a hash policy generates is stored in NewCookie, which the caller
// must add to the response.
type HTTPRequest struct {
	Req *http.Request
	// Source is the downstream client address (for HBONE, the original
	// source rather than the node proxy's).
	Source netip.Addr
	// NewCookie is set by Pick when a cookie hash policy generated the
	// cookie; add it to the response with http.SetCookie.
	NewCookie *http.Cookie
}

var _ Request = (*HTTPRequest)(nil)

// Header returns the first value of a header. Host is answered from
// Req.Host, where net/http moves it (":authority" for HTTP/2).
func (r *HTTPRequest) Header(name string) (string, bool) {
	if name == "Host" || name == ":authority" {
		return r.Req.Host, r.Req.Host != ""
	}
	v := r.Req.Header[name]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// Cookie scans the Cookie headers for name without allocating, unlike
// http.Request.Cookie which parses them all. The first occurrence wins.
func (r *HTTPRequest) Cookie(name string) (string, bool) {
	for _, line := range r.Req.Header["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

// SourceAddr returns Source.
func (r *HTTPRequest) SourceAddr() netip.Addr { return r.Source }

// SetCookie records c in NewCookie.
func (r *HTTPRequest) SetCookie(c *http.Cookie) { r.NewCookie = c }

// FromBackend returns the endpoints of an xDS Backend that serve the given
// service port, for Balancer.Update. ID is "<namespace>/<workload>" (the
// address when the endpoint has no workload), Addr is the endpoint's first
// address of the requested family (IPv4 first unless preferV6) with the
// target port, and Value is the *gatewayv1.Endpoint. Endpoints that do not
// map the port or have no usable address are left out, and so are
// endpoints repeating an earlier ID.
func FromBackend(b *gatewayv1.Backend, servicePort uint32, preferV6 bool) []Endpoint {
	out := make([]Endpoint, 0, len(b.GetEndpoints()))
	seen := make(map[string]bool, len(b.GetEndpoints()))
	for _, e := range b.GetEndpoints() {
		target, ok := uint32(0), false
		for _, pm := range e.GetPorts() {
			if pm.GetServicePort() == servicePort {
				target, ok = pm.GetTargetPort(), true
				break
			}
		}
		if !ok || target == 0 || target > 65535 {
			continue
		}
		addr, ok := pickAddr(e.GetAddresses(), preferV6)
		if !ok {
			continue
		}
		ap := netip.AddrPortFrom(addr, uint16(target))
		id := ap.String()
		if w := e.GetWorkload(); w.GetName() != "" {
			id = w.GetNamespace() + "/" + w.GetName()
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		loc := e.GetLocality()
		out = append(out, Endpoint{
			ID:       id,
			Addr:     ap,
			Locality: Locality{Region: loc.GetRegion(), Zone: loc.GetZone(), Subzone: loc.GetSubzone()},
			Value:    e,
		})
	}
	return out
}

func pickAddr(raw [][]byte, preferV6 bool) (netip.Addr, bool) {
	var first netip.Addr
	for _, b := range raw {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			continue
		}
		a = a.Unmap()
		if a.Is6() == preferV6 {
			return a, true
		}
		if !first.IsValid() {
			first = a
		}
	}
	return first, first.IsValid()
}

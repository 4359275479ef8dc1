package hbone

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Header names HBONE uses (HTTP/2 sends them lower-case).
const (
	HeaderForwarded   = "Forwarded"
	HeaderBaggage     = "Baggage"
	HeaderTraceParent = "Traceparent"
)

// ParseAuthority parses a CONNECT :authority that must be an IP literal and
// a port: "10.0.0.7:8080" or "[fd00::7]:8080". IPv4-mapped IPv6 addresses
// are unmapped (the proxies key workloads by the plain IPv4 address); zones
// and port 0 are refused.
func ParseAuthority(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("hbone: authority %q: want ip:port (IPv6 in brackets): %w", s, err)
	}
	if ap.Addr().Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("hbone: authority %q: IPv6 zones are not allowed; want ip:port", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("hbone: authority %q: port 0; want a port in 1-65535", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// Forwarded is the HBONE use of RFC 7239's Forwarded header: the original
// client address and, when the client targeted a service, its hostname.
type Forwarded struct {
	For  netip.AddrPort // original source ip:port; port 0 when the header gave only an IP
	Host string         // service hostname, empty when a workload was targeted directly
}

// String formats f as a header value: for="<ip:port>"[;host=<host>]. The
// for value is always quoted since it contains ':' (RFC 7239 §6).
func (f Forwarded) String() string {
	var b strings.Builder
	if f.For.IsValid() {
		b.WriteString(`for="`)
		if f.For.Port() == 0 {
			if f.For.Addr().Is6() {
				b.WriteString("[" + f.For.Addr().String() + "]")
			} else {
				b.WriteString(f.For.Addr().String())
			}
		} else {
			b.WriteString(f.For.String())
		}
		b.WriteByte('"')
	}
	if f.Host != "" {
		if b.Len() > 0 {
			b.WriteByte(';')
		}
		b.WriteString("host=")
		writeTokenOrQuoted(&b, f.Host)
	}
	return b.String()
}

// ParseForwarded reads the first forwarded-element of a Forwarded header
// value (the hop nearest the original client). Unknown parameters are
// ignored; a malformed element or a for= that is not an IP (RFC 7239
// obfuscated identifiers, "unknown") is an error.
func ParseForwarded(s string) (Forwarded, error) {
	var f Forwarded
	p := headerParser{s: s}
	for first := true; ; first = false {
		p.skipOWS()
		if p.done() || p.peek() == ',' {
			if first {
				return Forwarded{}, fmt.Errorf("hbone: forwarded %q: empty element; want for=\"ip:port\"", s)
			}
			return f, nil
		}
		if !first {
			if p.peek() != ';' {
				return Forwarded{}, fmt.Errorf("hbone: forwarded %q: want ';' between parameters at offset %d", s, p.i)
			}
			p.i++
			p.skipOWS()
		}
		name := p.token()
		if name == "" || p.done() || p.peek() != '=' {
			return Forwarded{}, fmt.Errorf("hbone: forwarded %q: want name=value at offset %d", s, p.i)
		}
		p.i++
		val, err := p.value()
		if err != nil {
			return Forwarded{}, fmt.Errorf("hbone: forwarded %q: %w", s, err)
		}
		switch strings.ToLower(name) {
		case "for":
			ap, err := parseNode(val)
			if err != nil {
				return Forwarded{}, fmt.Errorf("hbone: forwarded %q: for=%q: %w", s, val, err)
			}
			f.For = ap
		case "host":
			f.Host = val
		}
		p.skipOWS()
	}
}

// parseNode parses an RFC 7239 node that is an IP with an optional port.
func parseNode(v string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		if ap.Addr().Zone() != "" {
			return netip.AddrPort{}, errors.New("IPv6 zones are not allowed")
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host := v
	if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
		host = v[1 : len(v)-1]
	} else if strings.Contains(v, ":") {
		return netip.AddrPort{}, errors.New("want ip, ip:port or \"[ipv6]:port\"")
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, errors.New("want ip, ip:port or \"[ipv6]:port\"")
	}
	return netip.AddrPortFrom(a.Unmap(), 0), nil
}

// Baggage is the W3C baggage ztunnel sends with every HBONE request to
// describe the source workload for telemetry.
type Baggage struct {
	ClusterName    string // k8s.cluster.name
	Namespace      string // k8s.namespace.name
	WorkloadKind   string // the <kind> of k8s.<kind>.name: deployment, pod, job, cronjob, ...; "deployment" when empty
	WorkloadName   string // k8s.<kind>.name
	ServiceName    string // service.name (canonical service)
	ServiceVersion string // service.version (canonical revision)
	Region         string // cloud.region
	Zone           string // cloud.availability_zone
}

// String formats b as a baggage header value, empty members left out, in
// ztunnel's order. Values are percent-encoded where W3C baggage requires.
func (b Baggage) String() string {
	var s strings.Builder
	add := func(k, v string) {
		if v == "" {
			return
		}
		if s.Len() > 0 {
			s.WriteByte(',')
		}
		s.WriteString(k)
		s.WriteByte('=')
		writeBaggageValue(&s, v)
	}
	add("k8s.cluster.name", b.ClusterName)
	add("k8s.namespace.name", b.Namespace)
	if b.WorkloadName != "" {
		kind := b.WorkloadKind
		if kind == "" || !isKind(kind) {
			kind = "deployment"
		}
		add("k8s."+kind+".name", b.WorkloadName)
	}
	add("service.name", b.ServiceName)
	add("service.version", b.ServiceVersion)
	add("cloud.region", b.Region)
	add("cloud.availability_zone", b.Zone)
	return s.String()
}

// ParseBaggage reads the members HBONE uses from one or more baggage header
// values (several header lines are one list). Other keys and member
// properties (";..." after the value) are ignored; a later member wins over
// an earlier one with the same key. A list member without '=' or a bad
// percent-encoding is an error, and nothing is returned with it.
func ParseBaggage(values ...string) (Baggage, error) {
	var b Baggage
	for _, v := range values {
		for member := range strings.SplitSeq(v, ",") {
			member = strings.Trim(member, " \t")
			if member == "" {
				continue
			}
			if i := strings.IndexByte(member, ';'); i >= 0 {
				member = member[:i]
			}
			k, val, ok := strings.Cut(member, "=")
			if !ok {
				return Baggage{}, fmt.Errorf("hbone: baggage member %q: want key=value", member)
			}
			k = strings.Trim(k, " \t")
			val, err := unescapeBaggage(strings.Trim(val, " \t"))
			if err != nil {
				return Baggage{}, fmt.Errorf("hbone: baggage member %q: %w", member, err)
			}
			switch k {
			case "k8s.cluster.name":
				b.ClusterName = val
			case "k8s.namespace.name":
				b.Namespace = val
			case "service.name":
				b.ServiceName = val
			case "service.version":
				b.ServiceVersion = val
			case "cloud.region":
				b.Region = val
			case "cloud.availability_zone":
				b.Zone = val
			default:
				if kind, ok := strings.CutPrefix(k, "k8s."); ok {
					if kind, ok = strings.CutSuffix(kind, ".name"); ok && isKind(kind) && kind != "cluster" && kind != "namespace" {
						b.WorkloadKind, b.WorkloadName = kind, val
						if val == "" {
							b.WorkloadKind = ""
						}
					}
				}
			}
		}
	}
	return b, nil
}

func isKind(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'a' || s[i] > 'z' {
			return false
		}
	}
	return true
}

// isBaggageOctet is W3C baggage's baggage-octet, minus '%' which starts an
// escape.
func isBaggageOctet(c byte) bool {
	return c == 0x21 || (c >= 0x23 && c <= 0x2B && c != '%') || (c >= 0x2D && c <= 0x3A) || (c >= 0x3C && c <= 0x5B) || (c >= 0x5D && c <= 0x7E)
}

const hexUpper = "0123456789ABCDEF"

func writeBaggageValue(b *strings.Builder, v string) {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if isBaggageOctet(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexUpper[c>>4])
		b.WriteByte(hexUpper[c&15])
	}
}

func unescapeBaggage(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			out = append(out, v[i])
			continue
		}
		if i+2 >= len(v) {
			return "", fmt.Errorf("truncated percent-escape at offset %d", i)
		}
		h, ok1 := unhex(v[i+1])
		l, ok2 := unhex(v[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad percent-escape %q at offset %d", v[i:i+3], i)
		}
		out = append(out, h<<4|l)
		i += 2
	}
	return string(out), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// TraceParent is a W3C Trace Context traceparent (version 00).
type TraceParent struct {
	TraceID  [16]byte
	ParentID [8]byte
	Flags    byte // bit 0: sampled
}

// NewTraceParent makes a random, unsampled trace context, as ztunnel does
// for a connection that arrived without one.
func NewTraceParent() TraceParent {
	var t TraceParent
	for !t.IsValid() {
		_, _ = rand.Read(t.TraceID[:])
		_, _ = rand.Read(t.ParentID[:])
	}
	return t
}

// IsValid reports whether neither ID is all zeros (W3C: such values are invalid).
func (t TraceParent) IsValid() bool {
	return t.TraceID != [16]byte{} && t.ParentID != [8]byte{}
}

// String formats t as "00-<trace-id>-<parent-id>-<flags>".
func (t TraceParent) String() string {
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], t.TraceID[:])
	b[35] = '-'
	hex.Encode(b[36:52], t.ParentID[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{t.Flags})
	return string(b[:])
}

// ParseTraceParent parses a traceparent header value. Version 00 must be
// exactly 55 characters; a later version may carry more fields after a '-',
// which are ignored (W3C forward compatibility); version ff, upper-case hex
// and all-zero IDs are refused.
func ParseTraceParent(s string) (TraceParent, error) {
	var t TraceParent
	bad := func(why string) (TraceParent, error) {
		return TraceParent{}, fmt.Errorf("hbone: traceparent %q: %s; want 00-<32 hex>-<16 hex>-<2 hex>", s, why)
	}
	if len(s) < 55 {
		return bad("too short")
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return bad("misplaced '-'")
	}
	if !isLowerHex(s[:2]) || !isLowerHex(s[3:35]) || !isLowerHex(s[36:52]) || !isLowerHex(s[53:55]) {
		return bad("not lower-case hex")
	}
	switch {
	case s[:2] == "ff":
		return bad("version ff is invalid")
	case s[:2] == "00" && len(s) != 55:
		return bad("version 00 has exactly four fields")
	case len(s) > 55 && s[55] != '-':
		return bad("trailing data")
	}
	_, _ = hex.Decode(t.TraceID[:], []byte(s[3:35]))
	_, _ = hex.Decode(t.ParentID[:], []byte(s[36:52]))
	var fl [1]byte
	_, _ = hex.Decode(fl[:], []byte(s[53:55]))
	t.Flags = fl[0]
	if !t.IsValid() {
		return bad("all-zero trace-id or parent-id")
	}
	return t, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// headerParser is a tiny cursor for RFC 7230 token / quoted-string lists.
type headerParser struct {
	s string
	i int
}

func (p *headerParser) done() bool { return p.i >= len(p.s) }
func (p *headerParser) peek() byte { return p.s[p.i] }
func (p *headerParser) skipOWS() {
	for !p.done() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

func (p *headerParser) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.peek()) {
		p.i++
	}
	return p.s[start:p.i]
}

func (p *headerParser) value() (string, error) {
	if p.done() {
		return "", fmt.Errorf("missing value at offset %d", p.i)
	}
	if p.peek() != '"' {
		v := p.token()
		if v == "" {
			return "", fmt.Errorf("want token or quoted-string at offset %d", p.i)
		}
		return v, nil
	}
	p.i++
	var b strings.Builder
	for !p.done() {
		c := p.peek()
		p.i++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\':
			if p.done() {
				return "", errors.New("unterminated escape in quoted-string")
			}
			b.WriteByte(p.peek())
			p.i++
		case c < 0x20 && c != '\t', c == 0x7f:
			return "", fmt.Errorf("control character in quoted-string at offset %d", p.i-1)
		default:
			b.WriteByte(c)
		}
	}
	return "", errors.New("unterminated quoted-string")
}

func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func writeTokenOrQuoted(b *strings.Builder, v string) {
	tok := v != ""
	for i := 0; i < len(v) && tok; i++ {
		tok = isTokenChar(v[i])
	}
	if tok {
		b.WriteString(v)
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
}

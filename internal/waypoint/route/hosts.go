package route

import "strings"

// HostIndex finds what serves a hostname the Gateway API way: the exact
// name, else the wildcard with the longest suffix ("*.a.example.com"
// before "*.example.com", and a wildcard needs at least one label in front
// of it), else "*". Route tables use it for Host headers and the TLS
// listeners of a port for SNI. The zero value is empty; build it before
// sharing it, reads are then safe for concurrent use.
type HostIndex[V any] struct {
	// exact maps a lowercase host name to its value.
	exact map[string]V
	// wild maps a wildcard's suffix (".example.com" for "*.example.com").
	wild    map[string]V
	star    V
	hasStar bool
}

// normalizeHost lowercases a configured name and drops a trailing dot;
// "" means "*".
func normalizeHost(name string) string {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" {
		return "*"
	}
	return name
}

// Add files v under name ("", "*", "*.suffix" or an exact name). It
// returns false, and keeps the earlier value, when name is already there.
func (x *HostIndex[V]) Add(name string, v V) bool {
	name = normalizeHost(name)
	switch {
	case name == "*":
		if x.hasStar {
			return false
		}
		x.star, x.hasStar = v, true
	case strings.HasPrefix(name, "*."):
		if _, ok := x.wild[name[1:]]; ok {
			return false
		}
		if x.wild == nil {
			x.wild = map[string]V{}
		}
		x.wild[name[1:]] = v
	default:
		if _, ok := x.exact[name]; ok {
			return false
		}
		if x.exact == nil {
			x.exact = map[string]V{}
		}
		x.exact[name] = v
	}
	return true
}

// Lookup returns the value serving host (a Host header, port allowed, or
// a TLS server name); false when nothing does.
func (x *HostIndex[V]) Lookup(host string) (V, bool) {
	if len(x.exact) == 0 && len(x.wild) == 0 {
		return x.star, x.hasStar
	}
	h := hostOf(host)
	if v, ok := x.exact[h]; ok {
		return v, true
	}
	if len(x.wild) > 0 {
		// Walking the dots left to right tries the longest suffix first;
		// i > 0 keeps at least one label in front of the wildcard.
		for i := 1; i < len(h); i++ {
			if h[i] != '.' {
				continue
			}
			if v, ok := x.wild[h[i:]]; ok {
				return v, true
			}
		}
	}
	return x.star, x.hasStar
}

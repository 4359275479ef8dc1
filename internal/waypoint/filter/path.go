package filter

import (
	"strings"

	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// ReplacePrefix replaces the PathPrefix match prefix of path with repl,
// element-wise and ignoring trailing slashes on both, as the spec's
// ReplacePrefixMatch table shows:
//
//	/foo/bar  /foo   /xyz   -> /xyz/bar
//	/foo/bar  /foo   /xyz/  -> /xyz/bar
//	/foo/bar  /foo/  /xyz   -> /xyz/bar
//	/foo      /foo   /xyz   -> /xyz
//	/foo/     /foo   /xyz   -> /xyz/
//	/foo/bar  /foo   ""     -> /bar
//	/foo/     /foo   ""     -> /
//	/foo      /foo   ""     -> /
//	/foo      /foo   /      -> /
//
// A path the prefix does not match (at an element boundary) is returned
// unchanged; the route could not have matched it.
func ReplacePrefix(path, prefix, repl string) string {
	prefix = strings.TrimRight(prefix, "/")
	if !strings.HasPrefix(path, prefix) || (len(path) > len(prefix) && path[len(prefix)] != '/') {
		return path
	}
	rest := path[len(prefix):] // "" or starts with "/"
	repl = strings.TrimRight(repl, "/")
	if rest == "" && repl == "" {
		return "/"
	}
	if repl == "" {
		return rest
	}
	return repl + rest
}

// ModifyPath applies a redirect's or rewrite's path modifier. prefix and
// prefixMatch describe the route's path match; ReplacePrefixMatch on a
// route that did not match by prefix leaves the path alone (the control
// plane rejects that combination).
func ModifyPath(path string, pm *gatewayv1.PathModifier, prefix string, prefixMatch bool) string {
	switch k := pm.GetKind().(type) {
	case *gatewayv1.PathModifier_ReplaceFullPath:
		if k.ReplaceFullPath == "" {
			return "/"
		}
		return k.ReplaceFullPath
	case *gatewayv1.PathModifier_ReplacePrefixMatch:
		if !prefixMatch {
			return path
		}
		return ReplacePrefix(path, prefix, k.ReplacePrefixMatch)
	}
	return path
}

// SplitHostPort splits a Host header into host and port ("" when none),
// keeping IPv6 brackets off the host.
func SplitHostPort(hostport string) (host, port string) {
	if strings.HasPrefix(hostport, "[") {
		i := strings.IndexByte(hostport, ']')
		if i < 0 {
			return hostport, ""
		}
		host, rest := hostport[1:i], hostport[i+1:]
		if strings.HasPrefix(rest, ":") {
			return host, rest[1:]
		}
		return host, ""
	}
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && strings.IndexByte(hostport, ':') == i {
		return hostport[:i], hostport[i+1:]
	}
	return hostport, ""
}

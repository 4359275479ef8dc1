// Package rewrite implements the URLRewrite filter: it replaces the Host
// header and rewrites the path (full path, or the matched prefix) before
// the request is forwarded.
package rewrite

import (
	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Rewrite returns the host and path a request is forwarded with. host is
// replaced whole (port included) when the filter sets a hostname; prefix
// and prefixMatch describe the route's path match, for
// ReplacePrefixMatch.
func Rewrite(u *gatewayv1.URLRewrite, host, path, prefix string, prefixMatch bool) (string, string) {
	if h := u.GetHostname(); h != "" {
		host = h
	}
	if pm := u.GetPath(); pm != nil {
		path = filter.ModifyPath(path, pm, prefix, prefixMatch)
	}
	return host, path
}

type rewriteFilter struct{ u *gatewayv1.URLRewrite }

func (rewriteFilter) Kind() string { return filter.KindURLRewrite }

func (f rewriteFilter) OnRequest(r *filter.Request) *filter.Reply {
	r.Host, r.Path = Rewrite(f.u, r.Host, r.Path, r.Prefix, r.PrefixMatch)
	return nil
}

func init() {
	filter.Register(filter.KindURLRewrite, func(f *gatewayv1.Filter) (filter.Filter, error) {
		return rewriteFilter{f.GetUrlRewrite()}, nil
	})
}

package translate

import (
	"cmp"
	"slices"
	"strings"

	"github.com/ambitmesh/ambit/internal/control/model"
)

// sortEntries orders routes by the Gateway API precedence rules; the first
// route that matches a request wins.
func sortEntries(es []routeEntry) {
	slices.SortStableFunc(es, compareEntries)
}

// kindRank keeps L7 routes before L4 ones in mixed tables (a waypoint's
// service table may hold HTTPRoutes and a TCPRoute for the same service:
// the TCPRoute only serves traffic that is not HTTP).
func kindRank(kind string) int {
	switch kind {
	case KindHTTPRoute, KindGRPCRoute:
		return 0
	case KindTLSRoute:
		return 1
	}
	return 2
}

func compareEntries(a, b routeEntry) int {
	sa, sb := a.route.Source, b.route.Source
	c := cmp.Or(cmp.Compare(a.hostRank, b.hostRank), cmp.Compare(kindRank(sa.Kind), kindRank(sb.Kind)))
	if c != 0 {
		return c
	}
	switch {
	case sa.Kind == KindGRPCRoute && sb.Kind == KindGRPCRoute:
		// GRPCRoute: longest service, then longest method, then most
		// header matches.
		c = cmp.Or(-cmp.Compare(a.grpcSvc, b.grpcSvc), -cmp.Compare(a.grpcMethod, b.grpcMethod),
			-cmp.Compare(len(a.route.Match.Headers), len(b.route.Match.Headers)))
	case kindRank(sa.Kind) == 0:
		c = compareHTTPMatches(a.route.Match, b.route.Match)
	}
	// Ties: the oldest route, then namespace/name, then rule and match
	// order within the route.
	return cmp.Or(c,
		a.created.Time.Compare(b.created.Time),
		cmp.Compare(sa.Namespace, sb.Namespace), cmp.Compare(sa.Name, sb.Name), cmp.Compare(sa.Kind, sb.Kind),
		cmp.Compare(sa.Rule, sb.Rule), cmp.Compare(sa.Match, sb.Match))
}

// compareHTTPMatches applies HTTPRoute precedence: Exact path, then the
// longest prefix, then a method match, then the most header matches, then
// the most query parameter matches. Regular expression paths rank between
// Exact and PathPrefix (the spec leaves their place to the implementation):
// after the prefixes, a catch-all "/" would shadow every regex, and a regex
// is written to single out specific paths.
func compareHTTPMatches(a, b model.RouteMatch) int {
	pathRank := func(p *model.PathMatch) (rank, length int) {
		if p == nil {
			return 2, 0
		}
		switch p.Type {
		case model.MatchExact:
			return 0, len(p.Value)
		case model.MatchRegularExpression:
			return 1, len(p.Value)
		}
		// A trailing "/" does not change what a prefix matches.
		return 2, len(strings.TrimSuffix(p.Value, "/"))
	}
	ra, la := pathRank(a.Path)
	rb, lb := pathRank(b.Path)
	has := func(s string) int {
		if s != "" {
			return 1
		}
		return 0
	}
	return cmp.Or(cmp.Compare(ra, rb), -cmp.Compare(la, lb),
		-cmp.Compare(has(a.Method), has(b.Method)),
		-cmp.Compare(len(a.Headers), len(b.Headers)),
		-cmp.Compare(len(a.QueryParams), len(b.QueryParams)))
}

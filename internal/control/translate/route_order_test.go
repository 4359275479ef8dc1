package translate

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/internal/control/model"
)

func gwDuration(s string) gwv1.Duration { return gwv1.Duration(s) }

func TestSortEntriesHTTPPrecedence(t *testing.T) {
	old := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	young := metav1.NewTime(old.Add(time.Hour))
	entry := func(name string, created metav1.Time, rule int, m model.RouteMatch) routeEntry {
		return routeEntry{created: created, route: model.Route{
			Source: model.RouteSource{Kind: KindHTTPRoute, Ref: model.Ref{Namespace: "ns", Name: name}, Rule: rule},
			Match:  m,
		}}
	}
	prefix := func(v string) *model.PathMatch { return &model.PathMatch{Type: model.MatchPathPrefix, Value: v} }
	hdr := []model.StringMatch{{Type: model.MatchExact, Name: "a", Value: "1"}}
	es := []routeEntry{
		entry("catch-all", old, 0, model.RouteMatch{Path: prefix("/")}),
		entry("young-api", young, 0, model.RouteMatch{Path: prefix("/api")}),
		entry("b-api", old, 0, model.RouteMatch{Path: prefix("/api")}),
		entry("a-api", old, 1, model.RouteMatch{Path: prefix("/api")}),
		entry("a-api", old, 0, model.RouteMatch{Path: prefix("/api/")}),
		entry("query", old, 0, model.RouteMatch{Path: prefix("/api"), QueryParams: hdr}),
		entry("header", old, 0, model.RouteMatch{Path: prefix("/api"), Headers: hdr}),
		entry("method", old, 0, model.RouteMatch{Path: prefix("/api"), Method: "GET"}),
		entry("longer", young, 0, model.RouteMatch{Path: prefix("/api/v1")}),
		entry("regex", young, 0, model.RouteMatch{Path: &model.PathMatch{Type: model.MatchRegularExpression, Value: "/x.*"}}),
		entry("exact", young, 0, model.RouteMatch{Path: &model.PathMatch{Type: model.MatchExact, Value: "/"}}),
	}
	sortEntries(es)
	var got []string
	for _, e := range es {
		got = append(got, e.route.Source.Name)
	}
	// "/api/" equals "/api" as a prefix; rule 0 of a-api comes before rule 1.
	want := []string{"exact", "regex", "longer", "method", "header", "query", "a-api", "a-api", "b-api", "young-api", "catch-all"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if es[6].route.Source.Rule != 0 || es[7].route.Source.Rule != 1 {
		t.Errorf("a-api rules in order %d, %d; want 0, 1", es[6].route.Source.Rule, es[7].route.Source.Rule)
	}
}

func TestSortEntriesGRPCPrecedence(t *testing.T) {
	entry := func(name string, svc, method, headers int) routeEntry {
		return routeEntry{grpcSvc: svc, grpcMethod: method, route: model.Route{
			Source: model.RouteSource{Kind: KindGRPCRoute, Ref: model.Ref{Namespace: "ns", Name: name}},
			Match:  model.RouteMatch{Headers: make([]model.StringMatch, headers)},
		}}
	}
	es := []routeEntry{entry("all", 0, 0, 0), entry("svc", 10, 0, 0), entry("svc-method", 10, 5, 0), entry("svc-method-hdr", 10, 5, 1), entry("long-svc", 20, 0, 0)}
	sortEntries(es)
	var got []string
	for _, e := range es {
		got = append(got, e.route.Source.Name)
	}
	want := []string{"long-svc", "svc-method-hdr", "svc-method", "svc", "all"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

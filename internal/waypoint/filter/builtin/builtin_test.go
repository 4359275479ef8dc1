package builtin_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	_ "github.com/ambitmesh/ambit/internal/waypoint/filter/builtin"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

func set(name, v string) *gatewayv1.Filter {
	return &gatewayv1.Filter{Kind: &gatewayv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &gatewayv1.HeaderModifier{Set: []*gatewayv1.Header{{Name: name, Value: v}}}}}
}

func TestOrderIsData(t *testing.T) {
	// The same filters in two orders: the later set wins each time.
	for _, order := range [][]string{{"first", "second"}, {"second", "first"}} {
		chain, err := filter.Compile([]*gatewayv1.Filter{set("x", order[0]), set("x", order[1])})
		if err != nil {
			t.Fatal(err)
		}
		r := &filter.Request{Header: http.Header{}}
		chain.OnRequest(r)
		if got := r.Header.Get("X"); got != order[1] {
			t.Errorf("order %v: x=%q", order, got)
		}
	}
}

func TestReplyEndsChain(t *testing.T) {
	chain, err := filter.Compile([]*gatewayv1.Filter{
		set("before", "1"),
		{Kind: &gatewayv1.Filter_RequestRedirect{RequestRedirect: &gatewayv1.Redirect{Hostname: "example.org"}}},
		set("after", "1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &filter.Request{Scheme: "http", Host: "gw", Path: "/", ListenerPort: 80, Header: http.Header{}}
	rep := chain.OnRequest(r)
	if rep == nil || rep.Status != 302 {
		t.Fatalf("reply %+v", rep)
	}
	if d := cmp.Diff(http.Header{"Before": {"1"}}, r.Header); d != "" {
		t.Errorf("headers (-want +got):\n%s", d)
	}
}

func TestEveryKindRegistered(t *testing.T) {
	fs := []*gatewayv1.Filter{
		set("a", "1"),
		{Kind: &gatewayv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &gatewayv1.HeaderModifier{}}},
		{Kind: &gatewayv1.Filter_RequestRedirect{RequestRedirect: &gatewayv1.Redirect{}}},
		{Kind: &gatewayv1.Filter_UrlRewrite{UrlRewrite: &gatewayv1.URLRewrite{}}},
		{Kind: &gatewayv1.Filter_RequestMirror{RequestMirror: &gatewayv1.Mirror{Backend: &gatewayv1.BackendRef{Service: "ns/m"}}}},
		{Kind: &gatewayv1.Filter_Cors{Cors: &gatewayv1.CORS{}}},
	}
	chain, err := filter.Compile(fs)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range chain {
		if want := filter.KindOf(fs[i]); f.Kind() != want {
			t.Errorf("chain[%d] is %s, want %s", i, f.Kind(), want)
		}
	}
	_, err = filter.Compile([]*gatewayv1.Filter{{}})
	if err == nil || !strings.Contains(err.Error(), "filters[0]: no filter body set") {
		t.Errorf("empty filter: %v", err)
	}
}

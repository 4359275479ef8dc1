package headermod

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

func hs(kv ...string) []*gatewayv1.Header {
	var out []*gatewayv1.Header
	for i := 0; i < len(kv); i += 2 {
		out = append(out, &gatewayv1.Header{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestApply(t *testing.T) {
	cases := []struct {
		name string
		m    *gatewayv1.HeaderModifier
		in   http.Header
		want http.Header
	}{
		// The spec's examples.
		{"set overwrites", &gatewayv1.HeaderModifier{Set: hs("my-header", "bar")},
			http.Header{"My-Header": {"foo"}}, http.Header{"My-Header": {"bar"}}},
		{"set overwrites all values", &gatewayv1.HeaderModifier{Set: hs("my-header", "bar")},
			http.Header{"My-Header": {"a", "b"}}, http.Header{"My-Header": {"bar"}}},
		{"set creates", &gatewayv1.HeaderModifier{Set: hs("X-New", "v")},
			http.Header{}, http.Header{"X-New": {"v"}}},
		{"add appends", &gatewayv1.HeaderModifier{Add: hs("my-header", "bar,baz")},
			http.Header{"My-Header": {"foo"}}, http.Header{"My-Header": {"foo", "bar,baz"}}},
		{"add creates", &gatewayv1.HeaderModifier{Add: hs("my-header", "bar")},
			http.Header{}, http.Header{"My-Header": {"bar"}}},
		{"remove", &gatewayv1.HeaderModifier{Remove: []string{"my-header1", "my-header3"}},
			http.Header{"My-Header1": {"foo"}, "My-Header2": {"bar"}, "My-Header3": {"baz"}}, http.Header{"My-Header2": {"bar"}}},
		{"names case-insensitive", &gatewayv1.HeaderModifier{Set: hs("X-HEADER-SET", "s"), Add: hs("x-header-add", "a"), Remove: []string{"X-HEADER-remove"}},
			http.Header{"X-Header-Set": {"old"}, "X-Header-Add": {"1"}, "X-Header-Remove": {"r"}},
			http.Header{"X-Header-Set": {"s"}, "X-Header-Add": {"1", "a"}}},
		{"remove absent", &gatewayv1.HeaderModifier{Remove: []string{"nope"}}, http.Header{"A": {"1"}}, http.Header{"A": {"1"}}},
		// Conformance httproute-request-header-modifier / rewrite-path.
		{"conformance", &gatewayv1.HeaderModifier{
			Set: hs("X-Header-Set", "set-overwrites-values"),
			Add: hs("X-Header-Add", "header-val-1", "X-Header-Add-Append", "header-val-2"), Remove: []string{"X-Header-Remove"}},
			http.Header{"X-Header-Remove": {"remove-val"}, "X-Header-Add-Append": {"append-val-1"}, "X-Header-Set": {"set-val"}},
			http.Header{"X-Header-Add": {"header-val-1"}, "X-Header-Add-Append": {"append-val-1", "header-val-2"}, "X-Header-Set": {"set-overwrites-values"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			Compile(c.m).Apply(c.in)
			if d := cmp.Diff(c.want, c.in); d != "" {
				t.Errorf("headers (-want +got):\n%s", d)
			}
		})
	}
}

func TestRequestAndResponseFilters(t *testing.T) {
	chain, err := filter.Compile([]*gatewayv1.Filter{
		{Kind: &gatewayv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &gatewayv1.HeaderModifier{Set: hs("x-req", "1")}}},
		{Kind: &gatewayv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &gatewayv1.HeaderModifier{Add: hs("x-resp", "2")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	req := &filter.Request{Header: http.Header{}}
	if rep := chain.OnRequest(req); rep != nil {
		t.Fatalf("unexpected reply %+v", rep)
	}
	resp := &filter.Response{Status: 200, Header: http.Header{}}
	chain.OnResponse(resp)
	if d := cmp.Diff(http.Header{"X-Req": {"1"}}, req.Header); d != "" {
		t.Errorf("request headers (-want +got):\n%s", d)
	}
	if d := cmp.Diff(http.Header{"X-Resp": {"2"}}, resp.Header); d != "" {
		t.Errorf("response headers (-want +got):\n%s", d)
	}
}

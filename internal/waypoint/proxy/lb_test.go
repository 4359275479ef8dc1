package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambitmesh/ambit/internal/echo"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// nameServer answers its name; a request to /hold reports the name on held
// and stays in flight until the client gives up on it.
func nameServer(t *testing.T, name string, held chan<- string) netip.AddrPort {
	return startHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- name
			<-r.Context().Done()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo.Response{Context: echo.Context{Pod: name}})
	}))
}

// TestLoadBalancingPolicies: each backend's policy (the Service's
// ambit.dev/lb-policy, carried in Backend.LoadBalancer) is what spreads
// requests through a real listener, and a push switches it live.
func TestLoadBalancingPolicies(t *testing.T) {
	held := make(chan string, 1)
	eps := []netip.AddrPort{nameServer(t, "a", held), nameServer(t, "b", held)}

	withLB := func(name string, lb *gatewayv1.LoadBalancer) *gatewayv1.Backend {
		b := backend(name, eps...)
		b.LoadBalancer = lb
		return b
	}
	hash := func(k *gatewayv1.HashKey) *gatewayv1.LoadBalancer {
		return &gatewayv1.LoadBalancer{Policy: "ConsistentHash", Hash: k}
	}
	names := []string{"least", "rr", "random", "header", "cookie", "source"}
	bs := []*gatewayv1.Backend{
		backend("least", eps...), // no LoadBalancer: least request
		withLB("rr", &gatewayv1.LoadBalancer{Policy: "RoundRobin"}),
		withLB("random", &gatewayv1.LoadBalancer{Policy: "Random"}),
		withLB("header", hash(&gatewayv1.HashKey{Header: "x-user"})),
		withLB("cookie", hash(&gatewayv1.HashKey{Cookie: "sticky", CookieTtl: durationpb.New(time.Hour), CookiePath: "/"})),
		withLB("source", hash(&gatewayv1.HashKey{SourceIp: true})),
	}
	routes := map[string][]*gatewayv1.Route{}
	for _, n := range names {
		routes[n] = []*gatewayv1.Route{rt(n, prefix("/"), ref(n, 1))}
	}
	g := startGateway(t, Config{}, []*gatewayv1.Listener{listener(routes, names...)}, bs)
	c := client(t)
	// fetch returns the endpoint that answered a GET to host through c.
	fetch := func(t *testing.T, c *http.Client, host string, hdr map[string]string) (string, *http.Response) {
		t.Helper()
		r := g.do(t, c, host, "/", hdr)
		if r.status != 200 {
			t.Fatalf("GET %s: %d", host, r.status)
		}
		return r.echo.Pod, &http.Response{Header: r.header}
	}
	other := map[string]string{"a": "b", "b": "a"}

	// holdOne parks one request to host on an endpoint and returns which;
	// cancelling it (end) ends it.
	holdOne := func(t *testing.T, host string) (busy string, end func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+g.addr+"/hold", nil)
			req.Host = host
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		end = func() { cancel(); <-done }
		select {
		case busy = <-held:
			return busy, end
		case <-time.After(5 * time.Second):
			end()
			t.Fatal("the held request never reached an endpoint")
			return "", nil
		}
	}

	t.Run("least request is the default", func(t *testing.T) {
		busy, wait := holdOne(t, "least")
		defer wait()
		// Two endpoints, two distinct choices: the idle one always wins.
		for i := range 20 {
			if got, _ := fetch(t, c, "least", nil); got != other[busy] {
				t.Fatalf("request %d went to %s, which has a request in flight; want %s", i, got, other[busy])
			}
		}
	})

	t.Run("random ignores load", func(t *testing.T) {
		busy, wait := holdOne(t, "random")
		defer wait()
		n := 0
		for range 40 {
			if got, _ := fetch(t, c, "random", nil); got == busy {
				n++
			}
		}
		if n == 0 || n == 40 { // each has probability 2^-40
			t.Errorf("%d of 40 requests to the busy endpoint, want some but not all", n)
		}
	})

	t.Run("round robin alternates", func(t *testing.T) {
		prev, _ := fetch(t, c, "rr", nil)
		for i := range 20 {
			got, _ := fetch(t, c, "rr", nil)
			if got != other[prev] {
				t.Fatalf("request %d: %s after %s, want strict alternation", i, got, prev)
			}
			prev = got
		}
	})

	// sticky checks that every key's requests land on one endpoint and that
	// the keys, together, use both.
	sticky := func(t *testing.T, keys int, send func(key, i int) string) {
		seen := map[string]bool{}
		for k := range keys {
			first := send(k, 0)
			seen[first] = true
			for i := 1; i < 5; i++ {
				if got := send(k, i); got != first {
					t.Fatalf("key %d: request %d went to %s, its first to %s", k, i, got, first)
				}
			}
		}
		if len(seen) != 2 { // all keys on one of two endpoints: probability 2^-(keys-1)
			t.Errorf("%d keys all went to %v, want both endpoints used", keys, seen)
		}
	}

	t.Run("consistent hash on a header", func(t *testing.T) {
		sticky(t, 20, func(k, _ int) string {
			got, _ := fetch(t, c, "header", map[string]string{"x-user": fmt.Sprint("user-", k)})
			return got
		})
	})

	t.Run("consistent hash on a generated cookie", func(t *testing.T) {
		cookies := map[int]string{}
		sticky(t, 20, func(k, i int) string {
			hdr := map[string]string{}
			if i > 0 {
				hdr["Cookie"] = cookies[k]
			}
			got, resp := fetch(t, c, "cookie", hdr)
			set := resp.Cookies()
			switch {
			case i == 0 && (len(set) != 1 || set[0].Name != "sticky" || set[0].MaxAge != 3600 || set[0].Path != "/"):
				t.Fatalf("first response sets %v, want cookie sticky with Max-Age 3600 and Path /", resp.Header["Set-Cookie"])
			case i == 0:
				cookies[k] = set[0].Name + "=" + set[0].Value
			case len(set) != 0:
				t.Fatalf("a request with the cookie got another: %v", resp.Header["Set-Cookie"])
			}
			return got
		})
	})

	t.Run("consistent hash on the source address", func(t *testing.T) {
		clients := map[int]*http.Client{}
		sticky(t, 20, func(k, _ int) string {
			if clients[k] == nil {
				src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(k+1))}
				d := &net.Dialer{LocalAddr: src}
				// A fresh connection per request: the key is the address,
				// not the connection.
				tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
				t.Cleanup(tr.CloseIdleConnections)
				clients[k] = &http.Client{Transport: tr, Timeout: 10 * time.Second}
			}
			got, _ := fetch(t, clients[k], "source", nil)
			return got
		})
	})

	t.Run("a push switches the policy", func(t *testing.T) {
		bs[1] = withLB("rr", hash(&gatewayv1.HashKey{Header: "x-user"}))
		if err := g.e.Apply([]*gatewayv1.Listener{listener(routes, names...)}, nil, bs); err != nil {
			t.Fatal(err)
		}
		first, _ := fetch(t, c, "rr", map[string]string{"x-user": "u"})
		for i := range 10 {
			if got, _ := fetch(t, c, "rr", map[string]string{"x-user": "u"}); got != first {
				t.Fatalf("request %d went to %s, the first to %s: still round robin after the push", i, got, first)
			}
		}
	})

	t.Run("an unknown policy is reported and the old one kept", func(t *testing.T) {
		bs[1] = withLB("rr", &gatewayv1.LoadBalancer{Policy: "Fastest"})
		err := g.e.Apply([]*gatewayv1.Listener{listener(routes, names...)}, nil, bs)
		if err == nil || !strings.Contains(err.Error(), `backend default/rr port 80`) || !strings.Contains(err.Error(), `policy "Fastest"`) {
			t.Fatalf("apply: %v, want an error naming the backend and the policy", err)
		}
		first, _ := fetch(t, c, "rr", map[string]string{"x-user": "u"})
		if got, _ := fetch(t, c, "rr", map[string]string{"x-user": "u"}); got != first {
			t.Errorf("requests with one key went to %s then %s: the last good policy was not kept", first, got)
		}
	})
}

package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/ambitmesh/ambit/internal/echo"
)

// answer is one HTTP exchange: what came back, and from which local address it was sent (how
// the demo finds its own connection in a node proxy's access log).
type answer struct {
	status int
	body   []byte
	local  string
}

// echo decodes the echo app's JSON answer.
func (a answer) echo() (echo.Response, error) {
	var r echo.Response
	if err := json.Unmarshal(a.body, &r); err != nil {
		return r, fmt.Errorf("not an echo answer (%q): %w", a.body, err)
	}
	return r, nil
}

// get sends one GET on a fresh connection made by dial.
func get(ctx context.Context, dial dialFunc, rawURL string, hdr http.Header) (answer, error) {
	var local string
	c := newClient(func(ctx context.Context) (net.Conn, error) {
		conn, err := dial(ctx)
		if err == nil {
			local = conn.LocalAddr().String()
		}
		return conn, err
	}, false)
	defer c.CloseIdleConnections()
	a, err := do(ctx, c, rawURL, hdr)
	a.local = local
	return a, err
}

// newClient is an HTTP client whose every connection comes from dial; keepAlive reuses one.
func newClient(dial dialFunc, keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
			DisableKeepAlives: !keepAlive,
			MaxConnsPerHost:   1,
		},
	}
}

func do(ctx context.Context, c *http.Client, rawURL string, hdr http.Header) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return answer{}, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: b}, err
}

func hostOfURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Host
}

package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// RequestToken asks the admin endpoint at adminAddr (HOST:PORT, loopback
// only) for a join token, as `ambit token create` does; benchmarks and
// tests that join proxies of their own use it.
func RequestToken(ctx context.Context, adminAddr string, tr TokenRequest) (TokenResponse, error) {
	var tok TokenResponse
	body, err := json.Marshal(tr)
	if err != nil {
		return tok, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+adminAddr+"/ca/tokens", bytes.NewReader(body))
	if err != nil {
		return tok, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return tok, fmt.Errorf("control: join token for %s: %w", tr.Subject, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return tok, fmt.Errorf("control: join token for %s: %s: %s", tr.Subject, resp.Status, msg)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return tok, fmt.Errorf("control: join token for %s: %w", tr.Subject, err)
	}
	return tok, nil
}

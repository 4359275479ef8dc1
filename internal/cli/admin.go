package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

const defaultAdminAddress = "127.0.0.1:15014"

// addControlPlaneFlag registers --control-plane, the admin address.
func addControlPlaneFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVar(dst, "control-plane", defaultAdminAddress, "admin address of the control plane (host:port)")
}

// adminCall sends a JSON request to the control plane's admin API and
// decodes the JSON answer into out.
func adminCall(cmd *cobra.Command, addr, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(cmd.Context(), method, "http://"+addr+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the control plane at %s: %w (is 'ambit control' running? use --control-plane HOST:PORT)", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("control plane at %s: %s", addr, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("control plane at %s: bad answer: %w", addr, err)
	}
	return nil
}

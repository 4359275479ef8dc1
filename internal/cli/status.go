package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ambitmesh/ambit/internal/control"
)

func newStatusCmd() *cobra.Command {
	var addr, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show connected proxies, their config versions, and configuration problems",
		Example: `  ambit status
  ambit status --control-plane 10.0.0.1:15014 -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := fetchStatus(cmd, addr)
			if err != nil {
				return err
			}
			if output != "" {
				return printObject(cmd.OutOrStdout(), output, st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "control-plane", "127.0.0.1:15014", "admin address of the control plane")
	addOutputFlag(cmd, &output)
	return cmd
}

func fetchStatus(cmd *cobra.Command, addr string) (*control.Status, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, "http://"+addr+"/debug/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the control plane at %s: %w (is 'ambit control' running? use --control-plane HOST:PORT)", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("control plane at %s answered %s: %s", addr, resp.Status, strings.TrimSpace(string(b)))
	}
	var st control.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("control plane at %s: bad status JSON: %w", addr, err)
	}
	return &st, nil
}

func printStatus(w io.Writer, st *control.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tCONNECTED\tTYPE\tACKED VERSION\tLAST NACK")
	for _, p := range st.Proxies {
		since := "no"
		if p.Connected {
			since = time.Since(p.ConnectedSince).Round(time.Second).String()
		}
		types := make([]string, 0, len(p.Types))
		for t := range p.Types {
			types = append(types, t)
		}
		sort.Strings(types)
		if len(types) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\n", p.NodeID, since)
		}
		for i, t := range types {
			ts := p.Types[t]
			id := p.NodeID
			if i > 0 {
				id, since = "", ""
			}
			nack := ts.LastNACK
			if nack == "" {
				nack = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, since, shortType(t), ts.AckedVersion, nack)
		}
	}
	tw.Flush()
	if len(st.Proxies) == 0 {
		fmt.Fprintln(w, "(no proxies connected)")
	}
	if len(st.Counts) > 0 {
		fmt.Fprintf(w, "\nmodel: %d workloads, %d services, %d gateways, %d policies\n",
			st.Counts["workloads"], st.Counts["services"], st.Counts["gateways"], st.Counts["policies"])
	}
	if len(st.SourceErrors)+len(st.Rejected) == 0 {
		fmt.Fprintln(w, "configuration: no problems")
		return
	}
	fmt.Fprintln(w, "\nconfiguration problems:")
	for _, e := range st.SourceErrors {
		fmt.Fprintln(w, "  "+e.Error())
	}
	for _, r := range st.Rejected {
		fmt.Fprintf(w, "  %s: %s\n", r.Object, r.Reason)
	}
}

// shortType trims type.googleapis.com/ambit. from a type URL.
func shortType(t string) string {
	t = strings.TrimPrefix(t, "type.googleapis.com/")
	return strings.TrimPrefix(t, "ambit.")
}

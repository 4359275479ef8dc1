package cli

import (
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
			st := &control.Status{}
			if err := adminCall(cmd, addr, http.MethodGet, "/debug/status", nil, st); err != nil {
				return err
			}
			if output != "" {
				return printObject(cmd.OutOrStdout(), output, st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	addControlPlaneFlag(cmd, &addr)
	addOutputFlag(cmd, &output)
	return cmd
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

package cli

import (
	"fmt"
	"github.com/devops-platform/devops/internal/client"
	"strings"

	"github.com/spf13/cobra"
)

func newAuditCmd(env *Env, g *globals) *cobra.Command {
	var limit int
	var output string
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log: who ran, killed, drained, created or revoked what, and who was refused (admin)",
		Example: `  devops audit
  devops audit -n 1000 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c *client.Client) error {
				es, err := c.Audit(cmd.Context(), limit)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(env.Stdout, es)
				}
				tw := newTable(env.Stdout, 2)
				fmt.Fprintln(tw, "TIME\tWHO\tROLE\tACTION\tWORKERS\tWHAT\tRESULT")
				for _, e := range es {
					what := e.Target
					if len(e.Argv) > 0 {
						what = strings.TrimSpace(what + " -- " + strings.Join(e.Argv, " "))
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Principal, orDash(e.Role),
						e.Action, orDash(strings.Join(e.Workers, ",")), orDash(oneLine(what, 80)), oneLine(e.Result, 100))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 100, "most recent entries to show")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		return s[:max-1] + "…"
	}
	return s
}

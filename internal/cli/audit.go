package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/client"
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
			if err := checkLimit(limit); err != nil {
				return err
			}
			if limit > maxAudit {
				return fmt.Errorf("--limit: %w: %d: at most %d (%s)", devops.ErrInvalid, limit, maxAudit, wholeLog)
			}
			return g.call(func(c *client.Client) error {
				es, leftOut, err := c.Audit(cmd.Context(), limit)
				if err != nil {
					return err
				}
				if leftOut > 0 {
					fmt.Fprintf(env.Stderr, "devops: the %d oldest of the entries asked for were left out: they would not fit one answer (%s)\n", leftOut, wholeLog)
				}
				if output == "json" {
					return writeJSONList(env.Stdout, convertAll(es, auditToPB))
				}
				tw := newTable(env.Stdout, 2)
				fmt.Fprintln(tw, "TIME\tWHO\tROLE\tACTION\tWORKERS\tWHAT\tRESULT")
				for _, e := range es {
					what := e.Target
					if len(e.Argv) > 0 {
						what = strings.TrimSpace(what + " -- " + strings.Join(e.Argv, " "))
					}
					if e.Stdin != "" {
						what += " < stdin of " + e.Stdin
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Principal, orDash(e.Role),
						e.Action, orDash(strings.Join(e.Workers, ",")), orDash(oneLine(what, 80)), oneLine(e.Result, 100))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 100, fmt.Sprintf("most recent entries to show (at most %d)", maxAudit))
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// checkLimit refuses a negative -n, which listed everything as 0 does.
func checkLimit(n int) error {
	if n < 0 {
		return fmt.Errorf("--limit: %w: %d: want 0 or more", devops.ErrInvalid, n)
	}
	return nil
}

// wholeLog says where to read more of the audit log than one answer holds.
const wholeLog = "the whole log is audit.log and the audit.log.<time> files set aside beside it, in the manager's data dir"

// maxAudit is the most entries the manager answers at once.
const maxAudit = 10_000

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		return s[:max-1] + "…"
	}
	return s
}

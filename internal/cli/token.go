package cli

import (
	"fmt"
	"github.com/devops-platform/devops/internal/client"
	"time"

	"github.com/spf13/cobra"
)

func newTokenCmd(env *Env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens and worker join tokens (admin)",
	}
	cmd.AddCommand(newTokenCreateCmd(env, g), newTokenListCmd(env, g), newTokenRevokeCmd(env, g))
	return cmd
}

func newTokenCreateCmd(env *Env, g *globals) *cobra.Command {
	var role, scope, desc string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a token and print it (it is shown once: only its hash is kept)",
		Long: "Roles: admin (everything), operator (run, kill, drain, read), viewer (read only), and\n" +
			"worker (a join token: buys a worker its certificate; it carries the hash of the manager's CA).\n" +
			"--scope limits an operator or viewer to the workers a label selector matches.",
		Example: `  devops token create --role operator --scope env=staging --ttl 720h
  devops token create --role viewer
  devops token create --role worker --ttl 1h   # a join token: DEVOPS_JOIN_TOKEN=... devops worker`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c *client.Client) error {
				t, secret, err := c.CreateToken(cmd.Context(), role, scope, desc, ttl)
				if err != nil {
					return err
				}
				fmt.Fprintln(env.Stdout, secret)
				exp := "never expires"
				if !t.ExpiresAt.IsZero() {
					exp = "expires " + t.ExpiresAt.Local().Format(time.RFC3339)
				}
				fmt.Fprintf(env.Stderr, "token %s: role %s, %s; it is shown once\n", t.ID, t.Role, exp)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "admin, operator, viewer or worker (required)")
	f.StringVar(&scope, "scope", "", "label selector the token is limited to, e.g. env=staging")
	f.DurationVar(&ttl, "ttl", 0, "lifetime, e.g. 1h (default: never expires)")
	f.StringVar(&desc, "description", "", "a note shown by token list")
	cmd.MarkFlagRequired("role")
	return cmd
}

func newTokenListCmd(env *Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c *client.Client) error {
				ts, err := c.Tokens(cmd.Context())
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSONList(env.Stdout, convertAll(ts, tokenToPB))
				}
				tw := newTable(env.Stdout, 2)
				fmt.Fprintln(tw, "ID\tROLE\tSCOPE\tSTATE\tEXPIRES\tCREATED\tBY\tDESCRIPTION")
				now := time.Now()
				for _, t := range ts {
					state, exp := "valid", "never"
					if !t.ExpiresAt.IsZero() {
						exp = t.ExpiresAt.Local().Format("2006-01-02 15:04")
						if now.After(t.ExpiresAt) {
							state = "expired"
						}
					}
					if t.Revoked {
						state = "revoked"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Role, orDash(t.Scope), state, exp,
						t.CreatedAt.Local().Format("2006-01-02 15:04"), orDash(t.CreatedBy), orDash(t.Description))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func newTokenRevokeCmd(env *Env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c *client.Client) error {
				t, err := c.RevokeToken(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "token %s (%s) revoked\n", t.ID, t.Role)
				return nil
			})
		},
	}
}

// newWorkersRevokeCmd is `devops workers revoke NAME`.
func newWorkersRevokeCmd(env *Env, g *globals) *cobra.Command {
	var undo bool
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Cut a worker off at once: its certificates are denied and its connections closed (admin)",
		Long: "Revokes every certificate issued to the worker and refuses its name, even with a valid join\n" +
			"token, until `devops workers revoke --undo NAME`.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c *client.Client) error {
				name, err := c.RevokeWorker(cmd.Context(), args[0], undo)
				if err != nil {
					return err
				}
				if undo {
					fmt.Fprintf(env.Stdout, "worker %s may join again\n", name)
				} else {
					fmt.Fprintf(env.Stdout, "worker %s revoked: its certificates are denied and its connections closed\n", name)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&undo, "undo", false, "admit the name again (it must join with a join token)")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

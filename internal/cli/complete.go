package cli

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/client"
)

// Shell completion of what the manager knows: `devops logs <TAB>` offers the
// most recent processes and fleet runs, `--worker <TAB>` the workers. The
// scripts of `devops completion bash|zsh|fish|powershell` ask the binary
// (`devops __complete …`), which runs these; an unreachable manager
// completes nothing, within completeTimeout.
const (
	completeTimeout = 2 * time.Second
	completeRecent  = 50 // processes or runs offered, the newest
)

// lister lists candidates, each "value\tdescription" (zsh and fish show the
// description).
type lister func(ctx context.Context, c *client.Client) ([]string, error)

func listProcesses(ctx context.Context, c *client.Client) ([]string, error) {
	ps, err := c.RecentProcesses(ctx, devops.StateUnknown, "", completeRecent)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ps))
	for i := len(ps) - 1; i >= 0; i-- { // newest first
		p := ps[i]
		out = append(out, fmt.Sprintf("%s\t%s on %s: %s", p.ID, p.State, cmp.Or(p.WorkerName, "-"), strings.Join(p.Spec.Argv, " ")))
	}
	return out, nil
}

func listRuns(ctx context.Context, c *client.Client) ([]string, error) {
	rs, err := c.RecentFleetRuns(ctx, completeRecent)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rs))
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		out = append(out, fmt.Sprintf("%s\t%s: %s", r.ID, r.State, strings.Join(r.Spec.Argv, " ")))
	}
	return out, nil
}

func listWorkers(ctx context.Context, c *client.Client) ([]string, error) {
	ws, err := c.Workers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, fmt.Sprintf("%s\t%s %d/%d", w.Name, w.State, w.Running, w.Capacity))
	}
	return out, nil
}

// complete makes a completion from listers: the candidates that start with
// what is typed. With list, what is typed is a comma-separated list and
// only its last item is completed (--workers w1,w<TAB>).
func (g *globals) complete(list bool, listers ...lister) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(cmp.Or(cmd.Context(), context.Background()), completeTimeout)
		defer cancel()
		var all []string
		err := g.call(func(c *client.Client) error {
			c.Notify = nil // nothing on the terminal while a shell completes
			for _, l := range listers {
				got, err := l(ctx, c)
				if err != nil {
					return err
				}
				all = append(all, got...)
			}
			return nil
		})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		done, typed := "", toComplete
		if list {
			if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
				done, typed = toComplete[:i+1], toComplete[i+1:]
			}
		}
		var out []cobra.Completion
		for _, c := range all {
			if strings.HasPrefix(c, typed) {
				out = append(out, done+c)
			}
		}
		directive := cobra.ShellCompDirectiveNoFileComp
		if list {
			directive |= cobra.ShellCompDirectiveNoSpace // a comma may follow
		}
		return out, directive
	}
}

// firstArg completes a command's one argument, and nothing after it.
func firstArg(f cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(cmd, args, toComplete)
	}
}

// addCompletions sets the completions of the commands that take ids or
// worker names.
func addCompletions(root *cobra.Command, g *globals) {
	args := map[string]cobra.CompletionFunc{
		"status":     g.complete(false, listProcesses),
		"logs":       g.complete(false, listProcesses, listRuns),
		"kill":       g.complete(false, listProcesses, listRuns),
		"run-status": g.complete(false, listRuns),
		"run-resume": g.complete(false, listRuns),
		"drain":      g.complete(false, listWorkers),
	}
	for _, c := range root.Commands() {
		if f, ok := args[c.Name()]; ok {
			c.ValidArgsFunction = firstArg(f)
		}
		switch c.Name() {
		case "workers":
			for _, sub := range c.Commands() {
				if sub.Name() == "revoke" {
					sub.ValidArgsFunction = firstArg(g.complete(false, listWorkers))
				}
			}
		case "run":
			c.RegisterFlagCompletionFunc("worker", g.complete(false, listWorkers))
			c.RegisterFlagCompletionFunc("workers", g.complete(true, listWorkers))
			c.RegisterFlagCompletionFunc("exclude", g.complete(true, listWorkers))
		}
	}
}

package cli_test

import (
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops/internal/testcluster"
)

// TestShellCompletion: the completion scripts' `devops __complete` offers
// the manager's process ids, run ids and worker names.
func TestShellCompletion(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2})
	ctx := t.Context()
	r := c.CLI(ctx, "run", "--detach", "--", "sleep", "30")
	id := strings.TrimSpace(r.Stdout)
	if r.Code != 0 {
		t.Fatalf("run --detach = %d %q", r.Code, r.Stderr)
	}
	fr := c.CLI(ctx, "run", "--all", "--detach", "--", "true")
	runID := strings.Fields(fr.Stdout)[0]
	if fr.Code != 0 || !strings.HasPrefix(runID, "run-") {
		t.Fatalf("run --all --detach = %d %q %q", fr.Code, fr.Stdout, fr.Stderr)
	}

	complete := func(args ...string) []string {
		t.Helper()
		r := c.CLI(ctx, append([]string{"__complete"}, args...)...)
		if r.Code != 0 {
			t.Fatalf("__complete %q = %d %q", args, r.Code, r.Stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
		return lines[:len(lines)-1] // the last is the directive, ":4" and such
	}
	has := func(got []string, prefix string) bool {
		for _, l := range got {
			if strings.HasPrefix(l, prefix) {
				return true
			}
		}
		return false
	}

	if got := complete("logs", ""); !has(got, id+"\t") || !strings.Contains(strings.Join(got, "\n"), ": sleep 30") || !has(got, runID+"\t") {
		t.Errorf("logs <TAB> = %q; want the process %s with its state and the run %s", got, id, runID)
	}
	if got := complete("status", id[:len(id)-2]); len(got) != 1 || !strings.HasPrefix(got[0], id) {
		t.Errorf("status %s<TAB> = %q; want only %s", id[:len(id)-2], got, id)
	}
	if got := complete("status", id, ""); len(got) != 0 {
		t.Errorf("status ID <TAB> = %q; want nothing: it takes one id", got)
	}
	if got := complete("run-status", ""); !has(got, runID) || has(got, id) {
		t.Errorf("run-status <TAB> = %q; want runs only", got)
	}
	if got := complete("run", "--worker", ""); !has(got, "w1\tUP") || !has(got, "w2\tUP") {
		t.Errorf("run --worker <TAB> = %q; want both workers", got)
	}
	if got := complete("run", "--workers", "w1,"); !has(got, "w1,w2") {
		t.Errorf("run --workers w1,<TAB> = %q; want w1,w2 among them", got)
	}
	if got := complete("run", "--all", "--exclude", "w"); !has(got, "w1\tUP") {
		t.Errorf("run --exclude w<TAB> = %q; want the workers", got)
	}
	if got := complete("drain", "w2"); len(got) != 1 || !strings.HasPrefix(got[0], "w2\t") {
		t.Errorf("drain w2<TAB> = %q", got)
	}
	c.CLI(ctx, "kill", id)

	// A manager that does not answer completes nothing, at once, and says
	// nothing on the terminal.
	start := time.Now()
	r = c.CLI(ctx, "--manager", "127.0.0.1:1", "__complete", "logs", "")
	// ":5" is ShellCompDirectiveError|NoFileComp; cobra's own line about
	// it goes to stderr, which the shells' scripts drop.
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != ":5" || strings.Contains(r.Stderr, "unreachable") {
		t.Errorf("completion against no manager = %d %q %q; want no candidate and the error directive", r.Code, r.Stdout, r.Stderr)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("completion against no manager took %v", took)
	}
}

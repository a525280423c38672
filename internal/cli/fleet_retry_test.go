package cli_test

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/testcluster"
)

// whoami is a shell prefix that sets $w to the name of the worker running
// the command: its $HOME lies in the worker's data dir.
const whoami = `for n in w1 w2 w3; do case $HOME in */$n/*) w=$n;; esac; done; `

// attemptsOf returns a task's processes, one per attempt, oldest first, as
// the manager recorded them.
func attemptsOf(t *testing.T, c *testcluster.Cluster, task devops.RunTask) []devops.Process {
	t.Helper()
	var ps []devops.Process
	for _, id := range append(attemptIDs(task), task.ProcessID) {
		p, err := c.Client.Status(t.Context(), id)
		if err != nil {
			t.Fatalf("Status(%s) = %v", id, err)
		}
		ps = append(ps, p)
	}
	return ps
}

func attemptIDs(task devops.RunTask) []devops.ProcessID {
	var ids []devops.ProcessID
	for _, a := range task.Previous {
		ids = append(ids, a.ProcessID)
	}
	return ids
}

func taskOn(t *testing.T, r devops.Run, worker string) devops.RunTask {
	t.Helper()
	for _, task := range r.Tasks {
		if task.WorkerName == worker {
			return task
		}
	}
	t.Fatalf("run %s has no task on %s: %+v", r.ID, worker, r.Tasks)
	return devops.RunTask{}
}

func TestFleetRetriesRunAFailedChildAgain(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 3})
	ctx := t.Context()
	dir := t.TempDir()
	// Fails on w2 the first time only: a marker per worker in a shared dir.
	script := whoami + `if [ $w = w2 ] && [ ! -e $w.tried ]; then touch $w.tried; echo first try; exit 3; fi; echo ok`
	var out testcluster.SyncBuffer
	code := c.CLIWith(ctx, &out, &out, nil, "run", "--all", "--dir", dir, "--retries", "1", "--", "sh", "-c", script)
	text := out.String()
	if code != 0 {
		t.Fatalf("run --all --retries 1 = %d, want 0:\n%s", code, text)
	}
	announce := "devops: w2: attempt 1 of 2 failed (exit 3); running it again\n"
	if strings.Count(text, announce) != 1 || strings.Contains(text, "exit code 3") {
		t.Errorf("output lacks the retry, once, or tells the retried failure as final:\n%s", text)
	}
	if i, j := strings.Index(text, "w2: first try\n"), strings.Index(text, announce); i < 0 || j < i {
		t.Errorf("the first attempt's output should come before the retry is told:\n%s", text)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(l, "devops:") {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	if want := []string{"w1: ok", "w2: first try", "w2: ok", "w3: ok"}; !slices.Equal(lines, want) {
		t.Errorf("output lines = %q, want %q", lines, want)
	}

	run, _ := lastRun(t, c)
	if run.State != devops.RunSucceeded || run.Summary.Succeeded != 3 || run.Summary.Failed != 0 {
		t.Errorf("run = %s %+v, want SUCCEEDED with 3 succeeded", run.State, run.Summary)
	}
	// Each attempt is a process of its own, on the same worker.
	w2 := attemptsOf(t, c, taskOn(t, run, "w2"))
	if len(w2) != 2 || w2[0].ID == w2[1].ID || w2[0].State != devops.StateFailed || w2[0].Code != 3 ||
		w2[1].State != devops.StateSucceeded || w2[0].WorkerName != "w2" || w2[1].WorkerName != "w2" {
		t.Errorf("w2's attempts = %+v, want FAILED (3) then SUCCEEDED, two processes on w2", w2)
	}
	if a := taskOn(t, run, "w2").Previous; len(a) != 1 || a[0].State != devops.StateFailed || a[0].ExitCode != 3 {
		t.Errorf("w2's earlier attempts = %+v, want one FAILED with exit 3", a)
	}
	for _, w := range []string{"w1", "w3"} {
		if task := taskOn(t, run, w); len(task.Previous) != 0 {
			t.Errorf("%s ran %d times, want once", w, len(task.Previous)+1)
		}
	}
	if ps, _ := c.Client.Processes(ctx, devops.StateUnknown, ""); len(ps) != 4 {
		t.Errorf("%d processes, want 4: one per worker and the retry", len(ps))
	}

	// run-status shows every attempt.
	st := c.CLI(ctx, "run-status", string(run.ID))
	if st.Code != 0 || !strings.Contains(st.Stdout, "retries 1") || !strings.Contains(st.Stdout, "ATTEMPT") ||
		!strings.Contains(st.Stdout, string(w2[0].ID)) || !strings.Contains(st.Stdout, "ran again") || !strings.Contains(st.Stdout, "3/3 succeeded") {
		t.Errorf("run-status = %d\n%s", st.Code, st.Stdout)
	}
	// So does re-reading the run's output.
	lg := c.CLI(ctx, "logs", string(run.ID))
	if lg.Code != 0 || !strings.Contains(lg.Stdout, "w2: first try\n") || !strings.Contains(lg.Stdout, "w2: ok\n") || !strings.Contains(lg.Stderr, announce) {
		t.Errorf("logs RUN = %d %q %q, want both attempts", lg.Code, lg.Stdout, lg.Stderr)
	}
}

func TestFleetRetriesRunOut(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 3})
	ctx := t.Context()
	r := c.CLI(ctx, "run", "--workers", "w1,w2", "--retries", "2", "--", "sh", "-c", whoami+`if [ $w = w2 ]; then echo no; exit 4; fi; echo ok`)
	if r.Code != 4 {
		t.Errorf("run = %d, want 4 (the last attempt's exit code); stderr:\n%s", r.Code, r.Stderr)
	}
	for _, want := range []string{
		"devops: w2: attempt 1 of 3 failed (exit 4); running it again\n",
		"devops: w2: attempt 2 of 3 failed (exit 4); running it again\n",
		"devops: w2: exit code 4\n",
		"FAILED: 1 of 2 failed",
	} {
		if strings.Count(r.Stderr, want) != 1 {
			t.Errorf("stderr should say %q once:\n%s", want, r.Stderr)
		}
	}
	if strings.Contains(r.Stderr, "attempt 3 of 3") || strings.Count(r.Stdout, "w2: no\n") != 3 || strings.Count(r.Stdout, "w1: ok\n") != 1 {
		t.Errorf("run = %q %q, want three attempts on w2 and one on w1", r.Stdout, r.Stderr)
	}
	run, _ := lastRun(t, c)
	if run.State != devops.RunFailed || run.Summary.Failed != 1 || run.Summary.Succeeded != 1 || run.ExitCode() != 4 {
		t.Errorf("run = %s %q %+v, want FAILED, 1 failed, exit 4", run.State, run.Reason, run.Summary)
	}
	w2 := attemptsOf(t, c, taskOn(t, run, "w2"))
	ids := map[devops.ProcessID]bool{}
	for _, p := range w2 {
		ids[p.ID] = true
		if p.State != devops.StateFailed || p.Code != 4 || p.WorkerName != "w2" {
			t.Errorf("attempt %s = %s %d on %s, want FAILED 4 on w2", p.ID, p.State, p.Code, p.WorkerName)
		}
	}
	if len(ids) != 3 {
		t.Errorf("w2 ran %d distinct processes, want 3", len(ids))
	}
	// A failure that is not the command's own is never run again.
	r = c.CLI(ctx, "run", "--workers", "w3", "--retries", "2", "--detach", "--", "sleep", "60")
	id := devops.RunID(strings.TrimSpace(r.Stdout))
	testcluster.Eventually(t, 10*time.Second, "w3 running", func() bool {
		run, err := c.Client.FleetRun(ctx, id)
		return err == nil && run.Summary.Running == 1 && run.Tasks[0].State == devops.StateRunning
	})
	run, err := c.Client.FleetRun(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if k := c.CLI(ctx, "kill", "--grace", "1s", string(run.Tasks[0].ProcessID)); k.Code != 0 {
		t.Fatalf("kill = %d %q", k.Code, k.Stderr)
	}
	f := c.CLI(ctx, "logs", "-f", string(id))
	run, _ = c.Client.FleetRun(ctx, id)
	if f.Code == 0 || strings.Contains(f.Stderr, "running it again") || run.State != devops.RunFailed || len(run.Tasks[0].Previous) != 0 {
		t.Errorf("a killed child: logs -f = %d %q, run %s with %d earlier attempts; want FAILED, not run again",
			f.Code, f.Stderr, run.State, len(run.Tasks[0].Previous))
	}
}

// TestFleetRetrySurvivesManagerRestart: a child that fails while the
// manager is down is run again once it is back, and a retry the manager
// recorded is not started a second time by the next manager.
func TestFleetRetrySurvivesManagerRestart(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 1})
	ctx := t.Context()
	dir := t.TempDir()
	// The first attempt waits for "fail" and fails; the second waits for
	// "release" and succeeds. runs.log counts the starts.
	script := `echo start >> runs.log; if [ $(wc -l < runs.log) -eq 1 ]; then until [ -e fail ]; do sleep 0.05; done; exit 3; fi
until [ -e release ]; do sleep 0.05; done; echo ok`
	r := c.CLI(ctx, "run", "--workers", "w1", "--dir", dir, "--retries", "1", "--timeout", "1m", "--detach", "--", "sh", "-c", script)
	id := devops.RunID(strings.TrimSpace(r.Stdout))
	if r.Code != 0 || !devops.IsRunID(string(id)) {
		t.Fatalf("run --detach = %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	attempt := func(n int) func() bool {
		return func() bool {
			run, err := c.Client.FleetRun(ctx, id)
			return err == nil && run.Tasks[0].Attempt() == n && run.Tasks[0].State == devops.StateRunning
		}
	}
	testcluster.Eventually(t, 10*time.Second, "first attempt running", attempt(1))

	// The first attempt fails while no manager is there to see it.
	c.StopManager()
	if err := os.WriteFile(filepath.Join(dir, "fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.StartManager()
	testcluster.Eventually(t, 20*time.Second, "second attempt running", attempt(2))

	// The retry was recorded: the next manager re-attaches to it.
	c.StopManager()
	c.StartManager()
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f := c.CLI(ctx, "logs", "-f", string(id))
	if f.Code != 0 || f.Stdout != "w1: ok\n" {
		t.Errorf("logs -f after restarts = %d %q %q", f.Code, f.Stdout, f.Stderr)
	}
	run, err := c.Client.FleetRun(ctx, id)
	if err != nil || run.State != devops.RunSucceeded || len(run.Tasks[0].Previous) != 1 || run.Tasks[0].Previous[0].ExitCode != 3 {
		t.Errorf("run after restarts = %+v, %v; want SUCCEEDED on its second attempt", run, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "runs.log"))
	if err != nil || strings.Count(string(b), "start\n") != 2 {
		t.Errorf("runs.log = %q, %v; want exactly two starts", b, err)
	}
}

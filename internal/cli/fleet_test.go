package cli_test

import (
	"bufio"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/testcluster"
)

// fleetLabels gives six workers: w1 zone=a env=prod, w2 zone=b, w3 zone=c,
// w4 zone=a, w5 zone=b (env=dev for w2..w5), w6 zone=a with no env.
func fleetLabels(i int) map[string]string {
	l := map[string]string{"zone": string("abcaba"[i])}
	switch {
	case i == 0:
		l["env"] = "prod"
	case i < 5:
		l["env"] = "dev"
	}
	return l
}

func startFleet(t *testing.T) *testcluster.Cluster {
	t.Helper()
	return testcluster.Start(t, testcluster.Options{Workers: 6, Labels: fleetLabels})
}

// lastRun returns the newest fleet run with its children's records.
func lastRun(t *testing.T, c *testcluster.Cluster) (devops.Run, map[string]devops.Process) {
	t.Helper()
	rs, err := c.Client.FleetRuns(t.Context())
	if err != nil || len(rs) == 0 {
		t.Fatalf("FleetRuns = %v, %v; want at least one", rs, err)
	}
	r := rs[len(rs)-1]
	procs := map[string]devops.Process{}
	for _, task := range r.Tasks {
		if task.ProcessID == "" {
			continue
		}
		p, err := c.Client.Status(t.Context(), task.ProcessID)
		if err != nil {
			t.Fatalf("Status(%s) = %v", task.ProcessID, err)
		}
		procs[task.WorkerName] = p
	}
	return r, procs
}

// planned returns the workers a dry run's table says would run it, and the
// others with their reasons.
func planned(out string) (yes []string, no map[string]string) {
	no = map[string]string{}
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 || strings.HasSuffix(line, "would run it") {
			continue
		}
		if f[1] == "yes" {
			yes = append(yes, f[0])
		} else {
			no[f[0]] = strings.Join(f[2:], " ")
		}
	}
	return yes, no
}

func TestFleetDryRunAndSelector(t *testing.T) {
	c := startFleet(t)
	ctx := t.Context()
	sel := "zone in (a,b),env!=prod"

	r := c.CLI(ctx, "run", "--dry-run", "--selector", sel, "--", "echo", "hi")
	yes, no := planned(r.Stdout)
	if r.Code != 0 || !slices.Equal(yes, []string{"w2", "w4", "w5", "w6"}) || len(no) != 0 {
		t.Errorf("dry run = %d, would run %v, not %v; want w2 w4 w5 w6\n%s%s", r.Code, yes, no, r.Stdout, r.Stderr)
	}
	if ps, _ := c.Client.Processes(ctx, 0, ""); len(ps) != 0 {
		t.Errorf("a dry run started %d processes", len(ps))
	}
	if rs, _ := c.Client.FleetRuns(ctx); len(rs) != 0 {
		t.Errorf("a dry run created %d runs", len(rs))
	}

	// The selector picks the same set for real.
	r = c.CLI(ctx, "run", "--selector", sel, "--", "echo", "hi")
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	sort.Strings(lines)
	if r.Code != 0 || !slices.Equal(lines, []string{"w2: hi", "w4: hi", "w5: hi", "w6: hi"}) {
		t.Errorf("selector run = %d %q; want w2 w4 w5 w6; stderr %s", r.Code, r.Stdout, r.Stderr)
	}

	// A worker that is down is named, with why.
	c.StopWorker(4)
	testcluster.Eventually(t, 5*time.Second, "w5 down", func() bool {
		ws, _ := c.Client.Workers(ctx)
		for _, w := range ws {
			if w.Name == "w5" {
				return w.State == devops.WorkerDown
			}
		}
		return false
	})
	r = c.CLI(ctx, "run", "--dry-run", "--selector", sel, "--", "echo", "hi")
	yes, no = planned(r.Stdout)
	if !slices.Equal(yes, []string{"w2", "w4", "w6"}) || no["w5"] != "down" || len(no) != 1 {
		t.Errorf("dry run with w5 down: would run %v, not %v\n%s", yes, no, r.Stdout)
	}
	r = c.CLI(ctx, "run", "--dry-run", "--workers", "w1,w5", "--", "echo", "hi")
	yes, no = planned(r.Stdout)
	if !slices.Equal(yes, []string{"w1"}) || no["w5"] != "down" {
		t.Errorf("dry run --workers w1,w5: would run %v, not %v\n%s", yes, no, r.Stdout)
	}
}

func TestFleetEmptyTargetIsAnError(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2, Labels: fleetLabels})
	r := c.CLI(t.Context(), "run", "--selector", "zone=nowhere", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "no worker matches zone=nowhere") {
		t.Errorf("run on an empty target = %d %q", r.Code, r.Stderr)
	}
	r = c.CLI(t.Context(), "run", "--dry-run", "--selector", "zone=nowhere", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "no worker would run it") {
		t.Errorf("dry run on an empty target = %d %q", r.Code, r.Stderr)
	}
	r = c.CLI(t.Context(), "run", "--workers", "w1,nope", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, `unknown worker "nope"`) {
		t.Errorf("run on an unknown worker = %d %q", r.Code, r.Stderr)
	}
	r = c.CLI(t.Context(), "run", "--max-errors", "1", "--", "true")
	if r.Code != 255 || !strings.Contains(r.Stderr, "--max-errors makes a fleet run: name its workers") {
		t.Errorf("fleet flags without a target = %d %q", r.Code, r.Stderr)
	}
	if rs, _ := c.Client.FleetRuns(t.Context()); len(rs) != 0 {
		t.Errorf("failed starts created %d runs", len(rs))
	}
}

func TestFleetMaxConcurrency(t *testing.T) {
	c := startFleet(t)
	r := c.CLI(t.Context(), "run", "--all", "--max-concurrency", "2", "--", "sh", "-c", "sleep 0.2; echo done")
	if r.Code != 0 || strings.Count(r.Stdout, ": done\n") != 6 {
		t.Fatalf("run = %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	run, procs := lastRun(t, c)
	if run.State != devops.RunSucceeded || run.Summary.Succeeded != 6 || len(procs) != 6 {
		t.Fatalf("run = %+v, want 6 succeeded", run)
	}
	// At every start, count the processes running at that instant.
	for _, p := range procs {
		n := 0
		for _, q := range procs {
			if !q.StartedAt.After(p.StartedAt) && q.EndedAt.After(p.StartedAt) {
				n++
			}
		}
		if n > 2 {
			t.Errorf("%d processes were running when %s started on %s, want at most 2", n, p.ID, p.WorkerName)
		}
	}
}

func TestFleetErrorBudgetKillsInFlight(t *testing.T) {
	c := startFleet(t)
	// w2, w4 and w5 fail at once; the others would run for long. With a
	// window of 3, w1-w3 start; w2's failure is within the budget, so w4
	// starts and fails: the budget of 1 is exceeded, w1 and w3 (in flight)
	// are killed, and w5 and w6 never start.
	script := `case $HOME in */w2/*|*/w4/*|*/w5/*) exit 1;; esac; sleep 60`
	start := time.Now()
	r := c.CLI(t.Context(), "run", "--all", "--max-concurrency", "3", "--max-errors", "1", "--stop-on-error", "kill", "--grace", "1s", "--", "sh", "-c", script)
	if r.Code == 0 || !strings.Contains(r.Stderr, "error budget exceeded: 2 failed, max-errors 1") {
		t.Errorf("run = %d, stderr %q; want a failure naming the budget", r.Code, r.Stderr)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("run took %v: the in-flight ones were not killed", d)
	}
	run, procs := lastRun(t, c)
	if run.State != devops.RunFailed || !strings.Contains(run.Reason, "error budget exceeded") {
		t.Errorf("run state %s %q, want FAILED for the budget", run.State, run.Reason)
	}
	want := map[string]devops.State{"w1": devops.StateTerminated, "w2": devops.StateFailed, "w3": devops.StateTerminated, "w4": devops.StateFailed}
	if len(procs) != len(want) {
		t.Errorf("%d children ran, want 4: %v", len(procs), procs)
	}
	for w, s := range want {
		if procs[w].State != s {
			t.Errorf("%s ended %s, want %s", w, procs[w].State, s)
		}
	}
	for _, task := range run.Tasks {
		if (task.WorkerName == "w5" || task.WorkerName == "w6") && (!task.Skipped || task.ProcessID != "") {
			t.Errorf("%s = %+v, want skipped without a process", task.WorkerName, task)
		}
	}
	s := run.Summary
	if s.Total != 6 || s.Succeeded != 0 || s.Failed != 4 || s.Skipped != 2 {
		t.Errorf("summary = %+v, want 4 failed, 2 skipped", s)
	}
}

func TestFleetErrorBudgetWaitStopsAfterSecondFailure(t *testing.T) {
	c := startFleet(t)
	// One at a time: w1 succeeds, w2 fails (within the budget), w3
	// succeeds, w4 fails: the budget is exceeded and nothing more starts.
	script := `case $HOME in */w2/*|*/w4/*|*/w5/*) exit 1;; esac`
	r := c.CLI(t.Context(), "run", "--all", "--max-concurrency", "1", "--max-errors", "1", "--", "sh", "-c", script)
	if r.Code != 1 {
		t.Errorf("run exited %d, want 1; stderr %q", r.Code, r.Stderr)
	}
	run, procs := lastRun(t, c)
	var ran []string
	for w := range procs {
		ran = append(ran, w)
	}
	sort.Strings(ran)
	if !slices.Equal(ran, []string{"w1", "w2", "w3", "w4"}) || run.Summary.Skipped != 2 {
		t.Errorf("ran on %v (summary %+v), want w1-w4 and 2 skipped", ran, run.Summary)
	}
}

func TestFleetFailedCanaryRunsNowhereElse(t *testing.T) {
	c := startFleet(t)
	r := c.CLI(t.Context(), "run", "--all", "--canary", "1", "--", "sh", "-c", `echo ran; case $HOME in */w1/*) exit 3;; esac`)
	if r.Code != 3 || r.Stdout != "w1: ran\n" || !strings.Contains(r.Stderr, "canary failed on w1") {
		t.Errorf("run = %d %q %q; want only w1, exit 3", r.Code, r.Stdout, r.Stderr)
	}
	if ps, _ := c.Client.Processes(t.Context(), 0, ""); len(ps) != 1 {
		t.Errorf("%d processes ran, want only the canary", len(ps))
	}
	run, _ := lastRun(t, c)
	if run.State != devops.RunFailed || run.Summary.Skipped != 5 {
		t.Errorf("run = %s %+v, want FAILED with 5 skipped", run.State, run.Summary)
	}
}

func TestFleetPauseResumeAndReattach(t *testing.T) {
	c := startFleet(t)
	ctx := t.Context()
	r := c.CLI(ctx, "run", "--workers", "w1,w2,w3", "--canary", "1", "--pause-after-canary", "--detach", "--", "echo", "hi")
	id := devops.RunID(strings.TrimSpace(r.Stdout))
	if r.Code != 0 || !devops.IsRunID(string(id)) {
		t.Fatalf("run --detach = %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	testcluster.Eventually(t, 10*time.Second, "paused after the canary", func() bool {
		run, err := c.Client.FleetRun(ctx, id)
		return err == nil && run.State == devops.RunPaused && run.Summary.Succeeded == 1
	})
	if ps, _ := c.Client.Processes(ctx, 0, ""); len(ps) != 1 {
		t.Errorf("%d processes ran before the resume, want 1", len(ps))
	}
	if r := c.CLI(ctx, "run-resume", string(id)); r.Code != 0 || r.Stdout != string(id)+": resumed; its other targets start now (devops logs -f "+string(id)+" follows them)\n" {
		t.Fatalf("run-resume = %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	f := c.CLI(ctx, "logs", "-f", string(id))
	lines := strings.Split(strings.TrimSpace(f.Stdout), "\n")
	sort.Strings(lines)
	if f.Code != 0 || !slices.Equal(lines, []string{"w1: hi", "w2: hi", "w3: hi"}) {
		t.Errorf("logs -f RUN = %d %q %q", f.Code, f.Stdout, f.Stderr)
	}
	st := c.CLI(ctx, "run-status", string(id))
	if st.Code != 0 || !strings.Contains(st.Stdout, "SUCCEEDED") || !strings.Contains(st.Stdout, "3/3 succeeded") {
		t.Errorf("run-status = %d\n%s", st.Code, st.Stdout)
	}
	ls := c.CLI(ctx, "runs")
	if !strings.Contains(ls.Stdout, string(id)) {
		t.Errorf("runs lacks %s:\n%s", id, ls.Stdout)
	}
	// Before, it printed the state the answer held: "PAUSED" after a
	// resume, and "SUCCEEDED" for an ended run, as if it had done something.
	if r := c.CLI(ctx, "run-resume", string(id)); r.Code != 0 || !strings.Contains(r.Stdout, "nothing to resume: it ended SUCCEEDED") {
		t.Errorf("run-resume of an ended run = %d %q", r.Code, r.Stdout)
	}
}

func TestFleetKillRunAndJSONOutput(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 3})
	ctx := t.Context()
	r := c.CLI(ctx, "run", "--all", "--detach", "--", "sh", "-c", "echo up; sleep 60")
	id := strings.TrimSpace(r.Stdout)
	testcluster.Eventually(t, 10*time.Second, "all running", func() bool {
		run, err := c.Client.FleetRun(ctx, devops.RunID(id))
		return err == nil && run.Summary.Running == 3
	})
	if k := c.CLI(ctx, "kill", "--grace", "1s", id); k.Code != 0 {
		t.Fatalf("kill RUN = %d %q", k.Code, k.Stderr)
	}
	f := c.CLI(ctx, "logs", "-f", id)
	if f.Code == 0 || !strings.Contains(f.Stderr, "CANCELLED") {
		t.Errorf("logs -f of a cancelled run = %d %q", f.Code, f.Stderr)
	}
	run, procs := lastRun(t, c)
	if run.State != devops.RunCancelled || len(procs) != 3 {
		t.Errorf("run = %s with %d children, want CANCELLED with 3", run.State, len(procs))
	}
	for w, p := range procs {
		if p.State != devops.StateTerminated {
			t.Errorf("%s ended %s, want TERMINATED", w, p.State)
		}
	}

	// -o json: one object per chunk, then one per end.
	r = c.CLI(ctx, "run", "--all", "-o", "json", "--", "echo", "hi")
	if r.Code != 0 {
		t.Fatalf("run -o json = %d %q", r.Code, r.Stderr)
	}
	var chunks, ends int
	sc := bufio.NewScanner(strings.NewReader(r.Stdout))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		switch {
		case m["data"] == "hi\n" && m["stream"] == "stdout" && m["worker"] != "" && m["timestamp"] != nil:
			chunks++
		case m["state"] == "SUCCEEDED":
			ends++
		}
	}
	if chunks != 3 || ends != 3 {
		t.Errorf("json output has %d chunks and %d ends, want 3 and 3:\n%s", chunks, ends, r.Stdout)
	}

	// Bytes that are not UTF-8 come whole, in base64; before, each became
	// U+FFFD.
	r = c.CLI(ctx, "run", "--workers", "w1", "-o", "json", "--", "printf", `\377\376x\n`)
	var got []byte
	sc = bufio.NewScanner(strings.NewReader(r.Stdout))
	for sc.Scan() {
		var m struct {
			Data       *string `json:"data"`
			DataBase64 []byte  `json:"data_base64"`
			State      string  `json:"state"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if m.State == "" && (m.Data == nil) == (m.DataBase64 == nil) {
			t.Errorf("chunk %q has both data and data_base64, or neither", sc.Text())
		}
		got = append(got, m.DataBase64...)
	}
	if want := "\xff\xfex\n"; r.Code != 0 || string(got) != want {
		t.Errorf("run -o json of non-UTF-8 output = %d, data_base64 %q, want %q:\n%s", r.Code, got, want, r.Stdout)
	}
}

// restartUnderFirstChild waits until fleet run id (one child at a time)
// runs its first child, restarts the manager, and follows the run to its
// end: the children after the first start on the new manager.
func restartUnderFirstChild(t *testing.T, c *testcluster.Cluster, id devops.RunID) testcluster.Result {
	t.Helper()
	testcluster.Eventually(t, 10*time.Second, "first child running", func() bool {
		run, err := c.Client.FleetRun(t.Context(), id)
		return err == nil && run.Summary.Running == 1
	})
	c.StopManager()
	c.StartManager()
	return c.CLI(t.Context(), "logs", "-f", string(id))
}

func TestFleetRunSurvivesManagerRestart(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 3})
	ctx := t.Context()
	r := c.CLI(ctx, "run", "--all", "--max-concurrency", "1", "--detach", "--", "sh", "-c", "sleep 0.3; echo ok")
	id := devops.RunID(strings.TrimSpace(r.Stdout))
	f := restartUnderFirstChild(t, c, id)
	if f.Code != 0 || strings.Count(f.Stdout, ": ok\n") != 3 {
		t.Errorf("logs -f after a restart = %d %q %q", f.Code, f.Stdout, f.Stderr)
	}
	run, err := c.Client.FleetRun(ctx, id)
	if err != nil || run.State != devops.RunSucceeded || run.Summary.Succeeded != 3 {
		t.Errorf("run after a restart = %+v, %v", run, err)
	}
}

func TestNamedWorkerThatCannotRunFailsTheRun(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2})
	c.StopWorker(1)
	testcluster.Eventually(t, 10*time.Second, "w2 down", func() bool {
		ws, _ := c.Client.Workers(t.Context())
		for _, w := range ws {
			if w.Name == "w2" {
				return w.State == devops.WorkerDown
			}
		}
		return false
	})
	r := c.CLI(t.Context(), "run", "--workers", "w1,w2", "--", "echo", "hi")
	if r.Code == 0 || !strings.Contains(r.Stderr, "not running on w2") || !strings.Contains(r.Stdout, "w1: hi") {
		t.Errorf("run on w1 and a down w2 = %d %q %q, want w1's output and a failure naming w2", r.Code, r.Stdout, r.Stderr)
	}
}

// TestWorkersTakeRanges: --workers expands pdsh-style ranges, the comma
// inside brackets too.
func TestWorkersTakeRanges(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 4})
	r := c.CLI(t.Context(), "run", "--workers", "w[1,3-4]", "--", "echo", "hi")
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	slices.Sort(lines)
	if r.Code != 0 || !slices.Equal(lines, []string{"w1: hi", "w3: hi", "w4: hi"}) {
		t.Errorf("run --workers w[1,3-4] = %d %q %q; want w1, w3 and w4", r.Code, r.Stdout, r.Stderr)
	}
	if r := c.CLI(t.Context(), "run", "--workers", "w[2-1]", "--", "true"); r.Code != 255 || !strings.Contains(r.Stderr, `--workers: invalid argument: "w[2-1]"`) {
		t.Errorf("run --workers w[2-1] = %d %q", r.Code, r.Stderr)
	}
}

// TestCoalesce: --coalesce prints one block for the workers whose output
// and end are the same.
func TestCoalesce(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 3})
	script := `echo same; case $HOME in */w3/*) echo odd; exit 2;; esac`
	r := c.CLI(t.Context(), "run", "--all", "--coalesce", "--", "sh", "-c", script)
	want := "==> w[1-2] (2): SUCCEEDED, exit 0 <==\nsame\n==> w3 (1): FAILED, exit 2 <==\nsame\nodd\n"
	if r.Code != 2 || r.Stdout != want {
		t.Errorf("run --all --coalesce = %d %q %q; want 2 and %q", r.Code, r.Stdout, r.Stderr, want)
	}
	if r := c.CLI(t.Context(), "run", "--all", "--coalesce", "-o", "json", "--", "true"); r.Code != 255 || !strings.Contains(r.Stderr, "--coalesce") {
		t.Errorf("--coalesce -o json = %d %q, want refused", r.Code, r.Stderr)
	}
}

// TestExclude: --exclude leaves workers out of --all, a selector or a list,
// ranges too, and --dry-run says so; a name that is no worker is ignored.
func TestExclude(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 4})
	ctx := t.Context()
	r := c.CLI(ctx, "run", "--all", "--exclude", "w[2-3],nosuch", "--", "echo", "hi")
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	slices.Sort(lines)
	if r.Code != 0 || !slices.Equal(lines, []string{"w1: hi", "w4: hi"}) {
		t.Errorf("run --all --exclude w[2-3] = %d %q %q; want w1 and w4", r.Code, r.Stdout, r.Stderr)
	}
	run, _ := lastRun(t, c)
	if got := run.Target.String(); got != "all except w2,w3,nosuch" {
		t.Errorf("the run's target = %q", got)
	}
	d := c.CLI(ctx, "run", "--workers", "w1,w4", "--exclude", "w4", "--dry-run", "--", "true")
	if d.Code != 0 || !strings.Contains(d.Stdout, "w4") || !strings.Contains(d.Stdout, "excluded (--exclude)") {
		t.Errorf("--dry-run with --exclude = %d %q %q; want w4 named as excluded", d.Code, d.Stdout, d.Stderr)
	}
	if r := c.CLI(ctx, "run", "--all", "--exclude", "w[1-4]", "--", "true"); r.Code != 255 || !strings.Contains(r.Stderr, "excluded (--exclude)") {
		t.Errorf("everything excluded = %d %q; want refused, saying why", r.Code, r.Stderr)
	}
}

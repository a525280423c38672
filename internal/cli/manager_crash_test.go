package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/testcluster"
)

// TestManagerKill9MidRun kills the manager process with SIGKILL while a
// command runs and a client follows it, and starts it again on the same
// data dir: the client goes on without a gap or a duplicate, the command
// ran once, and its record ends right.
func TestManagerKill9MidRun(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{ManagerProcess: true})
	dir := t.TempDir()
	script, want := probe(40)
	// stderr apart: it may tell of a wait while the manager is back.
	out, _, code := startCLI(t, c, "run", "--dir", dir, "--", "sh", "-c", script)
	testcluster.Eventually(t, 10*time.Second, "output started", func() bool { return strings.Contains(out.String(), "line 3\n") })

	killedAt := time.Now()
	c.KillManager()
	c.StartManager()
	c.WaitWorkers(1)
	t.Logf("manager back with its worker %v after the kill", time.Since(killedAt).Round(time.Millisecond))

	if got := exitOf(t, code, 60*time.Second, "run did not finish after the manager came back"); got != 0 {
		t.Errorf("run across a kill -9 of the manager exited %d:\n%s", got, out.String())
	}
	if out.String() != want {
		t.Errorf("output across the crash:\n%s\nwant:\n%s", out.String(), want)
	}
	runs, _ := os.ReadFile(filepath.Join(dir, "runs.log"))
	if string(runs) != "start\n" {
		t.Errorf("the command started %d times, want once", strings.Count(string(runs), "start"))
	}
	ps, err := c.Client.Processes(t.Context(), devops.StateUnknown, "")
	if err != nil || len(ps) != 1 || ps[0].State != devops.StateSucceeded || ps[0].OutputBytes != int64(len(want)) {
		t.Errorf("records after the crash = %+v, %v; want one SUCCEEDED process with all its output", ps, err)
	}
}

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

// TestWorkerKilledMidRunIsAdopted kills the worker (as kill -9 would) while
// a command runs and starts it again on the same data dir: the command ran
// on under its shim, is RUNNING again, and the CLI that was following gets
// all of its output, once, and its exit code.
func TestWorkerKilledMidRunIsAdopted(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Logs: os.Getenv("LOGS") != ""})
	dir := t.TempDir()
	script, want := probe(80)
	// stderr apart: it tells of the disconnection.
	out, _, code := startCLI(t, c, "run", "--dir", dir, "--", "sh", "-c", script)
	testcluster.Eventually(t, 5*time.Second, "output started", func() bool { return strings.Contains(out.String(), "line 3\n") })
	id := firstProcess(t, c)

	c.CrashWorker(0)
	c.StartWorker(0)
	testcluster.Eventually(t, 10*time.Second, "process RUNNING again, output going on", func() bool {
		return stateOf(t, c, id) == devops.StateRunning && strings.Contains(out.String(), "line 40\n")
	})
	if got := exitOf(t, code, 20*time.Second, "run did not finish after the worker came back"); got != 0 {
		t.Errorf("run exited %d; output:\n%s", got, out.String())
	}
	if out.String() != want {
		t.Errorf("output across the worker restart:\n%s\nwant:\n%s", out.String(), want)
	}
	runs, _ := os.ReadFile(filepath.Join(dir, "runs.log"))
	if string(runs) != "start\n" {
		t.Errorf("the command started %d times, want once", strings.Count(string(runs), "start"))
	}
	// The new worker's executor made spare process directories in the
	// spool (the killed one's were removed); adopting did not take them
	// for processes.
	testcluster.Eventually(t, 10*time.Second, "four spare directories in the spool", func() bool {
		found, _ := filepath.Glob(filepath.Join(c.WorkerDir(0), "spool", ".spare-*"))
		return len(found) == 4
	})
}

// TestProcessEndedWhileWorkerDownKeepsItsExit: a command that ends while
// its worker is down reports its real exit code and output once the worker
// is back.
func TestProcessEndedWhileWorkerDownKeepsItsExit(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Logs: os.Getenv("LOGS") != ""})
	r := c.CLI(t.Context(), "run", "--detach", "--", "sh", "-c", "echo before; sleep 0.3; echo after; exit 7")
	id := devops.ProcessID(strings.TrimSpace(r.Stdout))
	testcluster.Eventually(t, 5*time.Second, "running", func() bool { return stateOf(t, c, id) == devops.StateRunning })

	c.CrashWorker(0)
	exitFile := filepath.Join(c.WorkerDir(0), "spool", string(id), "exit.json")
	testcluster.Eventually(t, 10*time.Second, "the command ended without its worker", func() bool {
		_, err := os.Stat(exitFile)
		return err == nil
	})
	c.StartWorker(0)
	testcluster.Eventually(t, 15*time.Second, "process ended", func() bool { return stateOf(t, c, id).Terminal() })
	p, err := c.Client.Status(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != devops.StateFailed || p.Code != 7 {
		t.Errorf("process = %s code %d (%s), want FAILED with code 7", p.State, p.Code, p.Reason)
	}
	if r := c.CLI(t.Context(), "logs", string(id)); r.Stdout != "before\nafter\n" {
		t.Errorf("logs = %q, want both lines", r.Stdout)
	}
}

// TestWorkerStopLeavesItsProcessRunning: a graceful stop (as for an upgrade)
// does not kill what the worker runs; the next worker adopts it and can
// still terminate it.
func TestWorkerStopLeavesItsProcessRunning(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Logs: os.Getenv("LOGS") != ""})
	r := c.CLI(t.Context(), "run", "--detach", "--", "sleep", "30")
	id := devops.ProcessID(strings.TrimSpace(r.Stdout))
	testcluster.Eventually(t, 5*time.Second, "running", func() bool { return stateOf(t, c, id) == devops.StateRunning })
	c.StopWorker(0)
	c.StartWorker(0)
	c.WaitWorkers(1)
	if s := stateOf(t, c, id); s != devops.StateRunning && s != devops.StateDisconnected {
		t.Fatalf("process after its worker restarted: %s, want RUNNING", s)
	}
	testcluster.Eventually(t, 10*time.Second, "RUNNING on the restarted worker", func() bool { return stateOf(t, c, id) == devops.StateRunning })
	if r := c.CLI(t.Context(), "kill", "--grace", "1s", string(id)); r.Code != 0 {
		t.Fatalf("kill = %d %q", r.Code, r.Stderr)
	}
	testcluster.Eventually(t, 10*time.Second, "terminated", func() bool { return stateOf(t, c, id) == devops.StateTerminated })
}

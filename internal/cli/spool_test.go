package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/manager"
	"github.com/devops-platform/devops/internal/testcluster"
	"github.com/devops-platform/devops/internal/worker"
)

// TestSpoolBoundDropsOldestAndShowsLoss: while the manager cannot reach the
// worker, a process writes far more than the worker's spool bound. The
// oldest of it is dropped; once the partition heals the output goes on from
// what was kept, the loss is counted in the record, said on the CLI's
// stderr at the place it happened and in devops status, and every byte
// that was not dropped arrives exactly once and in order.
func TestSpoolBoundDropsOldestAndShowsLoss(t *testing.T) {
	const bound = 128 << 10
	c := testcluster.Start(t, testcluster.Options{
		Proxies: true,
		Logs:    os.Getenv("LOGS") != "",
		Manager: func(cfg *manager.Config) { cfg.WorkerTimeout = time.Second },
		Worker:  func(_ int, cfg *worker.Config) { cfg.SpoolMax = bound },
	})
	dir := t.TempDir()
	// head, then (once told) ~1 MB of numbered lines, then (once told) tail.
	const n = 150000
	script := `echo head; while [ ! -e go1 ]; do sleep 0.02; done; seq 1 ` + fmt.Sprint(n) +
		`; touch bulk-done; while [ ! -e go2 ]; do sleep 0.02; done; echo tail`
	var bulk strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&bulk, "%d\n", i)
	}
	stdout, stderr, code := startCLI(t, c, "run", "--dir", dir, "--", "sh", "-c", script)
	testcluster.Eventually(t, 5*time.Second, "head received", func() bool { return stdout.String() == "head\n" })
	id := firstProcess(t, c)

	c.Proxies[0].Cut()
	testcluster.Eventually(t, 10*time.Second, "process DISCONNECTED", func() bool { return stateOf(t, c, id) == devops.StateDisconnected })
	touch(t, dir, "go1")
	testcluster.Eventually(t, 20*time.Second, "bulk written", func() bool {
		_, err := os.Stat(filepath.Join(dir, "bulk-done"))
		return err == nil
	})
	c.Proxies[0].Heal()
	testcluster.Eventually(t, 10*time.Second, "process RUNNING again", func() bool { return stateOf(t, c, id) == devops.StateRunning })
	touch(t, dir, "go2")
	if got := exitOf(t, code, 20*time.Second, "run did not finish after the partition healed"); got != 0 {
		t.Fatalf("run exited %d; stderr:\n%s", got, stderr.String())
	}

	p, err := c.Client.Status(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(len("head\n") + bulk.Len() + len("tail\n"))
	if p.OutputBytes != total {
		t.Errorf("OutputBytes = %d, want %d (offsets count lost bytes too)", p.OutputBytes, total)
	}
	// At least everything past what the spool, the pipe and the shim hold
	// went, and at most all of the bulk: the spool keeps the bound and up
	// to a mark (64 KiB) more, the command's pipe (256 KiB,
	// executor.pipeSize) holds what it wrote while its shim waited to drop,
	// and the shim what it read at once and was still framing (up to 256
	// KiB, executor.readBuffer).
	const held = bound + 64<<10 + 256<<10 + 256<<10
	if p.OutputLost < int64(bulk.Len())-held || p.OutputLost > int64(bulk.Len()) {
		t.Fatalf("OutputLost = %d, want between %d and %d", p.OutputLost, bulk.Len()-held, bulk.Len())
	}
	want := "head\n" + bulk.String()[p.OutputLost:] + "tail\n"
	if got := stdout.String(); got != want {
		t.Errorf("stdout is %d bytes, want %d: head, the bulk after the %d bytes lost, tail", len(got), len(want), p.OutputLost)
	}
	note := fmt.Sprintf("devops: %s: %d bytes of output lost here", id, p.OutputLost)
	if !strings.Contains(stderr.String(), note) {
		t.Errorf("stderr does not say %q:\n%s", note, stderr.String())
	}
	// A replay shows the same, and status says it.
	var replay, replayErr testcluster.SyncBuffer
	if got := c.CLIWith(context.Background(), &replay, &replayErr, nil, "logs", string(id)); got != 0 || replay.String() != want || !strings.Contains(replayErr.String(), note) {
		t.Errorf("devops logs exited %d with %d bytes (want %d) and stderr %q", got, len(replay.String()), len(want), replayErr.String())
	}
	var status testcluster.SyncBuffer
	c.CLIWith(context.Background(), &status, &status, nil, "status", string(id))
	if !strings.Contains(status.String(), "Output lost:") || !strings.Contains(status.String(), fmt.Sprintf("%d bytes: the worker's spool was full", p.OutputLost)) {
		t.Errorf("devops status does not show the loss:\n%s", status.String())
	}
}

func touch(tb testing.TB, dir, name string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
		tb.Fatal(err)
	}
}

package cli_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/manager"
	"github.com/devops-platform/devops/internal/store"
	"github.com/devops-platform/devops/internal/testcluster"
)

// fullDisk is a store whose output writes fail as on a full disk while
// full is set.
type fullDisk struct {
	manager.Store
	full atomic.Bool
}

func (s *fullDisk) AppendOutput(ctx context.Context, id devops.ProcessID, c devops.Chunk) error {
	if s.full.Load() {
		return fmt.Errorf("write output: %w", &os.PathError{Op: "write", Path: string(id) + ".out", Err: syscall.ENOSPC})
	}
	return s.Store.AppendOutput(ctx, id, c)
}

// TestFullDiskWaitsRunning: while the manager's disk is full, a process
// that writes stays RUNNING with the reason in its record (not
// DISCONNECTED, its worker blamed), and `devops run` says so on stderr;
// once there is room again, every byte arrives once, in order, and the
// reason is gone.
func TestFullDiskWaitsRunning(t *testing.T) {
	disk := &fullDisk{Store: store.NewMemory()}
	c := testcluster.Start(t, testcluster.Options{
		Logs:    os.Getenv("LOGS") != "",
		Manager: func(cfg *manager.Config) { cfg.Store = disk },
	})
	dir := t.TempDir()
	script := `echo one; while [ ! -e go ]; do sleep 0.02; done; echo two`
	stdout, stderr, code := startCLI(t, c, "run", "--dir", dir, "--", "sh", "-c", script)
	testcluster.Eventually(t, 5*time.Second, "one received", func() bool { return stdout.String() == "one\n" })
	id := firstProcess(t, c)

	disk.full.Store(true)
	touch(t, dir, "go")
	testcluster.Eventually(t, 10*time.Second, "the reason in the record", func() bool {
		p, err := c.Client.Status(t.Context(), id)
		return err == nil && strings.Contains(p.Reason, "no space left on device")
	})
	// A while later it is still RUNNING: no try flipped it.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if st := stateOf(t, c, id); st != devops.StateRunning {
			t.Fatalf("state %v while the disk is full, want RUNNING", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := stdout.String(); got != "one\n" {
		t.Errorf("the follower got %q before the output was stored, want only \"one\\n\"", got)
	}
	waiting := fmt.Sprintf("devops: %s: RUNNING: the manager cannot store output", id)
	testcluster.Eventually(t, 5*time.Second, "run saying why it waits", func() bool { return strings.Contains(stderr.String(), waiting) })

	disk.full.Store(false)
	if got := exitOf(t, code, 20*time.Second, "run did not finish once the disk had room"); got != 0 {
		t.Fatalf("run exited %d; stderr:\n%s", got, stderr.String())
	}
	if got := stdout.String(); got != "one\ntwo\n" {
		t.Errorf("stdout = %q, want \"one\\ntwo\\n\"", got)
	}
	p, err := c.Client.Status(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != devops.StateSucceeded || p.Reason != "" {
		t.Errorf("end: %v, reason %q; want SUCCEEDED with no reason", p.State, p.Reason)
	}
}

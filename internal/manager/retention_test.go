package manager

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/store"
)

// preload stores processes before a manager starts on the store.
func preload(tb testing.TB, s *store.Memory, ps ...devops.Process) {
	tb.Helper()
	for _, p := range ps {
		if err := s.PutProcess(context.Background(), p); err != nil {
			tb.Fatal(err)
		}
	}
}

func ended(id devops.ProcessID, at time.Time) devops.Process {
	return devops.Process{ID: id, State: devops.StateSucceeded, Spec: devops.Spec{Argv: []string{"true"}}, CreatedAt: at, EndedAt: at}
}

// TestForgetPastRetention: processes and fleet runs that ended before the
// cutoff go from the table and the store, output and idempotency key
// included; recent ones, those still running, and the children of a run
// that is kept stay. A run goes with its children.
func TestForgetPastRetention(t *testing.T) {
	now := time.Now()
	long, recent := now.Add(-2*time.Hour), now.Add(-10*time.Minute)
	mem := store.NewMemory()
	old := ended("old", long)
	old.IdempotencyKey = "k-old"
	pending := devops.Process{ID: "pending", State: devops.StatePending, Spec: devops.Spec{Argv: []string{"true"}}, CreatedAt: long}
	preload(t, mem, old, ended("recent", recent), pending,
		ended("child-of-recent-run", long), ended("child-of-old-run", long), ended("retried-of-old-run", long))
	ctx := t.Context()
	if err := mem.AppendOutput(ctx, "old", devops.Chunk{Stream: devops.Stdout, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := mem.CloseOutput(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, Config{Store: mem}) // no retention: forget is called below
	m.fleet.mu.Lock()
	m.fleet.addLocked(devops.Run{ID: "run-recent", State: devops.RunSucceeded, EndedAt: recent,
		Tasks: []devops.RunTask{{ProcessID: "child-of-recent-run"}}})
	m.fleet.addLocked(devops.Run{ID: "run-old", State: devops.RunFailed, EndedAt: long, IdempotencyKey: "k-run",
		Tasks: []devops.RunTask{{ProcessID: "child-of-old-run", Previous: []devops.RunAttempt{{ProcessID: "retried-of-old-run"}}}}})
	m.fleet.mu.Unlock()
	// Standard inputs: a process's own, a run's and its child's link.
	for _, id := range []string{"old", "recent", "run-old"} {
		if err := m.inputs.put(id, []byte("input of "+id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.inputs.link("run-old", "child-of-old-run"); err != nil {
		t.Fatal(err)
	}

	m.forget(ctx, now.Add(-time.Hour))

	var left []devops.ProcessID
	for _, p := range m.procs.list(ProcessFilter{}.keep) {
		left = append(left, p.ID)
	}
	want := []devops.ProcessID{"child-of-recent-run", "pending", "recent"}
	if !slices.Equal(left, want) {
		t.Errorf("processes left: %v, want %v", left, want)
	}
	for _, id := range []devops.ProcessID{"old", "child-of-old-run", "retried-of-old-run"} {
		if _, err := mem.Process(ctx, id); !errors.Is(err, devops.ErrNotFound) {
			t.Errorf("store still has %s: %v", id, err)
		}
	}
	if info, err := mem.OutputInfo(ctx, "old"); err != nil || info.End != 0 {
		t.Errorf("output of old after forget: %+v, %v; want none", info, err)
	}
	if ids := m.procs.byIdempotencyKey("k-old"); len(ids) != 0 {
		t.Errorf("idempotency key k-old still names %v", ids)
	}
	if _, ok := m.fleet.get("run-old"); ok {
		t.Error("run-old is still in the fleet table")
	}
	if _, ok := m.fleet.get("run-recent"); !ok {
		t.Error("run-recent was forgotten")
	}
	m.fleet.mu.Lock()
	_, keyLeft := m.fleet.byKey["k-run"]
	m.fleet.mu.Unlock()
	if keyLeft {
		t.Error("the idempotency key of run-old is still known")
	}
	for _, id := range []string{"old", "run-old", "child-of-old-run"} {
		if _, err := m.inputs.read(id, int64(len("input of "+id))); !errors.Is(err, errNoInput) {
			t.Errorf("input of %s after forget: %v, want it gone", id, err)
		}
	}
	if b, err := m.inputs.read("recent", int64(len("input of recent"))); err != nil || string(b) != "input of recent" {
		t.Errorf("input of recent after forget: %q, %v; want it kept", b, err)
	}
}

// TestForgetKeepsARunWithAChildNotDone: a run that ended long ago stays,
// children and all, while one of its children has not ended long enough.
func TestForgetKeepsARunWithAChildNotDone(t *testing.T) {
	now := time.Now()
	mem := store.NewMemory()
	preload(t, mem, ended("done", now.Add(-2*time.Hour)), ended("late", now.Add(-time.Minute)))
	m := startManager(t, Config{Store: mem})
	m.fleet.mu.Lock()
	m.fleet.addLocked(devops.Run{ID: "run", State: devops.RunCancelled, EndedAt: now.Add(-2 * time.Hour),
		Tasks: []devops.RunTask{{ProcessID: "done"}, {ProcessID: "late"}}})
	m.fleet.mu.Unlock()
	m.forget(t.Context(), now.Add(-time.Hour))
	if _, ok := m.fleet.get("run"); !ok {
		t.Error("the run went before its last child had ended long enough")
	}
	if got := len(m.procs.list(ProcessFilter{}.keep)); got != 2 {
		t.Errorf("%d processes left, want both children", got)
	}
}

// TestRetentionRunsByItself: with Config.Retention set, what ended long
// ago goes without anyone asking, at start and later.
func TestRetentionRunsByItself(t *testing.T) {
	mem := store.NewMemory()
	preload(t, mem, ended("old", time.Now().Add(-time.Hour)), ended("soon", time.Now()))
	m := startManager(t, Config{Store: mem, Retention: 200 * time.Millisecond})
	gone := func(id devops.ProcessID) func() bool {
		return func() bool {
			_, err := mem.Process(context.Background(), id)
			_, inTable := m.procs.get(id)
			return errors.Is(err, devops.ErrNotFound) && !inTable
		}
	}
	eventually(t, 5*time.Second, "the process that ended an hour ago forgotten", gone("old"))
	eventually(t, 5*time.Second, "the process that just ended forgotten after the retention", gone("soon"))
}

package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/devops-platform/devops"
)

// RunStore is what RunRuns exercises: a store that also keeps fleet runs.
type RunStore interface {
	PutRun(ctx context.Context, r devops.Run) error
	Run(ctx context.Context, id devops.RunID) (devops.Run, error)
	Runs(ctx context.Context) ([]devops.Run, error)
}

// RunRuns runs the fleet run part of the suite: records round-trip, are
// replaced by id, list in id order, and an unknown id is ErrNotFound. open
// returns a new, empty store and registers its cleanup with tb.
func RunRuns(t *testing.T, open func(tb testing.TB) RunStore) {
	t.Run("Runs", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := Context(t)
		if rs, err := s.Runs(ctx); err != nil || len(rs) != 0 {
			t.Fatalf("Runs() on an empty store = %v, %v; want none", rs, err)
		}
		if _, err := s.Run(ctx, "run-nope"); !errors.Is(err, devops.ErrNotFound) {
			t.Errorf("Run(unknown) = %v, want ErrNotFound", err)
		}
		now := time.Now().UTC()
		r := devops.Run{
			ID:      "run-01900000-0000-7000-8000-000000000002",
			Spec:    devops.Spec{Argv: []string{"sh", "-c", "true"}, Timeout: time.Second},
			Target:  devops.RunTarget{Selector: "zone in (a,b)"},
			Options: devops.RunOptions{MaxConcurrency: devops.Limit{Set: true, N: 50, Percent: true}, MaxErrors: devops.Limit{Set: true, N: 1}, StopOnError: devops.StopKill, Canary: 1},
			State:   devops.RunRunning,
			Tasks: []devops.RunTask{
				{WorkerID: "w1", WorkerName: "w1", ProcessID: ProcessID(1), Canary: true, State: devops.StateRunning},
				{WorkerID: "w2", WorkerName: "w2", Skipped: true, Reason: "canary failed"},
			},
			Excluded:  []devops.Exclusion{{WorkerID: "w3", WorkerName: "w3", Reason: "down"}},
			Summary:   devops.RunSummary{Total: 2, Running: 1, Skipped: 1},
			CreatedAt: now,
		}
		older := devops.Run{ID: "run-01900000-0000-7000-8000-000000000001", Spec: devops.Spec{Argv: []string{"true"}}, State: devops.RunSucceeded, CreatedAt: now}
		for _, x := range []devops.Run{r, older} {
			if err := s.PutRun(ctx, x); err != nil {
				t.Fatalf("PutRun(%s) = %v", x.ID, err)
			}
		}
		got, err := s.Run(ctx, r.ID)
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("Run(%s) = %+v, %v\nwant %+v", r.ID, got, err, r)
		}
		r.State, r.EndedAt = devops.RunFailed, now.Add(time.Second)
		if err := s.PutRun(ctx, r); err != nil {
			t.Fatalf("PutRun(replace) = %v", err)
		}
		rs, err := s.Runs(ctx)
		if err != nil || len(rs) != 2 || rs[0].ID != older.ID || !reflect.DeepEqual(rs[1], r) {
			t.Errorf("Runs() = %+v, %v; want the older run, then the replaced one", rs, err)
		}
	})
}

package cli_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/manager"
	"github.com/devops-platform/devops/internal/store"
	"github.com/devops-platform/devops/internal/testcluster"
)

// TestPsListsAWeekOfHistory: a manager keeps every process for a week by
// default, and ps lists them all, however many, where one answer holding
// them passed gRPC's message size limit (8 MiB): 50,000 small records, and
// a few whose arguments are 1 MiB each.
func TestPsListsAWeekOfHistory(t *testing.T) {
	const small, big = 50_000, 12
	st := store.NewMemory()
	ctx := context.Background()
	ended := time.Now().Add(-time.Hour)
	put := func(i int, argv []string) {
		// Ids in creation order, as the manager makes them (UUIDv7), but put
		// in the store backwards: a restart loads them in the store's order.
		id := devops.ProcessID(fmt.Sprintf("00000000-0000-7000-8000-%012d", i))
		state := devops.StateSucceeded
		if i%10 == 0 {
			state = devops.StateFailed
		}
		if err := st.PutProcess(ctx, devops.Process{ID: id, WorkerID: "gone", WorkerName: fmt.Sprintf("old-%d", i%3),
			Spec: devops.Spec{Argv: argv}, State: state, Code: int(state - devops.StateSucceeded),
			CreatedAt: ended, StartedAt: ended, EndedAt: ended, StateChangedAt: ended}); err != nil {
			t.Fatal(err)
		}
	}
	for i := small + big - 1; i >= small; i-- {
		put(i, []string{"echo", strings.Repeat("x", 1<<20-100)})
	}
	for i := small - 1; i >= 0; i-- {
		put(i, []string{"sh", "-c", "echo a line of a nightly job; exit 0"})
	}
	c := testcluster.Start(t, testcluster.Options{Manager: func(cfg *manager.Config) { cfg.Store = st }})

	ps, err := c.Client.Processes(t.Context(), devops.StateUnknown, "")
	if err != nil {
		t.Fatalf("list %d processes: %v", small+big, err)
	}
	if len(ps) != small+big {
		t.Fatalf("listed %d processes, want %d", len(ps), small+big)
	}
	for i, p := range ps {
		if want := fmt.Sprintf("00000000-0000-7000-8000-%012d", i); string(p.ID) != want {
			t.Fatalf("process %d is %s, want %s: not each once, oldest first", i, p.ID, want)
		}
	}

	// Filters apply across pages.
	r := c.CLI(t.Context(), "ps", "--state", "failed", "--worker", "old-1")
	if r.Code != 0 {
		t.Fatalf("ps --state failed --worker old-1 = %d: %s", r.Code, r.Stderr)
	}
	want := 0
	for i := range small + big {
		if i%10 == 0 && i%3 == 1 {
			want++
		}
	}
	if got := strings.Count(r.Stdout, "\n") - 1; got != want || strings.Contains(r.Stdout, "SUCCEEDED") {
		t.Errorf("ps --state failed --worker old-1 listed %d processes, want %d failed ones", got, want)
	}

	// The most recent few, oldest first, filtered.
	r = c.CLI(t.Context(), "ps", "-n", "3", "--state", "failed", "-o", "json")
	if r.Code != 0 {
		t.Fatalf("ps -n 3 --state failed = %d: %s", r.Code, r.Stderr)
	}
	var got []string
	for _, p := range decodeJSONList(t, "ps -n 3", r.Stdout, func() *pb.Process { return &pb.Process{} }) {
		got = append(got, p.GetId())
	}
	wantIDs := []string{"00000000-0000-7000-8000-000000049990", "00000000-0000-7000-8000-000000050000", "00000000-0000-7000-8000-000000050010"}
	if !slices.Equal(got, wantIDs) {
		t.Errorf("ps -n 3 --state failed listed %v, want %v", got, wantIDs)
	}
}

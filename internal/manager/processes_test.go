package manager

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/store"
)

// recordingStore keeps a copy of every process record written.
type recordingStore struct {
	Store
	mu   sync.Mutex
	puts []devops.Process
}

func (s *recordingStore) PutProcess(ctx context.Context, p devops.Process) error {
	s.mu.Lock()
	s.puts = append(s.puts, p)
	s.mu.Unlock()
	return s.Store.PutProcess(ctx, p)
}

func (s *recordingStore) first() (devops.Process, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.puts) == 0 {
		return devops.Process{}, false
	}
	return s.puts[0], true
}

// TestSubmitPlacesAtOnce: a command that may run on any worker, submitted
// while one has a free slot, is written to the store once before delivery,
// already naming its worker -- not once unplaced and again placed.
func TestSubmitPlacesAtOnce(t *testing.T) {
	rec := &recordingStore{Store: store.NewMemory()}
	m := startManager(t, Config{Store: rec})
	f := startFakeWorker(t, m, "w1")
	f.open(t, t.Context(), f.id)
	eventually(t, 5*time.Second, "worker UP", func() bool { return state(m, f.id) == devops.WorkerUp })

	ids, err := m.Submit(t.Context(), Submission{Spec: devops.Spec{Argv: []string{"true"}}})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	p, ok := rec.first()
	if !ok {
		t.Fatal("Submit returned before the process was stored")
	}
	if p.ID != ids[0] || p.State != devops.StatePending || p.WorkerID != f.id {
		t.Errorf("first record: id %s state %v worker %q; want %s PENDING on %q", p.ID, p.State, p.WorkerID, ids[0], f.id)
	}
}

// TestWatchSendsTheEndAfterTheOutput: a process that ended before its
// watcher came is sent as it would have been live: its output, then its
// final record, once.
func TestWatchSendsTheEndAfterTheOutput(t *testing.T) {
	mem := store.NewMemory()
	ctx := t.Context()
	at := time.Now().Add(-time.Second)
	p := devops.Process{ID: "done", State: devops.StateSucceeded, Spec: devops.Spec{Argv: []string{"echo", "hi"}},
		CreatedAt: at, StartedAt: at, EndedAt: at, OutputBytes: 3}
	if err := mem.PutProcess(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := mem.AppendOutput(ctx, "done", devops.Chunk{Stream: devops.Stdout, Data: []byte("hi\n")}); err != nil {
		t.Fatal(err)
	}
	if err := mem.CloseOutput(ctx, "done"); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, Config{Store: mem})
	var got []string
	err := m.Watch(ctx, []devops.ProcessID{"done"}, 0, true, true, func(ev Event) error {
		if ev.Chunk != nil {
			got = append(got, "chunk "+string(ev.Chunk.Data))
		} else {
			got = append(got, "record "+ev.Process.State.String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"chunk hi\n", "record SUCCEEDED"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

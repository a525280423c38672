package registry

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/scheduler"
)

func TestSilentWorkerGoesDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var changes []devops.WorkerState
		r := New(Config{Timeout: 10 * time.Second, OnChange: func(w devops.Worker, old devops.WorkerState) {
			changes = append(changes, w.State)
		}})
		defer r.Stop()
		w, err := r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 2})
		if err != nil {
			t.Fatal(err)
		}
		if w.State != devops.WorkerDown {
			t.Fatalf("a registered worker is %s before its first heartbeat, want DOWN", w.State)
		}
		r.Heartbeat("1", false, 0)
		time.Sleep(9 * time.Second)
		r.Heartbeat("1", false, 0) // restarts the timer
		time.Sleep(9 * time.Second)
		if got, _ := r.Get("w1"); got.State != devops.WorkerUp {
			t.Fatalf("state after heartbeats = %s, want UP", got.State)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got, _ := r.Get("w1"); got.State != devops.WorkerDown {
			t.Fatalf("state after 11s of silence = %s, want DOWN", got.State)
		}
		want := []devops.WorkerState{devops.WorkerDown, devops.WorkerUp, devops.WorkerDown}
		if len(changes) != len(want) {
			t.Fatalf("changes = %v, want %v", changes, want)
		}
	})
}

func TestNameConflicts(t *testing.T) {
	r := New(Config{})
	defer r.Stop()
	r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 1})
	r.Heartbeat("1", false, 0)
	if _, err := r.Register(devops.Worker{ID: "2", Name: "w1", Capacity: 1}); !errors.Is(err, devops.ErrAlreadyExists) {
		t.Errorf("a second live w1 = %v, want ErrAlreadyExists", err)
	}
	if _, err := r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 3}); err != nil {
		t.Errorf("w1 coming back with its id = %v", err)
	}
	r.MarkDown("1")
	if _, err := r.Register(devops.Worker{ID: "2", Name: "w1", Capacity: 1}); err != nil {
		t.Errorf("a new w1 replacing a down one = %v", err)
	}
	if _, err := r.Get("1"); !errors.Is(err, devops.ErrNotFound) {
		t.Errorf("the replaced worker is still known: %v", err)
	}
}

func TestAcquireAndReleaseSlots(t *testing.T) {
	r := New(Config{})
	defer r.Stop()
	r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 1})
	r.Heartbeat("1", false, 0)
	pick := func(ws []devops.Worker) (devops.Worker, error) { return scheduler.Pick(ws, scheduler.Selector{}) }
	if _, err := r.Acquire(pick); err != nil {
		t.Fatalf("first Acquire = %v", err)
	}
	changed := r.Changed()
	if _, err := r.Acquire(pick); !errors.Is(err, devops.ErrNoCapacity) {
		t.Fatalf("Acquire on a full worker = %v, want ErrNoCapacity", err)
	}
	r.Release("1")
	select {
	case <-changed:
	default:
		t.Fatal("Release did not signal Changed")
	}
	if _, err := r.Acquire(pick); err != nil {
		t.Fatalf("Acquire after Release = %v", err)
	}
}

func TestDrainingTakesNoWork(t *testing.T) {
	r := New(Config{})
	defer r.Stop()
	r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 1})
	r.Heartbeat("1", false, 0)
	if w, err := r.SetDraining("1", true, 0); err != nil || w.State != devops.WorkerDraining {
		t.Fatalf("SetDraining = %v, %v", w.State, err)
	}
	pick := func(ws []devops.Worker) (devops.Worker, error) { return scheduler.Pick(ws, scheduler.Selector{}) }
	if _, err := r.Acquire(pick); !errors.Is(err, devops.ErrNoMatch) {
		t.Errorf("Acquire on a draining worker = %v, want ErrNoMatch", err)
	}
	if w, _ := r.SetDraining("1", false, 0); w.State != devops.WorkerUp {
		t.Errorf("undo drain: %s, want UP", w.State)
	}
}

// TestStaleDrainReportIgnored checks that of a drain answer and a report,
// the one with the higher drain generation holds, whichever came last: a
// report taken before an undo must not mark the worker DRAINING again. A
// worker that registers again counts from 0.
func TestStaleDrainReportIgnored(t *testing.T) {
	r := New(Config{})
	defer r.Stop()
	r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 1})
	state := func() devops.WorkerState {
		t.Helper()
		w, err := r.Get("1")
		if err != nil {
			t.Fatal(err)
		}
		return w.State
	}
	r.Heartbeat("1", false, 0)
	r.SetDraining("1", true, 1)
	r.Heartbeat("1", false, 0) // taken before the drain
	if s := state(); s != devops.WorkerDraining {
		t.Fatalf("after a report older than the drain: %s, want DRAINING", s)
	}
	r.SetDraining("1", false, 2)
	r.Heartbeat("1", true, 1) // taken between the drain and its undo
	if s := state(); s != devops.WorkerUp {
		t.Fatalf("after a report older than the undo: %s, want UP", s)
	}
	r.Heartbeat("1", true, 3) // the worker drained itself since
	if s := state(); s != devops.WorkerDraining {
		t.Fatalf("after a newer report: %s, want DRAINING", s)
	}
	if w, _ := r.SetDraining("1", false, 2); w.State != devops.WorkerDraining {
		t.Fatalf("an undo answered before the newer report, read after it: %s, want DRAINING", w.State)
	}
	r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 1})
	r.Heartbeat("1", false, 0)
	if s := state(); s != devops.WorkerUp {
		t.Fatalf("a restarted worker's first report: %s, want UP", s)
	}
}

// TestHeartBeats checks that a Heart's beat is a heartbeat: it brings the
// worker UP (or DRAINING), holds off its timer, and counts for the worker
// that registered again with the same id after a removal, not for nobody.
func TestHeartBeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New(Config{Timeout: 10 * time.Second})
		defer r.Stop()
		// expect waits d, lets the timer act, and checks worker 1's state.
		expect := func(d time.Duration, want devops.WorkerState, when string) {
			t.Helper()
			time.Sleep(d)
			synctest.Wait()
			w, err := r.Get("1")
			if err != nil {
				t.Fatal(err)
			}
			if w.State != want {
				t.Fatalf("%s: %s, want %s", when, w.State, want)
			}
		}
		r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 1})
		if _, err := r.Heart("2"); !errors.Is(err, devops.ErrNotFound) {
			t.Errorf("Heart(2) = %v, want ErrNotFound", err)
		}
		h, err := r.Heart("1")
		if err != nil {
			t.Fatal(err)
		}
		h.Beat(false, 0)
		expect(0, devops.WorkerUp, "after a beat")
		expect(9*time.Second, devops.WorkerUp, "9s after the beat")
		h.Beat(true, 0)
		expect(0, devops.WorkerDraining, "after a draining beat")
		expect(9*time.Second, devops.WorkerDraining, "9s after the last beat (the beat holds off the timer)")
		expect(2*time.Second, devops.WorkerDown, "11s after the last beat")

		// Removed: a beat is ignored. Registered again: it counts.
		r.Remove("1")
		h.Beat(false, 0)
		if _, err := r.Get("1"); !errors.Is(err, devops.ErrNotFound) {
			t.Fatalf("a beat brought a removed worker back: %v", err)
		}
		r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 1})
		h.Beat(false, 0)
		expect(0, devops.WorkerUp, "a beat after registering again")
		expect(11*time.Second, devops.WorkerDown, "11s after that beat")
	})
}

// TestEachWorkerHasItsOwnDeadline checks that the one timer of all workers
// marks each DOWN at its own deadline, the timeout after it was last heard
// from, and not before: workers heard from a second apart, one of them
// again later, some draining, one marked down by hand and one removed.
func TestEachWorkerHasItsOwnDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex // protects downAt
		downAt := make(map[string]time.Duration)
		start := time.Now()
		r := New(Config{Timeout: 10 * time.Second, OnChange: func(w devops.Worker, old devops.WorkerState) {
			if w.State == devops.WorkerDown && old != devops.WorkerDown {
				mu.Lock()
				downAt[w.Name] = time.Since(start)
				mu.Unlock()
			}
		}})
		defer r.Stop()
		for i := range 6 {
			id := devops.WorkerID(fmt.Sprint(i))
			r.Register(devops.Worker{ID: id, Name: fmt.Sprint("w", i), Capacity: 1})
			r.Heartbeat(id, i%2 == 1, 0)
			time.Sleep(time.Second)
		}
		// At 6 s: w0 is heard from again, w4 is marked down, w5 leaves.
		r.Heartbeat("0", false, 0)
		r.MarkDown("4")
		r.Remove("5")
		time.Sleep(20 * time.Second)
		synctest.Wait()
		want := map[string]time.Duration{"w0": 16 * time.Second, "w1": 11 * time.Second, "w2": 12 * time.Second, "w3": 13 * time.Second, "w4": 6 * time.Second}
		mu.Lock()
		defer mu.Unlock()
		if len(downAt) != len(want) {
			t.Errorf("DOWN: %v, want %v", downAt, want)
		}
		for name, at := range want {
			if got, ok := downAt[name]; !ok || got != at {
				t.Errorf("%s DOWN at %v (%t), want at %v", name, got, ok, at)
			}
		}
	})
}

// BenchmarkHeartbeat is one heartbeat among 10,000 workers, each in turn,
// as their status streams bring them: by id (Heartbeat), and through the
// worker's Heart (Beat), as the manager's status stream does.
func BenchmarkHeartbeat(b *testing.B) {
	const n = 10000
	r := New(Config{Timeout: time.Hour})
	defer r.Stop()
	ids := make([]devops.WorkerID, n)
	hearts := make([]*Heart, n)
	for i := range ids {
		ids[i] = devops.WorkerID(fmt.Sprintf("%032x", i))
		r.Register(devops.Worker{ID: ids[i], Name: fmt.Sprint("w", i), Capacity: 1})
		hearts[i], _ = r.Heart(ids[i])
		r.Heartbeat(ids[i], false, 0)
	}
	b.Run("Heartbeat", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			r.Heartbeat(ids[i%n], false, 0)
		}
	})
	b.Run("Beat", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			hearts[i%n].Beat(false, 0)
		}
	})
}

// TestChangesAreToldInOrderWithoutTheCaller: OnChange is told every change
// in the order it was made, and whoever made it does not wait for it (a
// worker's status stream beats its heart; the listener persists and
// logs). Stop returns once everything made before it has been told.
func TestChangesAreToldInOrderWithoutTheCaller(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex // protects told
	var told []string
	r := New(Config{Timeout: time.Hour, OnChange: func(w devops.Worker, old devops.WorkerState) {
		<-release
		mu.Lock()
		told = append(told, fmt.Sprintf("%s %s>%s", w.Name, old, w.State))
		mu.Unlock()
	}})
	defer r.Stop()
	// Each call returns while OnChange waits for release.
	made := make(chan struct{})
	go func() {
		r.Register(devops.Worker{ID: "1", Name: "w1", Capacity: 1})
		r.Heartbeat("1", false, 0)
		r.Register(devops.Worker{ID: "2", Name: "w2", Capacity: 1})
		r.Heartbeat("2", false, 0)
		r.MarkDown("1")
		r.SetDraining("2", true, 1)
		r.Heartbeat("1", false, 0)
		close(made)
	}()
	select {
	case <-made:
		close(release)
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the changes waited for OnChange")
	}
	r.Stop()
	want := []string{
		"w1 DOWN>DOWN", "w1 DOWN>UP", "w2 DOWN>DOWN", "w2 DOWN>UP",
		"w1 UP>DOWN", "w2 UP>DRAINING", "w1 DOWN>UP",
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(told, want) {
		t.Errorf("told:\n%q\nwant:\n%q", told, want)
	}
}

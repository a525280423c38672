package registry

import (
	"errors"
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
		r.Heartbeat("1", false)
		time.Sleep(9 * time.Second)
		r.Heartbeat("1", false) // restarts the timer
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
	r.Heartbeat("1", false)
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
	r.Heartbeat("1", false)
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
	r.Heartbeat("1", false)
	if w, err := r.SetDraining("1", true); err != nil || w.State != devops.WorkerDraining {
		t.Fatalf("SetDraining = %v, %v", w.State, err)
	}
	pick := func(ws []devops.Worker) (devops.Worker, error) { return scheduler.Pick(ws, scheduler.Selector{}) }
	if _, err := r.Acquire(pick); !errors.Is(err, devops.ErrNoMatch) {
		t.Errorf("Acquire on a draining worker = %v, want ErrNoMatch", err)
	}
	if w, _ := r.SetDraining("1", false); w.State != devops.WorkerUp {
		t.Errorf("undo drain: %s, want UP", w.State)
	}
}

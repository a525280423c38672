package registry_test

import (
	"errors"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/registry"
	"github.com/devops-platform/devops/internal/scheduler"
)

func TestHistoryKeepsTheLatestSamples(t *testing.T) {
	r := registry.New(registry.Config{Timeout: time.Minute})
	defer r.Stop()
	if _, err := r.Register(devops.Worker{ID: "id1", Name: "w1", Capacity: 4}); err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1000, 0)
	n := registry.HistoryLen + 15
	for i := range n {
		r.SetMetrics("id1", devops.Metrics{Time: base.Add(time.Duration(i) * time.Second), Load1: float64(i)})
	}
	for _, key := range []string{"id1", "w1"} {
		h, err := r.History(key)
		if err != nil {
			t.Fatalf("History(%q): %v", key, err)
		}
		if len(h) != registry.HistoryLen {
			t.Fatalf("History(%q) has %d samples, want %d", key, len(h), registry.HistoryLen)
		}
		for i, m := range h {
			if want := float64(n - registry.HistoryLen + i); m.Load1 != want {
				t.Fatalf("History(%q)[%d].Load1 = %v, want %v (oldest first)", key, i, m.Load1, want)
			}
		}
	}
	w, _ := r.Get("w1")
	if w.Metrics.Load1 != float64(n-1) {
		t.Errorf("latest sample Load1 = %v, want %v", w.Metrics.Load1, n-1)
	}
	if _, err := r.History("nobody"); !errors.Is(err, devops.ErrNotFound) {
		t.Errorf("History(nobody) = %v, want ErrNotFound", err)
	}
}

// TestSchedulingUsesReportedLoad checks that the samples the registry keeps
// reach the scheduler: with equal slot use, the worker with the lower load
// per CPU is chosen; with unequal slot use, the freer worker wins first.
func TestSchedulingUsesReportedLoad(t *testing.T) {
	tests := []struct {
		name         string
		load1, load2 float64
		busy1, busy2 int // slots taken before the pick
		want         string
	}{
		{"lower load wins", 3.5, 0.5, 0, 0, "w2"},
		{"lower load wins, other way", 0.5, 3.5, 0, 0, "w1"},
		{"free slots before load", 0.1, 3.5, 2, 0, "w2"},
		{"equal: by name", 1, 1, 0, 0, "w1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := registry.New(registry.Config{Timeout: time.Minute})
			defer r.Stop()
			for i, name := range []string{"w1", "w2"} {
				id := devops.WorkerID("id-" + name)
				if _, err := r.Register(devops.Worker{ID: id, Name: name, Capacity: 4, Fingerprint: devops.Fingerprint{CPUs: 2}}); err != nil {
					t.Fatal(err)
				}
				r.Heartbeat(id, false)
				r.SetMetrics(id, devops.Metrics{Time: time.Now(), Load1: []float64{tt.load1, tt.load2}[i]})
				for range []int{tt.busy1, tt.busy2}[i] {
					r.Hold(id)
				}
			}
			w, err := r.Acquire(func(ws []devops.Worker) (devops.Worker, error) {
				return scheduler.Pick(ws, scheduler.Selector{})
			})
			if err != nil {
				t.Fatal(err)
			}
			if w.Name != tt.want {
				t.Errorf("picked %s, want %s", w.Name, tt.want)
			}
		})
	}
}

package registry_test

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/registry"
	"github.com/devops-platform/devops/internal/scheduler"
)

func TestHistoryKeepsTheLatestSamples(t *testing.T) {
	base := time.Unix(1000, 0)
	for _, n := range []int{0, 1, registry.HistoryLen - 1, registry.HistoryLen, registry.HistoryLen + 15, 3*registry.HistoryLen + 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := registry.New(registry.Config{Timeout: time.Minute})
			defer r.Stop()
			if _, err := r.Register(devops.Worker{ID: "id1", Name: "w1", Capacity: 4}); err != nil {
				t.Fatal(err)
			}
			for i := range n {
				r.SetMetrics("id1", devops.Metrics{Time: base.Add(time.Duration(i) * time.Second), Load1: float64(i)})
			}
			want := min(n, registry.HistoryLen)
			for _, key := range []string{"id1", "w1"} {
				h, err := r.History(key)
				if err != nil {
					t.Fatalf("History(%q): %v", key, err)
				}
				if len(h) != want {
					t.Fatalf("History(%q) has %d samples, want %d", key, len(h), want)
				}
				for i, m := range h {
					j := n - want + i
					if m.Load1 != float64(j) || !m.Time.Equal(base.Add(time.Duration(j)*time.Second)) {
						t.Fatalf("History(%q)[%d] = Load1 %v at %v, want %v at %v (oldest first)", key, i, m.Load1, m.Time, j, base.Add(time.Duration(j)*time.Second))
					}
				}
			}
			if n > 0 {
				w, _ := r.Get("w1")
				if w.Metrics.Load1 != float64(n-1) {
					t.Errorf("latest sample Load1 = %v, want %v", w.Metrics.Load1, n-1)
				}
			}
		})
	}
	r := registry.New(registry.Config{Timeout: time.Minute})
	defer r.Stop()
	if _, err := r.History("nobody"); !errors.Is(err, devops.ErrNotFound) {
		t.Errorf("History(nobody) = %v, want ErrNotFound", err)
	}
}

// TestHistoryKeepsEachField checks what a sample gives back: each field,
// to the precision the history keeps (float32, whole seconds of uptime),
// and the worker's latest version.
func TestHistoryKeepsEachField(t *testing.T) {
	at := time.Date(2026, 12, 2, 0, 1, 2, 345678901, time.UTC)
	tests := []struct {
		name string
		in   devops.Metrics
		want devops.Metrics // the same as in if zero
	}{
		{name: "a busy worker", in: devops.Metrics{
			Time: at, CPUPercent: 87.25, Load1: 3.5, Load5: 2.75, Load15: 1.125,
			MemoryUsedBytes: 3 << 30, MemoryTotalBytes: 64 << 30, DiskUsedBytes: 700 << 30, DiskFreeBytes: 12 << 40,
			Running: 12, FreeSlots: 4, Uptime: 49 * 24 * time.Hour, Version: "v1.2.3",
		}},
		{name: "zero", in: devops.Metrics{Version: "v1"}},
		{name: "the time in another zone comes back in UTC", in: devops.Metrics{Time: at.In(time.FixedZone("x", 3600)), Version: "v1"}, want: devops.Metrics{Time: at, Version: "v1"}},
		{name: "uptime in whole seconds", in: devops.Metrics{Uptime: 1500 * time.Millisecond, Version: "v1"}, want: devops.Metrics{Uptime: time.Second, Version: "v1"}},
		{name: "slots within 0..65535", in: devops.Metrics{Running: 70000, FreeSlots: -2, Version: "v1"}, want: devops.Metrics{Running: 65535, FreeSlots: 0, Version: "v1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := registry.New(registry.Config{Timeout: time.Minute})
			defer r.Stop()
			if _, err := r.Register(devops.Worker{ID: "id1", Name: "w1", Capacity: 4}); err != nil {
				t.Fatal(err)
			}
			r.SetMetrics("id1", tt.in)
			h, err := r.History("w1")
			if err != nil || len(h) != 1 {
				t.Fatalf("History(w1) = %v, %v; want one sample", h, err)
			}
			want := tt.want
			if want == (devops.Metrics{}) {
				want = tt.in
			}
			if got := h[0]; got != want || got.Time.Location() != time.UTC && !got.Time.IsZero() {
				t.Errorf("History(w1)[0] = %+v, want %+v", got, want)
			}
		})
	}
}

// TestHistoryIsApproximate checks the precision a sample keeps of values
// float32 cannot hold exactly: within 1 in 16 million.
func TestHistoryIsApproximate(t *testing.T) {
	r := registry.New(registry.Config{Timeout: time.Minute})
	defer r.Stop()
	if _, err := r.Register(devops.Worker{ID: "id1", Name: "w1", Capacity: 4}); err != nil {
		t.Fatal(err)
	}
	in := devops.Metrics{CPUPercent: 12.3456789, Load1: 0.01, MemoryUsedBytes: 123456789123, DiskFreeBytes: 1<<44 + 12345}
	r.SetMetrics("id1", in)
	h, _ := r.History("id1")
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > want/(1<<24) {
			t.Errorf("%s = %v, want %v within 1 in 2^24", name, got, want)
		}
	}
	near("CPUPercent", h[0].CPUPercent, in.CPUPercent)
	near("Load1", h[0].Load1, in.Load1)
	near("MemoryUsedBytes", float64(h[0].MemoryUsedBytes), float64(in.MemoryUsedBytes))
	near("DiskFreeBytes", float64(h[0].DiskFreeBytes), float64(in.DiskFreeBytes))
}

// TestHistorySaysTheLatestVersion checks that every sample says the
// version of the worker's latest one: samples keep none of their own.
func TestHistorySaysTheLatestVersion(t *testing.T) {
	r := registry.New(registry.Config{Timeout: time.Minute})
	defer r.Stop()
	if _, err := r.Register(devops.Worker{ID: "id1", Name: "w1", Capacity: 4}); err != nil {
		t.Fatal(err)
	}
	r.SetMetrics("id1", devops.Metrics{Load1: 1, Version: "v1"})
	r.SetMetrics("id1", devops.Metrics{Load1: 2, Version: "v2"})
	h, _ := r.History("id1")
	for i, m := range h {
		if m.Version != "v2" {
			t.Errorf("History(id1)[%d].Version = %q, want v2", i, m.Version)
		}
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
				r.Heartbeat(id, false, 0)
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

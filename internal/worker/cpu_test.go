package worker

import (
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

func TestBusyPercent(t *testing.T) {
	a := procfs.CPUStat{User: 10, System: 5, Idle: 80, Iowait: 5}
	for _, tc := range []struct {
		name string
		b    procfs.CPUStat
		want float64
		ok   bool
	}{
		{"half busy", procfs.CPUStat{User: 13, System: 7, Idle: 84, Iowait: 6}, 50, true},
		{"all idle", procfs.CPUStat{User: 10, System: 5, Idle: 90, Iowait: 5}, 0, true},
		{"steal and irq count as busy", procfs.CPUStat{User: 10, System: 5, Idle: 80, Iowait: 5, Steal: 1, IRQ: 1}, 100, true},
		{"no time passed", a, 0, false},
	} {
		got, ok := busyPercent(a, tc.b)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %v %v, want %v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// TestCPUMeterReadsHost: on the machine itself, a figure within 0-100
// once the clock /proc/stat counts in has moved.
func TestCPUMeterReadsHost(t *testing.T) {
	c := newCPUMeter()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pct, ok := c.percent()
		if ok {
			if pct < 0 || pct > 100 {
				t.Errorf("percent %v", pct)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no figure from /proc/stat within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

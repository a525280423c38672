package worker

import (
	"testing"

	"github.com/devops-platform/devops"
)

func TestMetricsSenderSendsChangesAndARefresh(t *testing.T) {
	idle := devops.Metrics{CPUPercent: 1, Load1: 0.05, MemoryUsedBytes: 1000, MemoryTotalBytes: 10000, DiskUsedBytes: 500, DiskFreeBytes: 9500, FreeSlots: 4}
	with := func(f func(*devops.Metrics)) devops.Metrics {
		m := idle
		f(&m)
		return m
	}
	tests := []struct {
		name string
		next devops.Metrics // the sample after the first, idle one
		want bool
	}{
		{"same", idle, false},
		{"small CPU move", with(func(m *devops.Metrics) { m.CPUPercent = 5.9 }), false},
		{"CPU by 5 points", with(func(m *devops.Metrics) { m.CPUPercent = 6 }), true},
		{"small load move", with(func(m *devops.Metrics) { m.Load1 = 0.4 }), false},
		{"load by a tenth of a CPU", with(func(m *devops.Metrics) { m.Load1 = 0.5 }), true},
		{"a slot taken", with(func(m *devops.Metrics) { m.Running, m.FreeSlots = 1, 3 }), true},
		{"memory by less than 1%", with(func(m *devops.Metrics) { m.MemoryUsedBytes = 1099 }), false},
		{"memory by 1%", with(func(m *devops.Metrics) { m.MemoryUsedBytes = 900 }), true},
		{"disk by 1%", with(func(m *devops.Metrics) { m.DiskFreeBytes, m.DiskUsedBytes = 9400, 600 }), true},
		{"uptime only", with(func(m *devops.Metrics) { m.Uptime = 1e12 }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := metricsSender{cpus: 4}
			if !f.due(idle) {
				t.Fatal("due(first sample) = false, want true")
			}
			if got := f.due(tt.next); got != tt.want {
				t.Errorf("due(%+v) after %+v = %v, want %v", tt.next, idle, got, tt.want)
			}
		})
	}
}

func TestMetricsSenderRefreshesAnIdleWorker(t *testing.T) {
	f := metricsSender{cpus: 1}
	var sent []int
	for i := range 3*metricsRefresh + 1 {
		if f.due(devops.Metrics{FreeSlots: 1}) {
			sent = append(sent, i)
		}
	}
	want := []int{0, metricsRefresh, 2 * metricsRefresh, 3 * metricsRefresh}
	if len(sent) != len(want) {
		t.Fatalf("samples sent = %v, want %v", sent, want)
	}
	for i := range want {
		if sent[i] != want[i] {
			t.Fatalf("samples sent = %v, want %v", sent, want)
		}
	}
}

func TestMetricsSenderComparesWithTheLastSent(t *testing.T) {
	// Creeping by less than the threshold each time still goes out once the
	// sum since the last sample sent crosses it.
	f := metricsSender{cpus: 1}
	var sent []int
	for i := range 5 {
		if f.due(devops.Metrics{CPUPercent: float64(2 * i)}) {
			sent = append(sent, i)
		}
	}
	if len(sent) != 2 || sent[0] != 0 || sent[1] != 3 {
		t.Errorf("samples sent = %v, want [0 3] (CPU 0, then 6 points later)", sent)
	}
}

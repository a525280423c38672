package worker

import (
	"testing"
	"time"
)

// TestNextReportKeepsTheIntervalOnAGrid: a report is due about an interval
// after the last one, never more than half a grid step off, and workers
// that last reported at different moments share the grid's instants.
func TestNextReportKeepsTheIntervalOnAGrid(t *testing.T) {
	base := time.Date(2026, 12, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		interval, grid time.Duration
	}{
		{5 * time.Second, 100 * time.Millisecond},
		{time.Second, 50 * time.Millisecond},
		{50 * time.Millisecond, 2500 * time.Microsecond},
	} {
		var first time.Time
		for i := range 1000 {
			now := base.Add(time.Duration(i) * 7919 * time.Microsecond)
			next := NextReport(now, tt.interval)
			if d := next.Sub(now) - tt.interval; d < -tt.grid/2 || d > tt.grid/2 {
				t.Fatalf("NextReport(%v, %v) = %v after, want %v ± %v", now, tt.interval, next.Sub(now), tt.interval, tt.grid/2)
			}
			if first.IsZero() {
				first = next
			}
			if next.Sub(first)%tt.grid != 0 {
				t.Fatalf("NextReport(%v, %v) = %v, not on the grid of %v through %v", now, tt.interval, next, tt.grid, first)
			}
		}
	}
}

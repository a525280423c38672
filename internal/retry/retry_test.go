package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoffStaysWithinBounds(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	step := 10 * time.Millisecond
	for i := range 10 {
		d := b.Next()
		if d < step/2 || d > step {
			t.Fatalf("Next() #%d = %v, want between %v and %v", i, d, step/2, step)
		}
		step = min(step*2, 80*time.Millisecond)
	}
	b.Reset()
	if d := b.Next(); d > 10*time.Millisecond {
		t.Fatalf("after Reset, Next() = %v, want at most 10ms", d)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Sleep(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep on a cancelled context = %v, want context.Canceled", err)
	}
	if err := Sleep(t.Context(), time.Millisecond); err != nil {
		t.Fatalf("Sleep(1ms) = %v, want nil", err)
	}
}

package heaptrim

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestIdle(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name string
		live uint64
		rate float64 // bytes a second
		want bool
	}{
		{"nothing allocated", 300 * mib, 0, true},
		{"10,000 idle workers", 300 * mib, 0.45 * mib, true},
		{"just under half the live heap in two minutes", 240 * mib, 0.99 * mib, true},
		{"just over", 240 * mib, 1.01 * mib, false},
		{"relaying output", 300 * mib, 150 * mib, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Idle(tt.live, tt.rate); got != tt.want {
				t.Errorf("Idle(%d, %.0f) = %v, want %v", tt.live, tt.rate, got, tt.want)
			}
		})
	}
}

// logBuffer is a log destination the test reads while Run writes.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// garbage allocates n bytes that are dropped at once, in no time at all on
// a bubble's clock.
func garbage(n int) {
	for range n >> 20 {
		b := make([]byte, 1<<20)
		b[0] = 1
		runtime.KeepAlive(b)
	}
}

// spell runs Run in a bubble over a heap holding live bytes: a busy spell
// (garbage of twice the live heap within one look), then twenty idle looks.
// It returns what Run logged.
func spell(t *testing.T, live int) string {
	t.Helper()
	var logs logBuffer
	synctest.Test(t, func(t *testing.T) {
		held := make([]byte, live)
		for i := 0; i < len(held); i += 4096 {
			held[i] = 1 // backed, as a real heap is
		}
		runtime.GC() // the collector must have found it live

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(ctx, time.Second, slog.New(slog.NewTextHandler(&logs, nil)))
		}()
		time.Sleep(time.Second / 2)
		garbage(2 * live)            // busy
		time.Sleep(20 * time.Second) // idle
		cancel()
		<-done
		runtime.KeepAlive(held)
	})
	return logs.String()
}

// TestRunTrimsALargeHeapAfterABusySpell: a heap of MinLive and more that a
// busy spell grew is trimmed once, at an idle look after it.
func TestRunTrimsALargeHeapAfterABusySpell(t *testing.T) {
	logs := spell(t, MinLive+8<<20)
	if n := strings.Count(logs, "returned heap memory"); n != 1 {
		t.Fatalf("trims = %d, want 1; logs:\n%s", n, logs)
	}
}

// TestRunLeavesASmallHeap: under MinLive a trim is not worth its collection.
func TestRunLeavesASmallHeap(t *testing.T) {
	if logs := spell(t, 8<<20); logs != "" {
		t.Fatalf("a small heap was trimmed; logs:\n%s", logs)
	}
}

// TestRunWaitsForTheBusySpellToEnd: no trim while the process is busy, nor
// when it never was.
func TestRunWaitsForTheBusySpellToEnd(t *testing.T) {
	var logs logBuffer
	synctest.Test(t, func(t *testing.T) {
		held := make([]byte, MinLive+8<<20)
		for i := 0; i < len(held); i += 4096 {
			held[i] = 1
		}
		runtime.GC()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(ctx, time.Second, slog.New(slog.NewTextHandler(&logs, nil)))
		}()
		time.Sleep(10 * time.Second) // idle, never busy: nothing to give back
		for range 10 {               // busy at every look
			garbage(2 * len(held))
			time.Sleep(time.Second)
		}
		if logs.String() != "" {
			t.Errorf("trimmed while busy or never busy; logs:\n%s", logs.String())
		}
		cancel()
		<-done
		runtime.KeepAlive(held)
	})
}

package heaptrim

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestWorth(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name             string
		live, held, kept uint64
		rate             float64 // bytes a second
		want             bool
	}{
		{"10,000 workers just joined", 240 * mib, 420 * mib, 0, 0.45 * mib, true},
		{"the same after a trim at 5,000", 240 * mib, 420 * mib, 46 * mib, 0.45 * mib, true},
		{"small", 32 * mib, 128 * mib, 0, 0, false},
		{"just under the size", MinLive - 1, 4 * MinLive, 0, 0, false},
		{"held what is live and what comes by the next forced collection", 240 * mib, 300 * mib, 0, 0.5 * mib, false},
		{"a quarter more than that", 240 * mib, 361 * mib, 0, 0.5 * mib, true},
		{"what the last trim could not give back", 120 * mib, 187 * mib, 64 * mib, 0, false},
		{"scraped: garbage that fills it again", 240 * mib, 420 * mib, 0, 1 * mib, false},
		{"relaying output", 240 * mib, 480 * mib, 0, 150 * mib, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Worth(tt.live, tt.held, tt.kept, tt.rate); got != tt.want {
				t.Errorf("Worth(%d, %d, %d, %.0f) = %v, want %v", tt.live, tt.held, tt.kept, tt.rate, got, tt.want)
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

// runOver makes a live heap of n bytes and starts Run over it, looking
// every second, in the caller's bubble, and returns once Run waits for its
// first look; stop ends Run, and the heap stays live until then.
func runOver(t *testing.T, n int, logs *logBuffer) (stop func()) {
	t.Helper()
	held := make([]byte, n)
	for i := 0; i < len(held); i += 4096 {
		held[i] = 1 // backed, as a real heap is
	}
	// The collector must have found it live, and what earlier tests left
	// must be gone.
	debug.FreeOSMemory()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, time.Second, slog.New(slog.NewTextHandler(logs, nil)))
	}()
	// Run has taken its first reading before the caller makes garbage:
	// else that garbage would count as made before Run started, and the
	// first look, seeing none since, could trim (a flake under -count=2,
	// where the tests before left a larger heap).
	synctest.Wait()
	return func() {
		cancel()
		<-done
		runtime.KeepAlive(held)
	}
}

// spell runs Run over a heap holding live bytes: a busy spell (garbage of
// twice the live heap within one look), then two quiet minutes. It returns
// what Run logged.
func spell(t *testing.T, live int) string {
	t.Helper()
	var logs logBuffer
	synctest.Test(t, func(t *testing.T) {
		stop := runOver(t, live, &logs)
		time.Sleep(time.Second / 2)
		garbage(2 * live)
		time.Sleep(2 * time.Minute) // quiet: the spell leaves the last minute
		stop()
	})
	return logs.String()
}

// TestRunTrimsALargeHeapAfterABusySpell: a heap of MinLive and more that a
// busy spell grew is trimmed once, at a quiet look after it.
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

// TestRunWaitsForTheBusySpellToEnd: no trim while garbage comes fast, nor
// while the heap holds only what is live.
func TestRunWaitsForTheBusySpellToEnd(t *testing.T) {
	var logs logBuffer
	synctest.Test(t, func(t *testing.T) {
		live := MinLive + 8<<20
		stop := runOver(t, live, &logs)
		time.Sleep(10 * time.Second) // quiet, holding what is live
		for range 10 {               // busy at every look
			garbage(2 * live)
			time.Sleep(time.Second)
		}
		stop()
	})
	if logs.String() != "" {
		t.Errorf("trimmed while busy, or a heap holding what is live; logs:\n%s", logs.String())
	}
}

// TestRunLeavesAHeapThatScrapesFill: garbage that comes every 15 s (a
// Prometheus scrape) fills the heap again; looks between two scrapes must
// not take it for a heap a burst left.
func TestRunLeavesAHeapThatScrapesFill(t *testing.T) {
	var logs logBuffer
	synctest.Test(t, func(t *testing.T) {
		live := MinLive + 8<<20
		stop := runOver(t, live, &logs)
		for range 16 { // four minutes
			garbage(live / 2)
			// A collection, as the runtime makes one in the real seconds
			// between two scrapes. In the bubble those take no time:
			// garbage left unswept from scrape to scrape made the runtime
			// map new pages, the heap held over four times what is live
			// now and then, and the test flaked. What the scrape left
			// stays held, as free pages.
			runtime.GC()
			time.Sleep(15 * time.Second)
		}
		stop()
	})
	if logs.String() != "" {
		t.Errorf("trimmed a heap that scrapes fill; logs:\n%s", logs.String())
	}
}

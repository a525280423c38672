package executor

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// TestTakeDelaysRefill: a take that leaves a warm shim in the pool has it
// refilled after refillDelay; a take that empties it, at once.
func TestTakeDelaysRefill(t *testing.T) {
	var mu sync.Mutex
	var files []*os.File
	var later []time.Duration
	starts := make(chan struct{}, 8)
	start := func(context.Context) (*warmShim, error) {
		r, w, err := os.Pipe() // never readable: the fake shim has not exited
		if err != nil {
			return nil, err
		}
		mu.Lock()
		files = append(files, r, w)
		mu.Unlock()
		starts <- struct{}{}
		return &warmShim{pidfd: int(r.Fd())}, nil
	}
	p := newPool(2, start, nil, slog.New(slog.DiscardHandler))
	var delayed func()
	p.later = func(d time.Duration, f func()) {
		mu.Lock()
		defer mu.Unlock()
		later, delayed = append(later, d), f
	}
	t.Cleanup(func() {
		p.cancel()
		<-p.done
		for _, f := range files {
			f.Close()
		}
	})
	waitStarts := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-starts:
			case <-time.After(10 * time.Second):
				t.Fatalf("refill started no shim within 10s")
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for p.missing() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("pool lacks %d shims 10s after their start", p.missing())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitStarts(2)

	if p.take(t.Context()) == nil {
		t.Fatal("take from a full pool = nil")
	}
	mu.Lock()
	if len(later) != 1 || later[0] != refillDelay {
		t.Errorf("a take leaving one shim scheduled %v, want one kick after %v", later, refillDelay)
	}
	mu.Unlock()
	if len(starts) != 0 {
		t.Errorf("a take leaving one shim started a refill at once")
	}

	if p.take(t.Context()) == nil {
		t.Fatal("take of the last shim = nil")
	}
	waitStarts(2) // at once: the pool was empty
	mu.Lock()
	if len(later) != 1 {
		t.Errorf("a take emptying the pool scheduled a delayed kick too: %v", later)
	}
	f := delayed
	mu.Unlock()
	f() // the first take's kick, late: nothing is missing
	if p.take(t.Context()) == nil {
		t.Fatal("take from a refilled pool = nil")
	}
	mu.Lock()
	if len(later) != 2 {
		t.Errorf("after the delayed kick ran, a take scheduled %d kicks in all, want 2", len(later))
	}
	mu.Unlock()
}

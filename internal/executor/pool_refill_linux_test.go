package executor

import (
	"context"
	"errors"
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

	if ws, _, _ := p.take(t.Context()); ws == nil {
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

	if ws, _, _ := p.take(t.Context()); ws == nil {
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
	if ws, _, _ := p.take(t.Context()); ws == nil {
		t.Fatal("take from a refilled pool = nil")
	}
	mu.Lock()
	if len(later) != 2 {
		t.Errorf("after the delayed kick ran, a take scheduled %d kicks in all, want 2", len(later))
	}
	mu.Unlock()
}

// stuckPool is a pool of size whose refill never gets a shim: it stays
// empty unless shims come back.
func stuckPool(t *testing.T, size int) *pool {
	start := func(ctx context.Context) (*warmShim, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	rewarm := func(context.Context, *warmShim) error { return nil }
	p := newPool(size, start, rewarm, slog.New(slog.DiscardHandler))
	p.later = func(time.Duration, func()) {}
	t.Cleanup(func() {
		p.cancel()
		<-p.done
	})
	return p
}

// fakeShim is a shim that has not exited (its "pidfd" never gets readable).
func fakeShim(t *testing.T) *warmShim {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return &warmShim{pidfd: int(r.Fd())}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTakeLimitsColdStarts: with coldMax cold starts under way, a take
// waits until one of them ends, then starts cold itself.
func TestTakeLimitsColdStarts(t *testing.T) {
	p := stuckPool(t, 1)
	p.coldMax = 1
	ws, ended, err := p.take(t.Context())
	if ws != nil || ended == nil || err != nil {
		t.Fatalf("first take from an empty pool = %v, %v, %v; want a cold start", ws, ended != nil, err)
	}
	type taken struct {
		ended func()
		err   error
	}
	second := make(chan taken, 1)
	go func() {
		_, e, err := p.take(t.Context())
		second <- taken{e, err}
	}()
	waitFor(t, "waiting", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.waiting == 1
	})
	select {
	case <-second:
		t.Fatal("a second cold start began while the first was under way")
	default:
	}
	ended()
	select {
	case got := <-second:
		if got.err != nil || got.ended == nil {
			t.Fatalf("second take after the first cold start ended = %v, %v; want a cold start", got.ended != nil, got.err)
		}
		got.ended()
	case <-time.After(10 * time.Second):
		t.Fatal("the second take still waits 10s after the first cold start ended")
	}

	// A take that waits gives up with its context.
	ws, ended, err = p.take(t.Context())
	if ws != nil || err != nil {
		t.Fatalf("take = %v, %v; want a cold start", ws, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := p.take(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("take with an ended context and no cold start allowed: err = %v, want context.Canceled", err)
	}
	ended()
}

// TestTakeWaitingBringsShimsBack: while a take waits, a shim whose process
// ended comes back even though the pool has one on its way already, and
// the take gets it.
func TestTakeWaitingBringsShimsBack(t *testing.T) {
	p := stuckPool(t, 1)
	p.coldMax = 1
	_, ended, _ := p.take(t.Context())
	if !p.reserve() {
		t.Fatal("reserve for an empty pool = false")
	}
	if p.reserve() {
		t.Fatal("reserve past the pool's size with no take waiting = true")
	}
	got := make(chan *warmShim, 1)
	go func() {
		ws, _, _ := p.take(t.Context())
		got <- ws
	}()
	waitFor(t, "waiting", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.waiting == 1
	})
	if !p.reserve() {
		t.Fatal("reserve past the pool's size with a take waiting = false")
	}
	first, second := fakeShim(t), fakeShim(t)
	p.recycle(first, true)
	p.recycle(second, true)
	select {
	case ws := <-got:
		if ws != first && ws != second {
			t.Fatalf("the waiting take got %v, want a shim that came back", ws)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting take got nothing 10s after two shims came back")
	}
	ended()
	if n := p.idleCount(); n != 1 {
		t.Errorf("%d shims idle after the take, want 1", n)
	}
}

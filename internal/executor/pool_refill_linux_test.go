package executor

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestTakeDelaysRefill: a shim taken counts as coming back for
// refillDelay: the pool is refilled for it only if it has not come back by
// then, even when the take emptied the pool.
func TestTakeDelaysRefill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var starts atomic.Int32
		start := func(context.Context) (*warmShim, error) {
			starts.Add(1)
			return fakeShim(t), nil
		}
		rewarm := func(context.Context, *warmShim) error { return nil }
		p := newPool(2, start, rewarm, slog.New(slog.DiscardHandler))
		t.Cleanup(func() {
			p.cancel()
			<-p.done
		})
		synctest.Wait()
		if n := starts.Load(); n != 2 || p.idleCount() != 2 {
			t.Fatalf("a new pool of 2 started %d shims, %d idle", n, p.idleCount())
		}
		taken := func() *warmShim {
			t.Helper()
			ws, _, _ := p.take(t.Context())
			if ws == nil {
				t.Fatal("take from a pool with shims = nil")
			}
			return ws
		}
		later := func(what string, want int32) {
			t.Helper()
			synctest.Wait()
			if n := starts.Load() - 2; n != want {
				t.Errorf("%s: refill started %d shims, want %d", what, n, want)
			}
		}
		// Commands in a row: each shim comes back before the next take.
		a := taken()
		time.Sleep(refillDelay / 25)
		p.recycle(a, p.reserve(a))
		time.Sleep(refillDelay - 2*refillDelay/25)
		taken() // b, the other shim, taken just before a's kick
		time.Sleep(2 * refillDelay / 25)
		later("a's kick, with b taken just before", 0)
		// b's command runs on past refillDelay: it is replaced.
		time.Sleep(refillDelay)
		later("b's kick, b still out", 1)
		if n := p.idleCount(); n != 2 {
			t.Errorf("%d shims idle, want 2 (a and b's replacement)", n)
		}
		// Both taken at once: the pool is empty, and refilled only for
		// the shim still out after refillDelay.
		c := taken()
		taken()
		later("a take emptied the pool", 1)
		time.Sleep(refillDelay / 2)
		p.recycle(c, p.reserve(c))
		time.Sleep(refillDelay)
		later("after refillDelay, one of the two back", 2)
	})
}

// TestTakeWaitsWhileShimsComeBack: a take that finds the pool empty, with
// as many shims taken recently as the machine has cores, waits while shims
// keep coming back (for other takes), until returnWait passed since the
// last one, or returnWaitMax since it began; then it starts cold. With a
// core to spare it starts cold at once.
func TestTakeWaitsWhileShimsComeBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := stuckPool(t, 1) // its taken shims never stop counting as coming back
		p.coldMax = 2        // two cores
		p.recycle(fakeShim(t), p.reserve(nil))
		if ws, _, _ := p.take(t.Context()); ws == nil {
			t.Fatal("take from a pool of one = nil")
		}
		begun := time.Now()
		ws, ended, err := p.take(t.Context())
		if ws != nil || ended == nil || err != nil || time.Since(begun) != 0 {
			t.Fatalf("take with one shim out and a core to spare = %v, %v, %v after %v; want a cold start at once", ws, ended != nil, err, time.Since(begun))
		}
		ended()
		p.coldMax = 1 // one core, busy with the shim taken
		// Another take came and went meanwhile: what waiting sees of it.
		cameBack := func() {
			p.mu.Lock()
			p.lastBack = time.Now()
			p.mu.Unlock()
		}
		// wait has a take wait for a shim while shims come back back times,
		// returnWait*9/10 apart, and returns how long it waited.
		wait := func(back int) time.Duration {
			begun := time.Now()
			got := make(chan time.Duration, 1)
			go func() {
				ws, ended, err := p.take(t.Context())
				if ws != nil || err != nil {
					t.Errorf("take = %v, %v; want a cold start", ws, err)
				}
				got <- time.Since(begun)
				if ended != nil {
					ended()
				}
			}()
			for range back {
				time.Sleep(returnWait * 9 / 10)
				cameBack()
			}
			return <-got
		}
		if d, want := wait(2), 2*returnWait*9/10+returnWait; d != want {
			t.Errorf("a take with shims coming back twice, then none, started cold after %v, want %v", d, want)
		}
		if d := wait(20); d != returnWaitMax {
			t.Errorf("a take with shims coming back all the time started cold after %v, want returnWaitMax (%v)", d, returnWaitMax)
		}
	})
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
		return len(p.queue) == 1
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
	if !p.reserve(nil) {
		t.Fatal("reserve for an empty pool = false")
	}
	if p.reserve(nil) {
		t.Fatal("reserve past the pool's size with no take waiting = true")
	}
	p.gone(false) // that shim ends
	got := make(chan *warmShim, 1)
	go func() {
		ws, _, _ := p.take(t.Context())
		got <- ws
	}()
	waitFor(t, "waiting", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue) == 1
	})
	if !p.reserve(nil) {
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

// TestTakesServedInOrder: shims that come back go to the takes waiting in
// the order they began to wait.
func TestTakesServedInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := stuckPool(t, 1) // its taken shims never stop counting as coming back
		p.coldMax = 1
		p.recycle(fakeShim(t), p.reserve(nil))
		if ws, _, _ := p.take(t.Context()); ws == nil {
			t.Fatal("take from a pool of one = nil")
		}
		const takes = 5
		got := make(chan int, takes)
		for i := range takes {
			go func() {
				if ws, _, _ := p.take(t.Context()); ws != nil {
					got <- i
				}
			}()
			synctest.Wait() // waiting, after the ones before
		}
		for want := range takes {
			time.Sleep(returnWait / 2)
			p.recycle(fakeShim(t), p.reserve(nil))
			synctest.Wait()
			select {
			case i := <-got:
				if i != want {
					t.Fatalf("shim %d that came back went to take %d, want %d", want, i, want)
				}
			default:
				t.Fatalf("shim %d that came back went to no take", want)
			}
		}
	})
}

// TestCloseWaitsForShimsOnTheirWayOut: a shim whose process ended counts
// from reserve until it is back in the pool or gone, also when the pool
// does not take it back: close returns only after. A test that closed the
// executor once its process had ended found the shim, and its init, still
// running.
func TestCloseWaitsForShimsOnTheirWayOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := stuckPool(t, 0)
		if p.reserve(nil) {
			t.Fatal("reserve for a pool of none = true")
		}
		closed := make(chan struct{})
		go func() {
			p.close()
			close(closed)
		}()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("close returned with a shim on its way out")
		default:
		}
		p.gone(false)
		synctest.Wait()
		select {
		case <-closed:
		default:
			t.Fatal("close did not return once the shim was gone")
		}
	})
}

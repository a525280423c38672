// Package heaptrim gives back to the operating system the memory a burst of
// work grew a large Go heap to, once the burst is over: a manager that
// thousands of workers just joined. It imports only the standard library.
//
// The runtime keeps the pages a heap grew to and returns them only slowly
// and only above about twice what is live (its goal at the default GOGC).
// After 10,000 workers joined, the manager's heap held ~420 MB for ~240 MB
// live and gave back ~40 MB of it over the next four minutes
// (bench/FINDINGS.md). Idle, the manager makes too little garbage to need
// that room before the runtime's forced collection every two minutes. A
// lower GOGC was measured and not taken: it barely lowered what the joins
// grew to and costs CPU whenever output is relayed.
package heaptrim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// MinLive is the smallest live heap (stacks and globals counted) worth
	// a trim: a trim costs a full collection, and below it there is little
	// to give back.
	MinLive = 64 << 20
	// forced is how often the runtime collects when nothing else makes it
	// (forcegcperiod in runtime/proc.go). A process is idle while its
	// garbage over that long stays under half what is live.
	forced = 2 * time.Minute
	// spacing is how many times as long as a trim took must pass before
	// the next one: trims take at most 1% of the process's time, however
	// often busy and idle spells alternate.
	spacing = 100
)

// Idle reports whether a process whose collector last found live bytes, and
// which allocates rate bytes a second, is idle: it makes less than half its
// live heap of garbage between two forced collections.
func Idle(live uint64, rate float64) bool {
	return rate*forced.Seconds() < float64(live)/2
}

// Run looks at the heap every interval until ctx ends. After a busy spell,
// at the first idle look, a heap of at least MinLive that holds more than a
// quarter more than is live is trimmed: one full collection, and what is
// free goes back to the operating system (debug.FreeOSMemory). After a trim
// the next waits a hundred times as long as it took. log may be nil.
func Run(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"}, // free and not yet released
	}
	// live is what the collector scans (what GOGC's room is counted on);
	// heapLive and held are the heap's own live bytes and what it holds.
	read := func() (live, heapLive, allocs, held uint64) {
		metrics.Read(s)
		v := func(i int) uint64 { return s[i].Value.Uint64() }
		return v(0) + v(1) + v(2), v(0), v(3), v(4) + v(5) + v(6)
	}
	_, _, last, _ := read()
	lastAt := time.Now()
	var busy bool           // a look since the last trim found the process busy
	var notBefore time.Time // the next trim's earliest time
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			live, heapLive, allocs, held := read()
			rate := float64(allocs-last) / now.Sub(lastAt).Seconds()
			last, lastAt = allocs, now
			if !Idle(live, rate) {
				busy = true
				continue
			}
			if !busy || live < MinLive || held < heapLive+heapLive/4 || now.Before(notBefore) {
				continue
			}
			debug.FreeOSMemory()
			took := time.Since(now)
			var after uint64
			_, _, last, after = read() // the collection's own allocations are not the process's
			lastAt = time.Now()
			busy, notBefore = false, lastAt.Add(spacing*took)
			log.Info("returned heap memory to the OS after a busy spell",
				"held_bytes", held, "live_bytes", heapLive, "held_after_bytes", after, "took", took)
		}
	}
}

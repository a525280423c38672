// Package heaptrim gives back to the operating system the memory a burst of
// work grew a large Go heap to, once the burst is over: a manager that
// thousands of workers just joined. It imports only the standard library.
//
// The runtime keeps the pages a heap grew to, and returns them only slowly
// and only above about its goal, twice what is live at the default GOGC.
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
	// MinLive is the smallest live heap worth a trim: a trim costs a full
	// collection, and below it there is little to give back.
	MinLive = 64 << 20
	// forced is how often the runtime collects when nothing else makes it
	// (forcegcperiod in runtime/proc.go): a heap holds at most what is
	// live and what is allocated over that long, once a burst is over.
	forced = 2 * time.Minute
	// window is how far back the allocation rate is read: garbage comes in
	// bursts (a Prometheus scrape every 15 s to a minute), and a rate read
	// between two of them would call the heap oversized.
	window = time.Minute
	// spacing is how many times as long as a trim took must pass before
	// the next one: trims take at most 1% of the process's time, however
	// often it grows and shrinks.
	spacing = 100
)

// TrimLogged is the message Run logs after each trim, with the attributes
// held_bytes, live_bytes, held_after_bytes and took; the bench finds trims
// in the manager's log by it.
const TrimLogged = "returned heap memory to the OS"

// Worth reports whether a heap that holds held bytes, live of them live, is
// worth trimming in a process that allocates rate bytes a second: it holds
// more than it will need again before the runtime's next forced collection
// by over a quarter of what is live. It will need what is live, what is
// allocated until then, and kept: what the last trim could not give back
// beyond what was live (pages that live objects share with free ones). A
// heap grown by a burst that is over is worth it; one that a steady flow of
// garbage (a Prometheus scrape of thousands of workers' series) fills again
// is not, nor one that a trim just left.
func Worth(live, held, kept uint64, rate float64) bool {
	if live < MinLive {
		return false
	}
	need := float64(live+kept) + rate*forced.Seconds()
	return float64(held) > need+float64(live)/4
}

// Run looks at the heap every interval until ctx ends, and trims it when
// it is Worth it, from the live bytes the last collection found and the
// allocation rate over the last minute: one full collection, and what is
// free goes back to the operating system (debug.FreeOSMemory). After a
// trim the next waits a hundred times as long as it took. log may be nil.
func Run(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"}, // free and not yet released
	}
	// held is what the heap keeps from the OS.
	read := func() (live, allocs, held uint64) {
		metrics.Read(s)
		v := func(i int) uint64 { return s[i].Value.Uint64() }
		return v(0), v(1), v(2) + v(3) + v(4)
	}
	type look struct {
		at     time.Time
		allocs uint64
	}
	_, allocs, _ := read()
	looks := []look{{time.Now(), allocs}} // the last minute's, oldest first
	var notBefore time.Time               // the next trim's earliest time
	var kept uint64                       // held beyond live after the last trim
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			live, allocs, held := read()
			for len(looks) > 1 && now.Sub(looks[1].at) >= window {
				looks = looks[1:]
			}
			first := looks[0]
			looks = append(looks, look{now, allocs})
			rate := float64(allocs-first.allocs) / now.Sub(first.at).Seconds()
			if now.Before(notBefore) || !Worth(live, held, kept, rate) {
				continue
			}
			debug.FreeOSMemory()
			_, _, after := read()
			took := time.Since(now)
			kept = after - min(after, live)
			notBefore = now.Add(took + spacing*took)
			log.Info(TrimLogged,
				"held_bytes", held, "live_bytes", live, "held_after_bytes", after, "took", took)
		}
	}
}

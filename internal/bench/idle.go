//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/devops-platform/devops/internal/heaptrim"
)

// Scenario 7's idle CPU is the manager's steady state, and a manager that
// many workers have just joined gives the heap the joins grew back to the
// OS once, about a minute after they stopped (internal/heaptrim): one
// collection and a scavenge, ~0.5 s of CPU at 10,000 workers. That is the
// joins' cost paid late, not what an idle fleet costs every minute, and it
// lands in or next to the bench's window by chance (it did in session 28's
// runs, and the figure moved with it), so the window leaves out the moments
// of each trim the manager logged and runs on until it holds window of the
// rest. The row's note says what was left out.

// trimMsg is how a trim's line in the manager's log (slog's text) names it.
const trimMsg = `msg="` + heaptrim.TrimLogged + `"`

// heapTrim is one trim the manager logged: it ended at end and took took.
type heapTrim struct {
	end  time.Time
	took time.Duration
}

// readTrims returns the trims logged in the complete lines of the log at
// path from offset off on, and the offset after them. A missing log has
// none.
func readTrims(path string, off int64) ([]heapTrim, int64) {
	f, err := os.Open(path)
	if err != nil {
		return nil, off
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, off
	}
	var trims []heapTrim
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			// A line not yet ended is read again next time.
			return trims, off
		}
		off += int64(len(line))
		if !bytes.Contains(line, []byte(trimMsg)) {
			continue
		}
		var t heapTrim
		var okEnd, okTook bool
		for _, field := range strings.Fields(string(line)) {
			if v, ok := strings.CutPrefix(field, "time="); ok {
				t.end, err = time.Parse(time.RFC3339Nano, v)
				okEnd = err == nil
			}
			if v, ok := strings.CutPrefix(field, "took="); ok {
				t.took, err = time.ParseDuration(v)
				okTook = err == nil
			}
		}
		if okEnd && okTook {
			trims = append(trims, t)
		}
	}
}

// cpuSpan is the manager's CPU use between two readings.
type cpuSpan struct {
	from, to time.Time
	cpu      time.Duration
}

// trimPad widens each trim on both sides: the log's clock and the bench's
// readings are a sampling step apart at worst.
const trimPad = 250 * time.Millisecond

// cpuUse is CPU used over some time.
type cpuUse struct{ time, cpu time.Duration }

// percent is the CPU in percent of one core.
func (u cpuUse) percent() float64 {
	if u.time <= 0 {
		return 0
	}
	return float64(u.cpu) / float64(u.time) * 100
}

// splitSpans adds up, from the first span on, the spans that overlap no
// trim until they hold window (all of them if they hold less), and
// separately the spans that overlap one.
func splitSpans(spans []cpuSpan, trims []heapTrim, window time.Duration) (kept, left cpuUse) {
	for _, s := range spans {
		d := s.to.Sub(s.from)
		overlaps := false
		for _, t := range trims {
			if s.from.Before(t.end.Add(trimPad)) && s.to.After(t.end.Add(-t.took-trimPad)) {
				overlaps = true
				break
			}
		}
		switch {
		case overlaps:
			left.cpu += s.cpu
			left.time += d
		case kept.time < window:
			kept.cpu += s.cpu
			kept.time += d
		}
	}
	return kept, left
}

// idleCPU is the manager's CPU use over window, in percent of one core,
// leaving out its heap trims (above); note says what was left out, or is
// empty.
func (b *bench) idleCPU(c *cluster, window time.Duration) (pct float64, note string) {
	const step = 250 * time.Millisecond
	logPath := filepath.Join(c.dir, "manager.log")
	_, off := readTrims(logPath, 0) // trims before the window are not in it
	var spans []cpuSpan
	var trims []heapTrim
	prevAt, prevCPU := time.Now(), c.managerStats().CPU
	// Past window, a trim that was under way must be logged before its
	// spans are judged: the spans are read on for that long (a trim at
	// 10,000 workers takes ~0.5 s).
	const settle = 2 * time.Second
	deadline := prevAt.Add(window + time.Minute)
	for {
		time.Sleep(step)
		at, cpu := time.Now(), c.managerStats().CPU
		spans = append(spans, cpuSpan{from: prevAt, to: at, cpu: cpu - prevCPU})
		prevAt, prevCPU = at, cpu
		var more []heapTrim
		more, off = readTrims(logPath, off)
		trims = append(trims, more...)
		kept, _ := splitSpans(spans, trims, window+settle)
		if kept.time >= window+settle || at.After(deadline) {
			break
		}
	}
	kept, left := splitSpans(spans, trims, window)
	if len(trims) > 0 {
		var took time.Duration
		for _, t := range trims {
			took += t.took
		}
		note = fmt.Sprintf("the manager's heap trims left out of the window: %d, %.2f s long, %.2f s of its CPU in the %.1f s left out",
			len(trims), took.Seconds(), left.cpu.Seconds(), left.time.Seconds())
	}
	return kept.percent(), note
}

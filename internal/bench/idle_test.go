//go:build linux

package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReadTrims(t *testing.T) {
	path := filepath.Join(t.TempDir(), "manager.log")
	lines := `time=2026-12-06T19:30:55.001Z level=INFO msg="worker registered" id=w1
time=2026-12-06T19:32:09.869Z level=INFO msg="returned heap memory to the OS" held_bytes=484048896 live_bytes=250498328 held_after_bytes=364740608 took=373.682549ms
time=2026-12-06T19:33:00Z level=INFO msg="returned heap memory to the OS" took=1.5s
time=2026-12-06T19:34:00Z level=INFO msg="returned heap memory to the OS" took=2`
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	trims, off := readTrims(path, 0)
	want := []heapTrim{
		{end: time.Date(2026, 12, 6, 19, 32, 9, 869e6, time.UTC), took: 373682549 * time.Nanosecond},
		{end: time.Date(2026, 12, 6, 19, 33, 0, 0, time.UTC), took: 1500 * time.Millisecond},
	}
	if len(trims) != len(want) {
		t.Fatalf("readTrims = %v, want %v", trims, want)
	}
	for i := range want {
		if !trims[i].end.Equal(want[i].end) || trims[i].took != want[i].took {
			t.Errorf("trim %d = %v, want %v", i, trims[i], want[i])
		}
	}
	// The last line has no end yet: it is read again once it has one (and
	// its took, without a unit, does not parse then either).
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("s\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	more, _ := readTrims(path, off)
	if len(more) != 1 || more[0].took != 2*time.Second {
		t.Errorf("readTrims from %d = %v, want the completed line's trim of 2s", off, more)
	}
	if none, off := readTrims(filepath.Join(t.TempDir(), "missing.log"), 7); none != nil || off != 7 {
		t.Errorf("readTrims of a missing log = %v, %d, want none, 7", none, off)
	}
}

func TestSplitSpansLeavesOutTrims(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	var spans []cpuSpan
	for i := range 40 { // 10 s in steps of 250 ms, 5 ms of CPU each (2%)
		from := t0.Add(time.Duration(i) * 250 * time.Millisecond)
		spans = append(spans, cpuSpan{from: from, to: from.Add(250 * time.Millisecond), cpu: 5 * time.Millisecond})
	}
	// A trim from 4.1 s to 4.6 s: with the padding, the spans from 3.75 s
	// to 5 s overlap it (five of them), and it cost 400 ms of CPU more.
	for i := 15; i < 19; i++ {
		spans[i].cpu += 100 * time.Millisecond
	}
	trims := []heapTrim{{end: t0.Add(4600 * time.Millisecond), took: 500 * time.Millisecond}}
	kept, left := splitSpans(spans, trims, 8*time.Second)
	if kept.time != 8*time.Second {
		t.Errorf("kept %v, want 8s", kept.time)
	}
	if p := kept.percent(); p != 2 {
		t.Errorf("kept at %.3f%% of a core, want 2%%", p)
	}
	if left.time != 1250*time.Millisecond || left.cpu != 425*time.Millisecond {
		t.Errorf("left out %v with %v of CPU, want 1.25s with 425ms", left.time, left.cpu)
	}
	// Without the trim every span counts, up to the window.
	kept, left = splitSpans(spans, nil, 8*time.Second)
	if kept.time != 8*time.Second || left.cpu != 0 {
		t.Errorf("without trims kept %v, left %v of CPU; want 8s and none", kept.time, left.cpu)
	}
	if p := kept.percent(); p <= 2 {
		t.Errorf("without trims kept at %.3f%% of a core, want the trim's CPU in it (over 2%%)", p)
	}
}

func TestWaitTrim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "manager.log")
	before := "time=2026-12-06T19:32:09.869Z level=INFO msg=\"returned heap memory to the OS\" took=300ms\n"
	if err := os.WriteFile(path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	off := int64(len(before))
	// Nothing past off: none, once the limit has passed.
	if trims, _ := waitTrim(path, off, 0); len(trims) != 0 {
		t.Fatalf("waitTrim with nothing logged = %v, want none", trims)
	}
	// A trim logged while it waits is found at its next look.
	go func() {
		time.Sleep(1500 * time.Millisecond)
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		f.WriteString("time=2026-12-06T19:33:00Z level=INFO msg=\"returned heap memory to the OS\" took=1.5s\n")
	}()
	trims, waited := waitTrim(path, off, time.Minute)
	if len(trims) != 1 || trims[0].took != 1500*time.Millisecond {
		t.Fatalf("waitTrim = %v, want the trim of 1.5s logged while it waited", trims)
	}
	if waited < time.Second || waited >= time.Minute {
		t.Errorf("waitTrim waited %v, want from the trim's logging to its next look", waited)
	}
}

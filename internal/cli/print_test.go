package cli

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
)

// writeCounter counts the writes it is handed, as a terminal would count
// system calls.
type writeCounter struct {
	strings.Builder
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Builder.Write(p)
}

func TestWorkersTableIsWrittenInLargeWrites(t *testing.T) {
	now := time.Now()
	ws := make([]devops.Worker, 1000)
	for i := range ws {
		ws[i] = devops.Worker{ID: devops.WorkerID(fmt.Sprintf("id-%d", i)), Name: fmt.Sprintf("worker-%d", i),
			Address: "127.0.0.1:50061", Capacity: 8, State: devops.WorkerUp, LastSeen: now}
	}
	var out writeCounter
	printWorkers(&out, ws, false)

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(ws)+1 {
		t.Fatalf("%d lines, want a header and %d rows", len(lines), len(ws))
	}
	// The rows are lined up: every row's state starts where the header's does.
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "UP ") {
			t.Fatalf("row not lined up under STATE at %d:\n%s\n%s", col, lines[0], l)
		}
	}
	if max := out.Len()/(64<<10) + 1; out.writes > max {
		t.Errorf("%d bytes in %d writes, want at most %d", out.Len(), out.writes, max)
	}
}

// fleetPrinter is a fleet run's printer whose children 1 and 2 ran on w1
// and w2.
func fleetPrinter(f *fleetFlags) (p *runPrinter, stdout, stderr *writeCounter) {
	stdout, stderr = new(writeCounter), new(writeCounter)
	p = newRunPrinter(&Env{Stdout: stdout, Stderr: stderr}, f)
	p.process(devops.Process{ID: "1", WorkerName: "w1", State: devops.StateRunning})
	p.process(devops.Process{ID: "2", WorkerName: "w2", State: devops.StateRunning})
	return p, stdout, stderr
}

func chunk(s devops.Stream, data string) devops.Chunk {
	return devops.Chunk{Stream: s, Data: []byte(data)}
}

func TestFleetOutputIsPrefixedWholeLines(t *testing.T) {
	p, stdout, stderr := fleetPrinter(&fleetFlags{output: "text"})
	p.chunk("1", chunk(devops.Stdout, "hel"))
	p.chunk("2", chunk(devops.Stdout, "one\ntw"))
	p.chunk("1", chunk(devops.Stdout, "lo\nwor"))
	p.chunk("1", chunk(devops.Stderr, "oops\n"))
	p.chunk("2", chunk(devops.Stdout, "o\nthree\nfour\nfi"))
	if want := "w2: one\nw1: hello\nw2: two\nw2: three\nw2: four\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
	// Each chunk's whole lines in one write; a chunk with none, no write.
	if stdout.writes != 3 {
		t.Errorf("stdout took %d writes for 3 chunks with whole lines, want 3", stdout.writes)
	}
	if stderr.String() != "w1: oops\n" {
		t.Errorf("stderr = %q", stderr.String())
	}

	// A child's unfinished line is a whole line once the child ended; the
	// others' at the end of the run.
	p.process(devops.Process{ID: "2", WorkerName: "w2", State: devops.StateSucceeded})
	p.end()
	if want := "w2: one\nw1: hello\nw2: two\nw2: three\nw2: four\nw2: fi\nw1: wor\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
}

// TestFleetOutputCutsLongLines: output with no newline is printed in lines
// of maxLine, not held whole until the end.
func TestFleetOutputCutsLongLines(t *testing.T) {
	p, stdout, _ := fleetPrinter(&fleetFlags{output: "text"})
	// 2.5 maxLine bytes with no newline, in chunks of a third of it.
	third := strings.Repeat("x", maxLine/3+1)
	for range 7 {
		p.chunk("1", chunk(devops.Stdout, third))
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("printed %d lines before the end, want 2 whole pieces", len(lines))
	}
	for _, l := range lines {
		if l != "w1: "+strings.Repeat("x", maxLine) {
			t.Fatalf("a piece of %d bytes, want the head and %d", len(l), maxLine)
		}
	}
	if held := p.parts["1"][devops.Stdout%3].Len(); held != 7*len(third)-2*maxLine {
		t.Errorf("holds %d bytes, want the rest, %d", held, 7*len(third)-2*maxLine)
	}
	p.process(devops.Process{ID: "1", WorkerName: "w1", State: devops.StateSucceeded})
	p.end()
	if got := strings.Count(stdout.String(), "x"); got != 7*len(third) {
		t.Errorf("printed %d bytes of output, want all %d", got, 7*len(third))
	}
}

func TestFleetOutputWithTimestamps(t *testing.T) {
	p, stdout, _ := fleetPrinter(&fleetFlags{output: "text", timestamps: true})
	before := time.Now()
	p.chunk("1", chunk(devops.Stdout, "a\nb\n"))
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("stdout = %q, want two lines", stdout.String())
	}
	for i, l := range lines {
		ts, rest, _ := strings.Cut(l, " ")
		at, err := time.Parse("2006-01-02T15:04:05.000Z07:00", ts)
		if err != nil || at.Before(before.Truncate(time.Millisecond)) || at.After(time.Now()) {
			t.Errorf("line %q: time %q (%v) is not when it arrived", l, ts, err)
		}
		if want := "w1: " + string(rune('a'+i)); rest != want {
			t.Errorf("line %q, want %q after the time", l, want)
		}
	}
}

func TestFleetOutputGroupedByWorker(t *testing.T) {
	p, stdout, stderr := fleetPrinter(&fleetFlags{output: "text", group: true})
	p.chunk("1", chunk(devops.Stdout, "one\ntw"))
	p.chunk("2", chunk(devops.Stdout, "other\n"))
	p.chunk("1", chunk(devops.Stderr, "oops\n"))
	p.chunk("1", chunk(devops.Stdout, "o\n"))
	if stdout.Len()+stderr.Len() != 0 {
		t.Fatalf("printed before the end: %q %q", stdout.String(), stderr.String())
	}
	p.process(devops.Process{ID: "1", WorkerName: "w1", State: devops.StateFailed, Code: 2})
	if want := "==> w1: FAILED, exit 2 <==\none\ntwo\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
	if want := "oops\ndevops: w1: exit code 2\n"; stderr.String() != want {
		t.Errorf("stderr = %q, want %q: w1's block's stderr, then its end", stderr.String(), want)
	}
}

// TestFleetOutputCoalesced: --coalesce prints one block per distinct output
// and end, naming its workers, the most shared first, when the run ends.
func TestFleetOutputCoalesced(t *testing.T) {
	p, stdout, _ := fleetPrinter(&fleetFlags{output: "text", group: true, coalesce: true})
	p.process(devops.Process{ID: "3", WorkerName: "w3", State: devops.StateRunning})
	p.process(devops.Process{ID: "4", WorkerName: "w4", State: devops.StateRunning})
	p.chunk("1", chunk(devops.Stdout, "6.1\n"))
	p.chunk("2", chunk(devops.Stdout, "6.18\n"))
	p.chunk("3", chunk(devops.Stdout, "6.1"))
	p.chunk("3", chunk(devops.Stdout, "8\n"))
	p.chunk("4", chunk(devops.Stdout, "6.18\n"))
	p.process(devops.Process{ID: "3", WorkerName: "w3", State: devops.StateSucceeded})
	p.process(devops.Process{ID: "1", WorkerName: "w1", State: devops.StateSucceeded})
	p.process(devops.Process{ID: "4", WorkerName: "w4", State: devops.StateFailed, Code: 1})
	p.process(devops.Process{ID: "2", WorkerName: "w2", State: devops.StateSucceeded})
	if stdout.Len() != 0 {
		t.Fatalf("printed before the run ended: %q", stdout.String())
	}
	p.end()
	want := "==> w[2-3] (2): SUCCEEDED, exit 0 <==\n6.18\n" +
		"==> w1 (1): SUCCEEDED, exit 0 <==\n6.1\n" +
		"==> w4 (1): FAILED, exit 1 <==\n6.18\n"
	if stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
}

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

package worker

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// goroutinesIn counts the goroutines whose stack holds fn, by the state the
// runtime gives them ("IO wait": in the netpoller; "syscall": holding an
// OS thread and its P in a system call).
func goroutinesIn(fn string) map[string]int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	states := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, fn) {
			continue
		}
		head := g[:strings.IndexByte(g, '\n')] // goroutine N [state, 1 minutes]:
		states[head[strings.IndexByte(head, '[')+1:strings.IndexAny(head, ",]")]]++
	}
	return states
}

// waitGoroutines waits until the goroutines in fn are as want says.
func waitGoroutines(t *testing.T, fn string, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A look may catch one in a read that does not block.
		got := goroutinesIn(fn)
		if len(got) == len(want) && got["IO wait"] == want["IO wait"] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines in %s: %v after 10 s, want %v (syscall: blocked in a system call)", fn, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFileWatcher: one goroutine for every watch, parked in the netpoller;
// each watch signals its own file's writes, also with two watches of one
// file, one of which stopped; the goroutine ends with close.
func TestFileWatcher(t *testing.T) {
	w := newFileWatcher()
	dir := t.TempDir()
	var files []*os.File
	var changes []<-chan struct{}
	for i := range 4 {
		f, err := os.Create(filepath.Join(dir, string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		changed, stop := w.watch(f.Name())
		t.Cleanup(stop)
		files, changes = append(files, f), append(changes, changed)
	}
	// A second watch of the first file, stopped: the first still signals.
	_, stop := w.watch(files[0].Name())
	stop()
	stop() // twice is harmless
	waitGoroutines(t, "worker.(*fileWatcher).run", map[string]int{"IO wait": 1})
	for i, f := range files {
		if _, err := f.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if !signalledBy(changes[i]) {
			t.Fatalf("watch %d did not signal a write", i)
		}
		for j := range changes {
			select {
			case <-changes[j]:
				t.Errorf("a write of file %d signalled watch %d", i, j)
			default:
			}
		}
	}
	w.close()
	waitGoroutines(t, "worker.(*fileWatcher).run", map[string]int{})
	// After close a watch polls.
	changed, stop := w.watch(files[0].Name())
	defer stop()
	if !signalledBy(changed) {
		t.Error("a watch after close did not signal")
	}
}

// signalledBy waits up to 10 s for a signal on changed.
func signalledBy(changed <-chan struct{}) bool {
	select {
	case <-changed:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

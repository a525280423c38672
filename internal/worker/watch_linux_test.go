package worker

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devops-platform/devops/internal/goroutines"
)

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
	goroutines.Await(t, "worker.(*fileWatcher).run", map[string]int{"IO wait": 1})
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
	goroutines.Await(t, "worker.(*fileWatcher).run", map[string]int{})
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

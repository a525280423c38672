package worker

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// watchers counts the goroutines of watchFile by the state the runtime
// gives them ("IO wait": in the netpoller; "syscall": holding an OS thread
// and its P in a system call).
func watchers() map[string]int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	states := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "worker.watchFile.func") {
			continue
		}
		head := g[:strings.IndexByte(g, '\n')] // goroutine N [state, 1 minutes]:
		states[head[strings.IndexByte(head, '[')+1:strings.IndexAny(head, ",]")]]++
	}
	return states
}

// TestWatchFileWaitsInTheNetpoller: watches wait parked by the runtime, not
// in poll(2); each signals a write, and its goroutine ends after stop.
func TestWatchFileWaitsInTheNetpoller(t *testing.T) {
	const n = 4
	var files []*os.File
	var changes []<-chan struct{}
	var stops []func()
	for range n {
		f, err := os.Create(filepath.Join(t.TempDir(), "output"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		changed, stop := watchFile(f.Name())
		t.Cleanup(stop)
		files, changes, stops = append(files, f), append(changes, changed), append(stops, stop)
	}
	waitFor := func(want map[string]int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			// A look may catch one in a read that does not block.
			got := watchers()
			if got["IO wait"] == want["IO wait"] && len(got) == len(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("watch goroutines %v after 10 s, want %v (syscall: blocked in poll(2))", got, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(map[string]int{"IO wait": n})
	for i, f := range files {
		if _, err := f.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changes[i]:
		case <-time.After(10 * time.Second):
			t.Fatalf("watch %d did not signal a write", i)
		}
	}
	for _, stop := range stops {
		stop()
	}
	waitFor(map[string]int{})
}

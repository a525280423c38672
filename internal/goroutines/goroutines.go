// Package goroutines reads where a process's goroutines wait, from the
// runtime's dump of their stacks: for tests that check that a wait parks
// in the netpoller ("IO wait") rather than in a system call ("syscall"),
// which holds an OS thread and its P.
package goroutines

import (
	"maps"
	"runtime"
	"strings"
	"testing"
	"time"
)

// States counts the goroutines whose stack holds fn, by the state the
// runtime gives them ("IO wait", "syscall", "runnable", ...).
func States(fn string) map[string]int {
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

// Await waits until States(fn) is want, for up to 10 s, and fails tb
// otherwise. A look may catch a goroutine in a system call that does not
// block, so a state other than want's only fails once it stays.
func Await(tb testing.TB, fn string, want map[string]int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := States(fn)
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("goroutines in %s: %v after 10 s, want %v (syscall: blocked in a system call)", fn, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

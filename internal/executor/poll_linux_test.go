package executor_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devops-platform/devops/internal/executor"
	"github.com/devops-platform/devops/internal/goroutines"
)

// TestPollWaitsInTheNetpoller: waiters on pipes are parked by the runtime
// (IO wait), not blocked in poll(2) (syscall), where each would keep its
// P until sysmon took it back; and each returns once its pipe is written,
// with Revents set as poll(2) sets them.
func TestPollWaitsInTheNetpoller(t *testing.T) {
	const n = 8
	type waiter struct {
		r, w *os.File
		done chan []unix.PollFd
	}
	ws := make([]waiter, n)
	for i := range ws {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		ws[i] = waiter{r: r, w: w, done: make(chan []unix.PollFd, 1)}
		idle, idleW, err := os.Pipe() // never written nor closed: it never wakes a waiter
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { idle.Close(); idleW.Close() })
		go func() {
			fds := []unix.PollFd{
				{Fd: int32(executor.PollableFD(idle)), Events: unix.POLLIN},
				{Fd: int32(executor.PollableFD(r)), Events: unix.POLLIN},
			}
			executor.Poll(fds)
			ws[i].done <- fds
		}()
	}
	goroutines.Await(t, "executor.poll(", map[string]int{"IO wait": n})
	for i, w := range ws {
		if _, err := w.w.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		select {
		case fds := <-w.done:
			if fds[0].Revents != 0 || fds[1].Revents&unix.POLLIN == 0 {
				t.Errorf("waiter %d: revents %#x %#x, want 0 and POLLIN", i, fds[0].Revents, fds[1].Revents)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("waiter %d did not return after its pipe was written", i)
		}
	}
}

// TestPollableFDKeepsDeadlines: a file whose descriptor was taken still has
// read deadlines (f.Fd() would have turned them off, with the netpoller).
func TestPollableFDKeepsDeadlines(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer r.Close()
	if fd := executor.PollableFD(r); fd < 0 {
		t.Fatalf("PollableFD = %d", fd)
	}
	if err := r.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %v, want the deadline", err)
	}
	r.Close()
	if fd := executor.PollableFD(r); fd != -1 {
		t.Errorf("PollableFD of a closed file = %d, want -1", fd)
	}
}

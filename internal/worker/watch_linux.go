package worker

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// watchFile signals on changed each time path is written (inotify), until
// stop. Where inotify fails it falls back to polling every millisecond.
//
// The inotify descriptor is read through an os.File, so a wait for the
// next write parks in Go's netpoller. A poll(2) here held an OS thread and
// its P in the system call for the life of the process, and a goroutine
// woken just before waited on that P until sysmon took it back: up to
// 20 ms on a worker that had been idle (see executor's pollableFD).
func watchFile(path string) (changed <-chan struct{}, stop func()) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return pollFile()
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		return pollFile()
	}
	// Non-blocking, so os.NewFile registers it with the netpoller; Close
	// then wakes a Read waiting on it.
	f := os.NewFile(uintptr(fd), "inotify "+path)
	ch := make(chan struct{}, 1)
	go func() {
		// One read takes every event queued (each is 16 bytes and a name,
		// none here); what matters is that there were some.
		defer f.Close()
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	// stop does not wait for the goroutine (as f.Close would, for the
	// Read it interrupts): it leaves within microseconds of the deadline,
	// but a waiting caller measured 15 ms before the runtime ran it, on the
	// path of every process's exit.
	return ch, func() { f.SetReadDeadline(time.Unix(1, 0)) }
}

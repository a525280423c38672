package worker

import (
	"sync"

	"golang.org/x/sys/unix"
)

// watchFile signals on changed each time path is written (inotify), until
// stop. Where inotify fails it falls back to polling every millisecond.
func watchFile(path string) (changed <-chan struct{}, stop func()) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return pollFile()
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		return pollFile()
	}
	// stop writes to this pipe: poll(2) wakes on it at once, where closing
	// the inotify fd would leave a blocked read waiting for the next event.
	var quit [2]int
	if err := unix.Pipe2(quit[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		return pollFile()
	}
	ch := make(chan struct{}, 1)
	go func() {
		defer unix.Close(fd)
		defer unix.Close(quit[0])
		buf := make([]byte, 4096)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(quit[0]), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
				return
			}
			if fds[1].Revents != 0 {
				return
			}
			if fds[0].Revents != 0 {
				for {
					if _, err := unix.Read(fd, buf); err != nil {
						break // drained (EAGAIN)
					}
				}
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}()
	// stop does not wait for the goroutine: it leaves within microseconds
	// of the write, but a waiting caller measured 15 ms before the runtime
	// ran it, on the path of every process's exit.
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			unix.Write(quit[1], []byte{0})
			unix.Close(quit[1]) // the reader also wakes on the hang-up
		})
	}
}

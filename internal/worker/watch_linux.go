package worker

import (
	"encoding/binary"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// fileWatcher tells the readers of spool files each time their file is
// written: one inotify instance for the worker, one watch per file read.
// Where inotify fails, each watch polls every millisecond instead.
//
// One instance for all, not one per reader: closing an inotify instance
// waits for the kernel to reap its marks after an SRCU grace period, 12 ms
// at the median and up to 39 ms here (2,000 `echo hi` back to back, a
// worker's execution trace: 1,444 closes), in a blocking system call that
// holds its P meanwhile (see executor's pollableFD); the gRPC stream
// writer once waited 9 ms behind one. Removing a watch does not wait.
//
// The instance is read through an os.File, so the reader waits in Go's
// netpoller, not in a system call.
type fileWatcher struct {
	f *os.File // the inotify instance; nil: watches poll
	// fd is f's descriptor, for inotify_add_watch and inotify_rm_watch.
	fd int

	mu     sync.Mutex                // protects the fields below
	subs   map[int32][]chan struct{} // by watch descriptor: a file read twice has one
	closed bool
}

func newFileWatcher() *fileWatcher {
	w := &fileWatcher{subs: make(map[int32][]chan struct{})}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return w
	}
	// Non-blocking, so os.NewFile puts it in the netpoller.
	w.f, w.fd = os.NewFile(uintptr(fd), "inotify"), fd
	go w.run()
	return w
}

// watch signals on changed each time path is written, until stop.
func (w *fileWatcher) watch(path string) (changed <-chan struct{}, stop func()) {
	if w.f == nil {
		return pollFile()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return pollFile()
	}
	wd, err := unix.InotifyAddWatch(w.fd, path, unix.IN_MODIFY|unix.IN_CLOSE_WRITE)
	if err != nil {
		return pollFile() // out of watches (fs.inotify.max_user_watches), say
	}
	// Subscribed under the lock the reader takes to dispatch: no event of
	// this watch goes out before the subscriber is there.
	ch := make(chan struct{}, 1)
	w.subs[int32(wd)] = append(w.subs[int32(wd)], ch)
	var once sync.Once
	return ch, func() { once.Do(func() { w.unwatch(int32(wd), ch) }) }
}

func (w *fileWatcher) unwatch(wd int32, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	subs := slices.DeleteFunc(w.subs[wd], func(c chan struct{}) bool { return c == ch })
	if len(subs) > 0 {
		w.subs[wd] = subs
		return
	}
	delete(w.subs, wd)
	if !w.closed {
		// EINVAL when the kernel removed it already, with its file.
		unix.InotifyRmWatch(w.fd, uint32(wd))
	}
}

// run reads events until close and signals the subscribers of each.
func (w *fileWatcher) run() {
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		w.mu.Lock()
		// Each event: wd int32, mask, cookie, len uint32, then len bytes
		// of name (none for a watched file).
		for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
			wd := int32(binary.NativeEndian.Uint32(b[0:4]))
			if wd == -1 { // IN_Q_OVERFLOW: events were lost, wake everyone
				for _, subs := range w.subs {
					notifyAll(subs)
				}
			}
			notifyAll(w.subs[wd])
			b = b[min(len(b), unix.SizeofInotifyEvent+int(binary.NativeEndian.Uint32(b[12:16]))):]
		}
		w.mu.Unlock()
	}
}

func notifyAll(subs []chan struct{}) {
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// close ends the instance. Watches made after it poll.
func (w *fileWatcher) close() {
	if w.f == nil {
		return
	}
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.f.Close()
}

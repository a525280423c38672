package manager

import (
	"sync"
	"time"

	"github.com/devops-platform/devops"
)

// tailWindow is how many bytes of each process's latest output the manager
// keeps in memory for live followers. A follower further behind reads from
// the store until it catches up; so a stalled follower costs no memory.
const tailWindow = 4 << 20

// tailLinger is how long a closed tail keeps its bytes, for the followers
// that were live when the process ended; then a finished process holds none.
// Kept for the manager's life, each process of 4 MB output added 4 MB to
// the manager's live heap for good (170 MB after 40 of them; now 65–85 MB,
// those that ended in the last 10 s).
const tailLinger = 10 * time.Second

// tail is the latest output of one process, in memory, so that live
// followers get each chunk as it arrives instead of through a store consumer
// each (which dominated the manager's CPU). The store stays the record: the
// tail only ever holds bytes the store is given too.
type tail struct {
	mu      sync.Mutex     // protects the fields below
	chunks  []devops.Chunk // contiguous, oldest first
	start   int64          // offset of the first byte held (== end when empty)
	end     int64          // offset just past the last byte held
	size    int64          // bytes held
	closed  bool           // no more output will come
	frozen  bool           // the store's limit was reached: nothing more is kept
	changed chan struct{}  // closed and replaced on every append and on close
}

// newTail returns a tail whose next byte is at offset end.
func newTail(end int64, closed bool) *tail {
	return &tail{start: end, end: end, closed: closed, changed: make(chan struct{})}
}

// append adds a chunk that starts at the tail's end, dropping the oldest
// bytes beyond the window. A chunk that does not start at the end (after a
// gap the worker reported) restarts the tail there.
func (t *tail) append(c devops.Chunk) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.frozen || len(c.Data) == 0 {
		return
	}
	if c.Offset != t.end {
		t.chunks, t.size, t.start = nil, 0, c.Offset
	}
	t.chunks = append(t.chunks, c)
	t.end = c.End()
	t.size += int64(len(c.Data))
	for t.size > tailWindow && len(t.chunks) > 1 {
		t.size -= int64(len(t.chunks[0].Data))
		t.chunks[0] = devops.Chunk{}
		t.chunks = t.chunks[1:]
		t.start = t.chunks[0].Offset
	}
	t.broadcastLocked()
}

// freeze ignores every later append: the store keeps no more of this output.
func (t *tail) freeze() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.frozen = true
}

func (t *tail) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		t.broadcastLocked()
		time.AfterFunc(tailLinger, t.release)
	}
}

// release drops what a closed tail holds: a follower still behind reads it
// from the store, which has every byte by then.
func (t *tail) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.chunks, t.size, t.start = nil, 0, t.end
}

func (t *tail) broadcastLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// read returns the chunks past offset from (the first trimmed to start
// there), whether the output is closed, and a channel that closes on the
// next change. behind is true when bytes at from have already left the
// window: the caller must read them from the store first.
func (t *tail) read(from int64) (chunks []devops.Chunk, closed, behind bool, changed <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if from < t.start {
		return nil, t.closed, true, t.changed
	}
	for _, c := range t.chunks {
		if c.End() <= from {
			continue
		}
		if c.Offset < from {
			c.Data = c.Data[from-c.Offset:]
			c.Offset = from
		}
		chunks = append(chunks, c)
	}
	return chunks, t.closed, false, t.changed
}

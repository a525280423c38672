package worker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
	"github.com/devops-platform/devops/internal/spare"
)

// spool is one process's output on the worker's disk, so that the manager
// can read it from any offset, again after a broken connection or a worker
// restart. The process's shim writes it (see executor.StartSupervised): a
// sequence of frames, one byte of stream, four bytes of length (big endian),
// then the data, each frame one write. The worker only reads it, following
// the file as it grows.
type spool struct {
	dir  string          // the process's state directory, removed with the spool
	path string          // the output file in it
	done <-chan struct{} // closed once the process ended: the file is complete
	// watch signals each write of a file until stop (fileWatcher.watch).
	watch func(path string) (changed <-chan struct{}, stop func())
}

func newSpool(dir string, done <-chan struct{}, watch func(string) (<-chan struct{}, func())) *spool {
	return &spool{dir: dir, path: filepath.Join(dir, executor.OutputFile), done: done, watch: watch}
}

// size is the spool file's size on disk, frames included (0 when it is
// gone): the blocks it holds, since one whose oldest output was dropped is
// a sparse file that looks larger than it is.
func (s *spool) size() int64 {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// errCorruptSpool is a spool file that no shim could have written.
var errCorruptSpool = errors.New("corrupt spool")

// The sizes of spool reads and of the chunks sent.
const (
	readSize = 256 << 10
	maxChunk = 256 << 10
)

// gather is how long output that keeps coming waits to go out with what
// follows it: what comes within gather of the last chunk sent goes once
// gather has passed. A fast reader otherwise sent every write of the shim
// on its own, and each chunk costs the same at every hop (a store write, a
// send to each follower) whatever its size: 1 GiB went as 5,000-12,000
// chunks, the more the faster the worker was, and the slower for it.
// Output after a quiet moment, the first byte included, goes at once.
const gather = time.Millisecond

// read calls fn with the output from offset from, following the file until
// the process ended and the file is read to its end. An offset past the end
// of a finished output yields devops.ErrOutOfRange. fn must not keep c.Data.
// Output the shim dropped to keep the spool under its bound is skipped: the
// first chunk then starts past from, and the manager counts the bytes lost.
func (s *spool) read(ctx context.Context, from int64, fn func(c devops.Chunk) error) error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer f.Close()
	// Watch before the first look, so no write falls between them.
	changed, stop := s.watch(s.path)
	defer stop()
	pos := s.openReadPos()
	defer pos.close()
	var (
		readPos int64 // file bytes read into pending
		offset  int64 // output offset of pending's first frame
		// Reads land in buf right behind what pending holds (at most a
		// partial frame): no byte is copied from a read buffer. It grows
		// with the output, up to 2*readSize: made at that size for every
		// process, with acc's, it was 768 KiB to zero and collect per
		// command, 10% of a worker's CPU running `true` over and over and
		// most of its garbage collection (another 12%).
		buf     []byte
		pending []byte
		// Consecutive frames of one stream go out as one chunk of up to
		// maxChunk bytes: each message costs the manager a store write and
		// a send, whatever its size.
		acc devops.Chunk
	)
	var lastSent time.Time
	wait := time.NewTimer(gather)
	wait.Stop() // armed only while output gathers
	defer wait.Stop()
	flush := func() error {
		if len(acc.Data) == 0 {
			return nil
		}
		c := acc
		acc.Data = acc.Data[:0] // fn does not keep c.Data
		lastSent = time.Now()
		return fn(c)
	}
	for {
		// Looked at before the size: once done, the size is final.
		closed := isClosed(s.done)
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("stat spool: %w", err)
		}
		for size := fi.Size(); readPos < size; {
			want := int(min(readSize, size-readPos))
			if cap(pending)-len(pending) < want {
				// Move the partial frame left over to the front.
				if cap(buf) < len(pending)+want {
					buf = make([]byte, 0, max(len(pending)+want, min(2*cap(buf), 2*readSize), 4<<10))
				}
				pending = append(buf[:0], pending...)
			}
			k := len(pending) + want
			n, err := f.ReadAt(pending[len(pending):k], readPos)
			if n == 0 && err != nil {
				if err == io.EOF {
					break
				}
				return fmt.Errorf("read spool: %w", err)
			}
			readPos += int64(n)
			pending = pending[:len(pending)+n]
			// Looked at after the read: the shim writes the mark before it
			// punches the hole, so whatever this read found below it may be
			// zeros and is thrown away.
			if d, ok := s.dropped(); ok && d.Pos > readPos-int64(len(pending)) {
				if d.Pos >= readPos {
					pending, readPos = pending[:0], d.Pos
				} else {
					pending = pending[d.Pos-(readPos-int64(len(pending))):]
				}
				offset = d.Offset
			}
			for len(pending) >= executor.FrameHeader {
				n := int64(binary.BigEndian.Uint32(pending[1:executor.FrameHeader]))
				if int64(len(pending)) < executor.FrameHeader+n {
					break // the rest of the frame is not written yet
				}
				c := devops.Chunk{Offset: offset, Stream: devops.Stream(pending[0]), Data: pending[executor.FrameHeader : executor.FrameHeader+n]}
				if c.Stream != devops.Stdout && c.Stream != devops.Stderr {
					return fmt.Errorf("%w: spool frame at offset %d has unknown stream %d", errCorruptSpool, offset, c.Stream)
				}
				pending = pending[executor.FrameHeader+n:]
				offset += n
				if offset <= from {
					continue
				}
				if c.Offset < from {
					c.Data = c.Data[from-c.Offset:]
					c.Offset = from
				}
				if len(acc.Data) > 0 && (acc.Stream != c.Stream || len(acc.Data)+len(c.Data) > maxChunk) {
					if err := flush(); err != nil {
						return err
					}
				}
				if len(acc.Data) == 0 {
					acc.Offset, acc.Stream = c.Offset, c.Stream
				}
				acc.Data = append(acc.Data, c.Data...)
			}
			// Sent, then said: the shim may drop what is below it.
			if err := flush(); err != nil {
				return err
			}
			pos.report(readPos - int64(len(pending)))
		}
		if closed {
			if from > offset {
				return fmt.Errorf("%w: offset %d is past the end of the output (%d bytes)", devops.ErrOutOfRange, from, offset)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if !isClosed(s.done) {
				return ctx.Err()
			}
			// Ended: the rest is on disk, read it to the end.
		case <-changed:
			if d := gather - time.Since(lastSent); d > 0 {
				wait.Reset(d)
				select {
				case <-wait.C:
				case <-s.done:
				case <-ctx.Done():
				}
			}
		case <-s.done:
		}
	}
}

// readPos tells the shim how far into the spool the worker has read and
// sent (executor.ReadFile), so that it drops that first and holds the
// command back rather than drop what was not sent.
type readPos struct{ f *os.File }

func (s *spool) openReadPos() readPos {
	f, err := os.OpenFile(filepath.Join(s.dir, executor.ReadFile), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		// Without it the shim sees a stalled reader: it drops the oldest
		// output when the bound is reached, as with the manager away.
		return readPos{}
	}
	return readPos{f: f}
}

func (r readPos) report(pos int64) {
	if r.f == nil {
		return
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(pos))
	r.f.WriteAt(b[:], 0) // one write of 8 bytes: the shim never sees half of it
}

func (r readPos) close() {
	if r.f != nil {
		r.f.Close()
	}
}

// dropped reads where the output starts again after the shim dropped the
// oldest of it to stay under its bound; false: nothing was dropped.
func (s *spool) dropped() (executor.Dropped, bool) {
	var d executor.Dropped
	b, err := os.ReadFile(filepath.Join(s.dir, executor.DroppedFile))
	if err != nil || json.Unmarshal(b, &d) != nil {
		// Missing until the first drop; written whole (temp and rename).
		return d, false
	}
	return d, true
}

// remove deletes the spool and the rest of the process's state directory.
func (s *spool) remove() error {
	// Not in the way of the next command's spool, a spare renamed into
	// the same directory.
	return spare.RemoveAll(s.dir)
}

// pollFile ticks every millisecond: output latency matters more than the
// wake-ups of a fallback.
func pollFile() (<-chan struct{}, func()) {
	t := time.NewTicker(time.Millisecond)
	ch := make(chan struct{}, 1)
	quit := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}()
	return ch, func() { t.Stop(); close(quit); <-ended }
}

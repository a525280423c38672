package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
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
}

func newSpool(dir string, done <-chan struct{}) *spool {
	return &spool{dir: dir, path: filepath.Join(dir, executor.OutputFile), done: done}
}

// size is the spool file's size on disk, frames included (0 when it is gone).
func (s *spool) size() int64 {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0
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

// read calls fn with the output from offset from, following the file until
// the process ended and the file is read to its end. An offset past the end
// of a finished output yields devops.ErrOutOfRange. fn must not keep c.Data.
// errCorruptSpool is a spool file that no shim could have written.
var errCorruptSpool = errors.New("corrupt spool")

// The sizes of spool reads and of the chunks sent.
const (
	readSize = 256 << 10
	maxChunk = 256 << 10
)

func (s *spool) read(ctx context.Context, from int64, fn func(c devops.Chunk) error) error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer f.Close()
	// Watch before the first look, so no write falls between them.
	changed, stop := watchFile(s.path)
	defer stop()
	var (
		readPos int64 // file bytes read into pending
		offset  int64 // output offset of pending's first frame
		base    = make([]byte, 0, readSize)
		pending = base
		chunk   = make([]byte, readSize)
		// Consecutive frames of one stream go out as one chunk of up to
		// maxChunk bytes: each message costs the manager a store write and
		// a send, whatever its size.
		accBuf = make([]byte, 0, maxChunk)
		acc    = devops.Chunk{Data: accBuf}
	)
	flush := func() error {
		if len(acc.Data) == 0 {
			return nil
		}
		c := acc
		acc.Data = accBuf[:0]
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
			n, err := f.ReadAt(chunk[:min(int64(len(chunk)), size-readPos)], readPos)
			if n == 0 && err != nil {
				if err == io.EOF {
					break
				}
				return fmt.Errorf("read spool: %w", err)
			}
			readPos += int64(n)
			pending = append(pending, chunk[:n]...)
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
			// Keep the unread tail at the start of the buffer.
			pending = append(base[:0], pending...)
		}
		if err := flush(); err != nil {
			return err
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
		case <-s.done:
		}
	}
}

// remove deletes the spool and the rest of the process's state directory.
func (s *spool) remove() error {
	return os.RemoveAll(s.dir)
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

package worker

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/devops-platform/devops"
)

// spool keeps one process's output in a file on the worker's disk, so that
// the manager can read it from any offset, again after a broken connection.
// The file is a sequence of frames: one byte of stream, four bytes of length
// (big endian), then the data.
type spool struct {
	path string

	mu      sync.Mutex    // protects the fields below
	f       *os.File      // open for appending until close
	end     int64         // output bytes written (the offset of the next byte)
	size    int64         // file bytes written, frames included
	closed  bool          // no more output will come
	changed chan struct{} // closed and replaced on every write and on close
}

const frameHeader = 5

func newSpool(path string) (*spool, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create spool: %w", err)
	}
	return &spool{path: path, f: f, changed: make(chan struct{})}, nil
}

// writer returns an io.Writer that appends frames of one stream.
func (s *spool) writer(stream devops.Stream) io.Writer {
	return spoolWriter{s: s, stream: stream}
}

type spoolWriter struct {
	s      *spool
	stream devops.Stream
}

func (w spoolWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return len(p), w.s.append(w.stream, p)
}

func (s *spool) append(stream devops.Stream, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("spool is closed")
	}
	var hdr [frameHeader]byte
	hdr[0] = byte(stream)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
	// One write per frame keeps a frame whole in the file even if the worker
	// dies between writes: a reader never sees half a header.
	buf := make([]byte, 0, frameHeader+len(p))
	buf = append(append(buf, hdr[:]...), p...)
	if _, err := s.f.Write(buf); err != nil {
		return fmt.Errorf("write spool: %w", err)
	}
	s.end += int64(len(p))
	s.size += int64(len(buf))
	s.broadcastLocked()
	return nil
}

// close marks the end of the output: readers return once they reach it.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.broadcastLocked()
	return s.f.Close()
}

func (s *spool) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *spool) state() (size int64, end int64, closed bool, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, s.end, s.closed, s.changed
}

// read calls fn with the output from offset from, waiting for more until the
// spool is closed and read to its end. fn must not keep c.Data.
func (s *spool) read(ctx context.Context, from int64, fn func(c devops.Chunk) error) error {
	if _, end, _, _ := s.state(); from > end {
		return fmt.Errorf("%w: offset %d is past the end of the output (%d bytes)", devops.ErrOutOfRange, from, end)
	}
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	var pos, offset int64 // file position and output offset of the next frame
	var hdr [frameHeader]byte
	buf := make([]byte, 64<<10)
	for {
		size, _, closed, changed := s.state()
		for pos < size {
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return fmt.Errorf("read spool frame at %d: %w", pos, err)
			}
			n := int64(binary.BigEndian.Uint32(hdr[1:]))
			pos += frameHeader + n
			if offset+n <= from {
				if _, err := r.Discard(int(n)); err != nil {
					return fmt.Errorf("skip spool frame: %w", err)
				}
				offset += n
				continue
			}
			if int64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			data := buf[:n]
			if _, err := io.ReadFull(r, data); err != nil {
				return fmt.Errorf("read spool data: %w", err)
			}
			c := devops.Chunk{Offset: offset, Stream: devops.Stream(hdr[0]), Data: data}
			if c.Offset < from {
				c.Data = c.Data[from-c.Offset:]
				c.Offset = from
			}
			offset += n
			if err := fn(c); err != nil {
				return err
			}
		}
		if closed {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// remove deletes the spool file.
func (s *spool) remove() error {
	s.close()
	return os.Remove(s.path)
}

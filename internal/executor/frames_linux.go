package executor

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devops-platform/devops"
)

// readerStall is how long the worker may not read with output waiting
// before the shim counts it as away and drops output it has not read.
const readerStall = 5 * time.Second

// markEvery is how often (in file bytes) the writer remembers a frame's
// start: the places it can drop up to. Dropping keeps up to this much more
// than it must; remembering every frame would cost memory per line.
const markEvery = 64 << 10

// frameWriter appends frames to the output file; each frame is one write,
// so a reader never sees a frame's header without the write that made it.
//
// With a bound (max > 0), the frames on disk stay under it: the oldest are
// dropped, their blocks released with a punched hole, so file positions and
// output offsets stay as they were and the file only looks large. What the
// worker has read (ReadFile) goes first and costs nothing: the manager has
// it, or will ask the worker again from where it stopped. While the worker
// keeps reading, the writer waits for it rather than drop more, which holds
// the command back like a full pipe; once the worker has not moved for
// readerStall with output waiting (the manager is unreachable, or the
// worker is gone), the oldest output goes whether it was read or not. That
// loss is counted by the manager when the worker's next read jumps over it.
type frameWriter struct {
	f     *os.File
	dir   string // the process's directory, for DroppedFile and ReadFile
	max   int64  // bytes of frames kept on disk; zero: no bound
	stall time.Duration
	log   *slog.Logger

	mu       sync.Mutex // serializes frames of both streams and protects the fields below
	pos      int64      // file size: where the next frame goes
	offset   int64      // output offset of the next frame
	kept     Dropped    // the oldest frame still on disk
	marks    []Dropped  // frame starts after kept, oldest first, markEvery apart
	cantDrop bool       // the file system cannot punch holes: the bound cannot be kept
	reader   *os.File   // ReadFile, once the worker made it
	read     int64      // how far the worker had read at the last look
	lookedAt int64      // pos at the last look
	moved    time.Time  // when the worker was last seen reading, or with nothing to read
}

// newFrameWriter writes frames to f, the output file of the process in dir,
// keeping at most max bytes of them on disk (zero: no bound).
func newFrameWriter(f *os.File, dir string, max int64, log *slog.Logger) *frameWriter {
	fw := &frameWriter{f: f, dir: dir, max: max, stall: readerStall, log: log, moved: time.Now()}
	if max > 0 {
		// Asked once, on the empty file: a file system that cannot punch
		// holes keeps everything rather than lose output for no disk.
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 1); err != nil {
			fw.cantDrop = true
			log.Warn("this file system cannot punch holes: the spool bound is not kept", "dir", dir, logKeyError, err)
		}
	}
	return fw
}

func (fw *frameWriter) stream(s devops.Stream) io.Writer {
	return streamWriter{fw: fw, s: s}
}

type streamWriter struct {
	fw *frameWriter
	s  devops.Stream
}

func (w streamWriter) Write(p []byte) (int, error) {
	fw := w.fw
	fw.mu.Lock()
	defer fw.mu.Unlock()
	written := 0
	for len(p) > 0 {
		k := len(p)
		if fw.max > 0 && !fw.cantDrop {
			// Bounded, a frame holds at most markEvery bytes: the writer
			// drops whole frames, so a larger one (reads are of up to
			// readBuffer) would keep that much more than the bound.
			k = min(k, markEvery)
		}
		if err := fw.frameLocked(w.s, p[:k]); err != nil {
			return written, err
		}
		written += k
		p = p[k:]
	}
	return written, nil
}

// frameLocked appends p as one frame of stream s.
func (fw *frameWriter) frameLocked(s devops.Stream, p []byte) error {
	if fw.max > 0 && !fw.cantDrop {
		fw.makeRoomLocked(int64(FrameHeader + len(p)))
		if fw.pos-fw.lastMarkLocked() >= markEvery {
			fw.marks = append(fw.marks, Dropped{Pos: fw.pos, Offset: fw.offset})
			fw.lookLocked() // now and then, so that a stall is timed from its start
		}
	}
	var h [FrameHeader]byte
	h[0] = byte(s)
	binary.BigEndian.PutUint32(h[1:], uint32(len(p)))
	if err := fw.writeFrame(h[:], p); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	fw.pos += int64(FrameHeader + len(p))
	fw.offset += int64(len(p))
	return nil
}

// writeFrame writes a frame's header and data with one writev: the data is
// not copied behind the header first (a copy of every byte of output).
func (fw *frameWriter) writeFrame(h, p []byte) error {
	rc, err := fw.f.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for {
			n, werr = unix.Writev(int(fd), [][]byte{h, p})
			if werr != unix.EINTR {
				return true // a regular file: never EAGAIN
			}
		}
	})
	if err == nil {
		err = werr
	}
	if err != nil { // a failed writev wrote nothing
		return err
	}
	if n == len(h)+len(p) {
		return nil
	}
	// A short write (a signal, a full disk): the rest as plain writes,
	// which report why they stop.
	if n < len(h) {
		if _, err := fw.f.Write(h[n:]); err != nil {
			return err
		}
		n = len(h)
	}
	_, err = fw.f.Write(p[n-len(h):])
	return err
}

// lastMarkLocked is the latest place the writer can drop up to: its newest
// mark, or the oldest frame kept when it has none.
func (fw *frameWriter) lastMarkLocked() int64 {
	if n := len(fw.marks); n > 0 {
		return fw.marks[n-1].Pos
	}
	return fw.kept.Pos
}

// waitForReader is how often a writer held back looks whether the worker
// read on.
const waitForReader = 5 * time.Millisecond

// makeRoomLocked makes room for a frame of n bytes: when the frames on disk
// would pass the bound, it drops the oldest down to three quarters of it,
// so that it does this once per quarter of the bound and not on every
// write. It drops only what the worker read, and waits for the worker to
// read on, until the worker stalled.
func (fw *frameWriter) makeRoomLocked(n int64) {
	// A frame larger than the bound is written once nothing else is left.
	for fw.pos+n-fw.kept.Pos > fw.max && fw.pos > fw.kept.Pos {
		fw.lookLocked()
		limit := fw.read
		if time.Since(fw.moved) >= fw.stall {
			limit = fw.pos
		}
		if fw.dropLocked(n, limit) {
			continue
		}
		fw.mu.Unlock()
		time.Sleep(waitForReader)
		fw.mu.Lock()
	}
}

// lookLocked reads how far the worker has read; moved is reset when it read
// on, or when it had read all there was at the last look.
func (fw *frameWriter) lookLocked() {
	if fw.reader == nil {
		f, err := os.Open(filepath.Join(fw.dir, ReadFile))
		if err != nil {
			return // no worker has read yet
		}
		fw.reader = f
	}
	var b [8]byte
	if _, err := fw.reader.ReadAt(b[:], 0); err != nil {
		return
	}
	read := int64(binary.BigEndian.Uint64(b[:]))
	if read != fw.read || read >= fw.lookedAt {
		fw.moved = time.Now()
	}
	fw.read, fw.lookedAt = read, fw.pos
}

// dropLocked drops the oldest frames, not past file position limit, down to
// three quarters of the bound with n more bytes to come; it reports whether
// it dropped any.
func (fw *frameWriter) dropLocked(n, limit int64) bool {
	i := 0
	for i < len(fw.marks) && fw.marks[i].Pos <= limit && fw.pos+n-fw.marks[i].Pos > fw.max-fw.max/4 {
		i++
	}
	var to Dropped
	switch {
	case i < len(fw.marks) && fw.marks[i].Pos <= limit:
		to = fw.marks[i]
		i++
	case i == len(fw.marks) && limit >= fw.pos:
		// No mark to stop at: all that is on disk goes; the next frame
		// starts at pos.
		to = Dropped{Pos: fw.pos, Offset: fw.offset}
	case i > 0:
		to = fw.marks[i-1]
	default:
		return false
	}
	fw.marks = append(fw.marks[:0], fw.marks[i:]...)
	if to.Pos <= fw.kept.Pos {
		return false
	}
	// The word first, then the hole: see DroppedFile.
	if err := writeJSONAtomic(filepath.Join(fw.dir, DroppedFile), to); err != nil {
		fw.log.Warn("record dropped output; keeping it", logKeyError, err)
		fw.cantDrop = true
		return false
	}
	// From the file's start, not from kept: a hole frees whole blocks only,
	// and the block that straddled the last hole's end must go this time.
	if err := unix.Fallocate(int(fw.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, to.Pos); err != nil {
		// The reader skips the range all the same; only the disk is not
		// given back this time.
		fw.log.Warn("release dropped output", logKeyError, err)
	}
	if unread := to.Pos - fw.read; unread > 0 {
		fw.log.Warn("spool bound reached with the worker away: dropped output it had not read", "bytes", unread, "bound", fw.max)
	}
	fw.kept = to
	return true
}

// empty reports whether no frame was written.
func (fw *frameWriter) empty() bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.pos == 0
}

// close releases ReadFile.
func (fw *frameWriter) close() {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.reader != nil {
		fw.reader.Close()
	}
}

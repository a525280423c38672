package executor

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/devops-platform/devops"
)

// markEvery is how often (in file bytes) the writer remembers a frame's
// start: the places it can drop up to. Dropping keeps up to this much more
// than it must; remembering every frame would cost memory per line.
const markEvery = 64 << 10

// frameWriter appends frames to the output file; each frame is one write,
// so a reader never sees a frame's header without the write that made it.
//
// With a bound (max > 0), once the frames on disk exceed it, the oldest are
// dropped: their blocks are released with a punched hole, so file positions
// and output offsets stay as they were and the file only looks large. The
// shim drops whether or not the worker sent them: the worker may be gone,
// and the manager already holds whatever was sent. What was not sent is
// lost, and the manager counts it when the worker's next read jumps over it.
type frameWriter struct {
	f   *os.File
	dir string // the process's directory, for DroppedFile
	max int64  // bytes of frames kept on disk; zero: no bound
	log *slog.Logger

	mu       sync.Mutex // serializes frames of both streams and protects the fields below
	buf      []byte
	pos      int64     // file size: where the next frame goes
	offset   int64     // output offset of the next frame
	kept     Dropped   // the oldest frame still on disk
	marks    []Dropped // frame starts after kept, oldest first, markEvery apart
	cantDrop bool      // the file system cannot punch holes: the bound cannot be kept
}

// newFrameWriter writes frames to f, the output file of the process in dir,
// keeping at most max bytes of them on disk (zero: no bound).
func newFrameWriter(f *os.File, dir string, max int64, log *slog.Logger) *frameWriter {
	fw := &frameWriter{f: f, dir: dir, max: max, log: log}
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
	if len(p) == 0 {
		return 0, nil
	}
	fw := w.fw
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.max > 0 {
		fw.dropLocked(int64(FrameHeader + len(p)))
		if n := len(fw.marks); n == 0 && fw.pos-fw.kept.Pos >= markEvery || n > 0 && fw.pos-fw.marks[n-1].Pos >= markEvery {
			fw.marks = append(fw.marks, Dropped{Pos: fw.pos, Offset: fw.offset})
		}
	}
	fw.buf = append(fw.buf[:0], byte(w.s), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(fw.buf[1:FrameHeader], uint32(len(p)))
	fw.buf = append(fw.buf, p...)
	if _, err := fw.f.Write(fw.buf); err != nil {
		return 0, fmt.Errorf("write output: %w", err)
	}
	fw.pos += int64(len(fw.buf))
	fw.offset += int64(len(p))
	return len(p), nil
}

// dropLocked makes room for a frame of n bytes: when the frames on disk
// would pass the bound, it drops the oldest down to three quarters of it,
// so that it does this once per quarter of the bound and not on every write.
func (fw *frameWriter) dropLocked(n int64) {
	if fw.cantDrop || fw.pos+n-fw.kept.Pos <= fw.max {
		return
	}
	i := 0
	for i < len(fw.marks) && fw.pos+n-fw.marks[i].Pos > fw.max-fw.max/4 {
		i++
	}
	// With no mark left, all that is on disk goes: the next frame starts
	// at pos.
	to := Dropped{Pos: fw.pos, Offset: fw.offset}
	if i < len(fw.marks) {
		to = fw.marks[i]
		i++
	}
	fw.marks = append(fw.marks[:0], fw.marks[i:]...)
	if to.Pos <= fw.kept.Pos {
		return
	}
	// The word first, then the hole: see DroppedFile.
	if err := writeJSONAtomic(filepath.Join(fw.dir, DroppedFile), to); err != nil {
		fw.log.Warn("record dropped output; keeping it", logKeyError, err)
		return
	}
	// From the file's start, not from kept: a hole frees whole blocks only,
	// and the block that straddled the last hole's end must go this time.
	err := unix.Fallocate(int(fw.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, to.Pos)
	if err != nil {
		// The reader skips the range all the same; only the disk is not
		// given back this time.
		fw.log.Warn("release dropped output", logKeyError, err)
	} else {
		fw.log.Warn("spool bound reached: dropped the oldest output", "bytes", to.Offset-fw.kept.Offset, "bound", fw.max)
	}
	fw.kept = to
}

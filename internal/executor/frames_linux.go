package executor

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/devops-platform/devops"
)

// frameWriter appends frames to the output file; each frame is one write,
// so a reader never sees a frame's header without the write that made it.
type frameWriter struct {
	mu  sync.Mutex // serializes frames of both streams
	f   *os.File
	buf []byte
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
	fw.buf = append(fw.buf[:0], byte(w.s), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(fw.buf[1:FrameHeader], uint32(len(p)))
	fw.buf = append(fw.buf, p...)
	if _, err := fw.f.Write(fw.buf); err != nil {
		return 0, fmt.Errorf("write output: %w", err)
	}
	return len(p), nil
}

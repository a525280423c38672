package executor

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// output copies a process's stdout and stderr pipes to the caller's writers,
// cutting both together at a byte limit.
type output struct {
	log  *slog.Logger
	wg   sync.WaitGroup
	max  int64 // zero: no limit
	pipe [2]*os.File

	mu       sync.Mutex // protects the writers (which may be one) and the fields below
	w        [2]io.Writer
	written  int64
	cut      bool
	writeErr bool
}

func newOutput(stdout, stderr io.Writer, max int64, log *slog.Logger) *output {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	return &output{log: log, max: max, w: [2]io.Writer{stdout, stderr}}
}

// copy starts copying the read ends of the two pipes; wait ends it.
func (o *output) copy(stdout, stderr *os.File) {
	o.pipe = [2]*os.File{stdout, stderr}
	for i := range o.pipe {
		o.wg.Go(func() { o.drain(i) })
	}
}

// drain reads one pipe until EOF. It keeps reading past the limit and past
// a failing writer so the process never blocks on a full pipe.
func (o *output) drain(i int) {
	// Small until a read fills it: most commands write little, and two
	// buffers of readBuffer per command were half a MiB to zero and
	// collect in a shim that runs one command after another.
	buf := make([]byte, 4<<10)
	for {
		n, err := o.pipe[i].Read(buf)
		if n > 0 {
			o.write(i, buf[:n])
		}
		if n == len(buf) && len(buf) < readBuffer {
			buf = make([]byte, readBuffer)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				o.log.Warn("read output", logKeyError, err)
			}
			return
		}
	}
}

func (o *output) write(i int, b []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cut {
		return
	}
	if o.max > 0 && o.written+int64(len(b)) > o.max {
		b = b[:o.max-o.written]
		o.cut = true
	}
	o.written += int64(len(b))
	if len(b) > 0 {
		o.writeLocked(i, b)
	}
	if o.cut {
		o.writeLocked(1, fmt.Appendf(nil, "\n[devops: output truncated at %d bytes]\n", o.max))
	}
}

func (o *output) writeLocked(i int, b []byte) {
	if _, err := o.w[i].Write(b); err != nil && !o.writeErr {
		o.writeErr = true // once: a broken writer would log on every chunk
		o.log.Warn("write output", logKeyError, err)
	}
}

// wait waits for both pipes to reach EOF, or for delay, after which it
// closes them: whatever still holds a write end escaped the kill.
func (o *output) wait(delay time.Duration) {
	done := make(chan struct{})
	go func() {
		o.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		o.log.Warn("output still open after the process ended; closing it")
	}
	for _, f := range o.pipe {
		f.Close()
	}
	<-done
}

// truncated reports whether the output was cut at its limit.
func (o *output) truncated() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cut
}

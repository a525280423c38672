package executor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/devops-platform/devops"
)

// readFrames parses the frames of the output file in dir from file position
// pos, whose first frame holds output offset offset, and returns the output.
func readFrames(tb testing.TB, dir string, pos int64) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(dir, OutputFile))
	if err != nil {
		tb.Fatal(err)
	}
	b = b[pos:]
	var out []byte
	for len(b) > 0 {
		if len(b) < FrameHeader {
			tb.Fatalf("short frame header at the end (%d bytes)", len(b))
		}
		n := int(binary.BigEndian.Uint32(b[1:FrameHeader]))
		if s := devops.Stream(b[0]); s != devops.Stdout && s != devops.Stderr {
			tb.Fatalf("frame with stream %d: a hole or garbage was read as a frame", b[0])
		}
		out = append(out, b[FrameHeader:FrameHeader+n]...)
		b = b[FrameHeader+n:]
	}
	return out
}

// TestFrameWriterBound: with nobody reading, the oldest output goes and the
// disk stays within the bound; DroppedFile says where output starts again.
func TestFrameWriterBound(t *testing.T) {
	tests := []struct {
		name  string
		max   int64
		lines int
		line  int // bytes per write
	}{
		{"no bound", 0, 2000, 100},
		{"under the bound", 1 << 20, 2000, 100},
		{"small writes past the bound", 256 << 10, 20000, 100},
		{"writes larger than a mark apart", 256 << 10, 200, 100 << 10},
		{"one write larger than the bound", 64 << 10, 3, 100 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f, err := os.OpenFile(filepath.Join(dir, OutputFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fw := newFrameWriter(f, dir, tt.max, slog.New(slog.DiscardHandler))
			// No worker reads here: it counts as away at once.
			fw.stall = 0
			if fw.cantDrop {
				t.Skip("the temporary directory's file system cannot punch holes")
			}
			var all []byte
			for i := range tt.lines {
				line := bytes.Repeat([]byte{'a' + byte(i%26)}, tt.line)
				copy(line, fmt.Sprintf("%d\n", i))
				s := devops.Stdout
				if i%3 == 0 {
					s = devops.Stderr
				}
				if _, err := fw.stream(s).Write(line); err != nil {
					t.Fatal(err)
				}
				all = append(all, line...)
				if i%50 != 49 && i != tt.lines-1 {
					continue
				}
				// Synced: blocks reserved for unwritten pages count too.
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				var st syscall.Stat_t
				if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
					t.Fatal(err)
				}
				// What is allocated stays within the bound, give or take a
				// frame and a file system block each side of the hole.
				if tt.max > 0 && st.Blocks*512 > tt.max+int64(tt.line)+FrameHeader+8<<10 {
					t.Fatalf("after %d writes %d bytes are allocated, bound %d (kept %+v, end %d)", i+1, st.Blocks*512, tt.max, fw.kept, fw.pos)
				}
			}
			var d Dropped
			err = readJSON(filepath.Join(dir, DroppedFile), &d)
			if tt.max == 0 || int64(len(all)) < tt.max {
				if !os.IsNotExist(err) {
					t.Fatalf("%s: got %v (%+v), want no file", DroppedFile, err, d)
				}
				if got := readFrames(t, dir, 0); !bytes.Equal(got, all) {
					t.Fatalf("output differs from what was written (%d bytes, want %d)", len(got), len(all))
				}
				return
			}
			if err != nil {
				t.Fatalf("read %s: %v", DroppedFile, err)
			}
			if d.Offset <= 0 || d.Offset > int64(len(all)) {
				t.Fatalf("dropped up to offset %d of %d bytes", d.Offset, len(all))
			}
			if got := readFrames(t, dir, d.Pos); !bytes.Equal(got, all[d.Offset:]) {
				t.Fatalf("output from the dropped mark (pos %d, offset %d) differs from what was written", d.Pos, d.Offset)
			}
		})
	}
}

// TestFrameWriterWaitsForReader: while the worker reads on, nothing it has
// not read is dropped: the writer waits for it, the disk stays within the
// bound, and the reader gets every byte.
func TestFrameWriterWaitsForReader(t *testing.T) {
	const bound = 256 << 10
	dir := t.TempDir()
	path := filepath.Join(dir, OutputFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fw := newFrameWriter(f, dir, bound, slog.New(slog.DiscardHandler))
	if fw.cantDrop {
		t.Skip("the temporary directory's file system cannot punch holes")
	}
	fw.stall = time.Hour // the reader below never stalls for this long
	defer fw.close()

	var want []byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 4000 {
			line := bytes.Repeat([]byte{'a' + byte(i%26)}, 1000)
			copy(line, fmt.Sprintf("%d\n", i))
			want = append(want, line...)
			if _, err := fw.stream(devops.Stdout).Write(line); err != nil {
				t.Error(err)
				return
			}
		}
	}()

	// A slow reader, as the worker: it reads frames in order and says how
	// far it got in ReadFile.
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	pos, err := os.OpenFile(filepath.Join(dir, ReadFile), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer pos.Close()
	var (
		got     []byte
		readPos int64
		buf     = make([]byte, 8<<10) // slower than the writer on purpose
		pending []byte
		most    int64
	)
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, _ := in.ReadAt(buf, readPos)
		readPos += int64(n)
		pending = append(pending, buf[:n]...)
		for len(pending) >= FrameHeader {
			size := int(binary.BigEndian.Uint32(pending[1:FrameHeader]))
			if len(pending) < FrameHeader+size {
				break
			}
			if s := devops.Stream(pending[0]); s != devops.Stdout {
				t.Fatalf("frame at %d has stream %d: a hole was read, output dropped before it was read", readPos-int64(len(pending)), pending[0])
			}
			got = append(got, pending[FrameHeader:FrameHeader+size]...)
			pending = pending[FrameHeader+size:]
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(readPos-int64(len(pending))))
		if _, err := pos.WriteAt(b[:], 0); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(in.Fd()), &st); err == nil {
			most = max(most, st.Blocks*512)
		}
		select {
		case <-done:
			if n == 0 && len(pending) == 0 {
				if !bytes.Equal(got, want) {
					t.Fatalf("the reader got %d bytes, want the %d written", len(got), len(want))
				}
				if err := readJSON(filepath.Join(dir, DroppedFile), new(Dropped)); err != nil {
					t.Errorf("nothing was dropped (%v): the test did not reach the bound", err)
				}
				// Unsynced blocks count here: allow a quarter more.
				if most > bound+bound/4+64<<10 {
					t.Errorf("up to %d bytes allocated, bound %d", most, bound)
				}
				return
			}
		default:
			if n == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stuck: read %d bytes of %d", len(got), len(want))
		}
	}
}

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

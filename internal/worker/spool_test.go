package worker

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
)

// appendFrame writes one frame as a shim does: one write per frame.
func appendFrame(tb testing.TB, f *os.File, s devops.Stream, data string) {
	tb.Helper()
	b := make([]byte, executor.FrameHeader, executor.FrameHeader+len(data))
	b[0] = byte(s)
	binary.BigEndian.PutUint32(b[1:], uint32(len(data)))
	if _, err := f.Write(append(b, data...)); err != nil {
		tb.Fatal(err)
	}
}

func newTestSpool(tb testing.TB) (*spool, *os.File, chan struct{}) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "p")
	if err := os.Mkdir(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, executor.OutputFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	done := make(chan struct{})
	files := newFileWatcher()
	tb.Cleanup(files.close)
	return newSpool(dir, done, files.watch), f, done
}

// TestSpoolFollowsAnotherWriter reads a file another writer appends to,
// from several offsets, and ends once done is closed.
func TestSpoolFollowsAnotherWriter(t *testing.T) {
	sp, f, done := newTestSpool(t)
	appendFrame(t, f, devops.Stdout, "hello ")
	tests := []struct {
		name string
		from int64
		want string
	}{
		{"start", 0, "hello world\nerr"},
		{"mid frame", 3, "lo world\nerr"},
		{"frame edge", 6, "world\nerr"},
		{"end", 15, ""},
	}
	var wg sync.WaitGroup
	got := make([]string, len(tests))
	errs := make([]error, len(tests))
	for i, tt := range tests {
		wg.Go(func() {
			var b strings.Builder
			errs[i] = sp.read(t.Context(), tt.from, func(c devops.Chunk) error {
				if c.Offset != tt.from+int64(b.Len()) {
					t.Errorf("%s: chunk at %d after %d bytes from %d", tt.name, c.Offset, b.Len(), tt.from)
				}
				b.Write(c.Data)
				return nil
			})
			got[i] = b.String()
		})
	}
	appendFrame(t, f, devops.Stdout, "world\n")
	appendFrame(t, f, devops.Stderr, "err")
	close(done)
	wg.Wait()
	for i, tt := range tests {
		if errs[i] != nil || got[i] != tt.want {
			t.Errorf("read(%d) = %q, %v; want %q", tt.from, got[i], errs[i], tt.want)
		}
	}
	if err := sp.read(t.Context(), 16, func(devops.Chunk) error { return nil }); !errors.Is(err, devops.ErrOutOfRange) {
		t.Errorf("read past the end = %v, want ErrOutOfRange", err)
	}
}

// TestSpoolWakes: a reader sees a frame written after it started
// (waiting, most often), and returns once done is closed, each well within a deadline (how
// soon is for the benchmarks, not a test on a shared machine).
func TestSpoolWakes(t *testing.T) {
	sp, f, done := newTestSpool(t)
	seen := make(chan struct{}, 1)
	ended := make(chan error, 1)
	waiting := make(chan struct{})
	go func() {
		close(waiting)
		ended <- sp.read(t.Context(), 0, func(devops.Chunk) error {
			select {
			case seen <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	<-waiting
	appendFrame(t, f, devops.Stdout, "x")
	select {
	case <-seen:
	case <-time.After(5 * time.Second):
		t.Fatal("a frame written after the reader started was not seen")
	}
	close(done)
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("read = %v after done", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not return after done")
	}
}

// TestSpoolLargeFrames reads frames larger than a read and frames that
// straddle reads, from a finished spool: every byte arrives once, in order,
// with its stream.
func TestSpoolLargeFrames(t *testing.T) {
	sp, f, done := newTestSpool(t)
	sizes := []int{readSize + 7, 3, readSize - 2, 100 << 10, 2*readSize - 1, 1, readSize}
	var want [2]strings.Builder
	for i, n := range sizes {
		s := devops.Stream(1 + i%2)
		data := strings.Repeat(string(rune('a'+i)), n)
		appendFrame(t, f, s, data)
		want[s-1].WriteString(data)
	}
	close(done)
	var got [2]strings.Builder
	next := int64(0)
	err := sp.read(t.Context(), 0, func(c devops.Chunk) error {
		if c.Offset != next {
			t.Fatalf("chunk at %d, want %d", c.Offset, next)
		}
		next = c.End()
		got[c.Stream-1].Write(c.Data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i].String() != want[i].String() {
			t.Errorf("stream %d: got %d bytes, want %d (or the bytes differ)", i+1, got[i].Len(), want[i].Len())
		}
	}
}

// TestSpoolGrowsWithOutput follows a spool whose first frame is small (the
// reader's buffer starts small) and whose next frame, larger than a read,
// arrives in two writes, a partial frame between them: every byte arrives
// once, in order.
func TestSpoolGrowsWithOutput(t *testing.T) {
	sp, f, done := newTestSpool(t)
	first := make(chan struct{})
	var got strings.Builder
	ended := make(chan error, 1)
	go func() {
		var once sync.Once
		ended <- sp.read(t.Context(), 0, func(c devops.Chunk) error {
			if c.Offset != int64(got.Len()) {
				t.Errorf("chunk at %d after %d bytes", c.Offset, got.Len())
			}
			got.Write(c.Data)
			once.Do(func() { close(first) })
			return nil
		})
	}()
	appendFrame(t, f, devops.Stdout, "x")
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("the first frame was not read within 10s")
	}
	big := strings.Repeat("b", readSize+4<<10)
	frame := make([]byte, executor.FrameHeader, executor.FrameHeader+len(big))
	frame[0] = byte(devops.Stdout)
	binary.BigEndian.PutUint32(frame[1:], uint32(len(big)))
	frame = append(frame, big...)
	for _, part := range [][]byte{frame[:3<<10], frame[3<<10:]} {
		if _, err := f.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	appendFrame(t, f, devops.Stdout, "end")
	close(done)
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
	if want := "x" + big + "end"; got.String() != want {
		t.Errorf("read %d bytes, want %d (or the bytes differ)", got.Len(), len(want))
	}
}

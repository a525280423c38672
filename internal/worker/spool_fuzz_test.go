package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/devops-platform/devops"
)

// FuzzSpoolRead feeds the spool reader any file content (a spool a crashed
// or hostile shim left behind) and any offset: it must end, never panic, and
// hand out contiguous chunks of known streams that start at the offset.
func FuzzSpoolRead(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o', 2, 0, 0, 0, 1, '!'}, int64(0))
	f.Add([]byte{1, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}, int64(3))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 'x'}, int64(0)) // a length past the end
	f.Add([]byte{9, 0, 0, 0, 0}, int64(0))                  // an unknown stream, empty
	f.Add([]byte{}, int64(7))
	f.Fuzz(func(t *testing.T, data []byte, from int64) {
		if from < 0 {
			from = -from
		}
		sp, file, done := newTestSpool(t)
		if _, err := file.Write(data); err != nil {
			t.Fatal(err)
		}
		close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		next, total := from, 0
		err := sp.read(ctx, from, func(c devops.Chunk) error {
			if c.Offset != next {
				t.Fatalf("chunk at %d, want %d", c.Offset, next)
			}
			if c.Stream != devops.Stdout && c.Stream != devops.Stderr {
				t.Fatalf("chunk of unknown stream %d", c.Stream)
			}
			next = c.End()
			total += len(c.Data)
			return nil
		})
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("read did not end on a finished spool")
		}
		if err != nil && !errors.Is(err, devops.ErrOutOfRange) && !errors.Is(err, errCorruptSpool) {
			t.Fatalf("read = %v", err)
		}
		if total > len(data) {
			t.Fatalf("read %d bytes out of a %d-byte file", total, len(data))
		}
	})
}

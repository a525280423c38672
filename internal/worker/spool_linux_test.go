package worker

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
)

// TestSpoolSkipsDropped: output the shim dropped (a punched hole, reading as
// zeros, and the mark of where frames start again) is jumped over, and the
// chunks after it keep their offsets, so the manager sees the gap.
func TestSpoolSkipsDropped(t *testing.T) {
	sp, f, done := newTestSpool(t)
	appendFrame(t, f, devops.Stdout, "aaaa")
	appendFrame(t, f, devops.Stderr, "bbbb")
	appendFrame(t, f, devops.Stdout, "cccc")
	close(done)
	mark := executor.Dropped{Pos: 2 * (executor.FrameHeader + 4), Offset: 8}
	b, _ := json.Marshal(mark)
	if err := os.WriteFile(filepath.Join(sp.dir, executor.DroppedFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, mark.Pos); err != nil {
		t.Skipf("cannot punch a hole here: %v", err)
	}
	tests := []struct {
		from     int64
		wantFrom int64
		want     string
	}{
		{0, 8, "cccc"},
		{5, 8, "cccc"},
		{8, 8, "cccc"},
		{10, 10, "cc"},
	}
	for _, tt := range tests {
		var (
			got   strings.Builder
			first = int64(-1)
		)
		err := sp.read(t.Context(), tt.from, func(c devops.Chunk) error {
			if first < 0 {
				first = c.Offset
			}
			got.Write(c.Data)
			return nil
		})
		if err != nil || first != tt.wantFrom || got.String() != tt.want {
			t.Errorf("read(%d) = %q from %d, %v; want %q from %d", tt.from, got.String(), first, err, tt.want, tt.wantFrom)
		}
	}
}

package executor

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestOutputPipeSize(t *testing.T) {
	r, w, err := outputPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	n, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != pipeSize {
		t.Errorf("output pipe holds %d bytes, want %d", n, pipeSize)
	}
}

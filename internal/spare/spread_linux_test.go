package spare

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSpreadMarksTheDirectory checks that Spread sets the attribute and
// keeps the directory's other ones, and that a second call changes nothing.
func TestSpreadMarksTheDirectory(t *testing.T) {
	dir := t.TempDir()
	flags := func() uint32 {
		t.Helper()
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fl, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
		if err != nil {
			t.Fatal(err)
		}
		return fl
	}
	initial := flags()
	err := Spread(dir)
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
		t.Skipf("the file system of %s has no top-directory attribute: %v", dir, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	before := flags()
	if before != initial|fsTopdirFL {
		t.Fatalf("flags after Spread = %#x, want %#x", before, initial|fsTopdirFL)
	}
	if err := Spread(dir); err != nil {
		t.Fatalf("Spread again: %v", err)
	}
	if after := flags(); after != before {
		t.Errorf("flags after a second Spread = %#x, want %#x", after, before)
	}
	if err := Spread(dir + "/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Spread(missing) = %v, want not exist", err)
	}
}

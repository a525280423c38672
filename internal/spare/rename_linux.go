package spare

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames src to dst unless dst exists (an error for which
// os.IsExist holds).
func renameNoReplace(src, dst string) error {
	for {
		err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
		}
		return nil
	}
}

// isUnsupported says whether err means the file system (or the kernel)
// has no rename that keeps an existing destination.
func isUnsupported(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)
}

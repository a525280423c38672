//go:build !race

package manager

import (
	"syscall"
	"unsafe"
)

// sysRead is read(2) without the runtime's system-call entry (see
// rawReadConn). p is not empty.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

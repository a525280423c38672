//go:build race

package manager

import "syscall"

// sysRead is syscall.Read under the race detector: its bookkeeping tells
// the detector that what a goroutine of this process wrote into the other
// end of a connection happened before the read (grpc-go's own raw reads use
// it for that reason); a bare system call would leave that order out, and
// the in-process tests run client, manager and workers in one process.
// syscall.Read's error is always an Errno.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	errno, _ := err.(syscall.Errno)
	return n, errno
}

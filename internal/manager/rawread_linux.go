package manager

import (
	"io"
	"net"
	"os"
	"syscall"

	"google.golang.org/grpc/mem"
)

// The manager reads its gRPC connections with a bare read system call, not
// through the runtime's system-call entry, because that entry wakes the
// runtime's monitor thread (sysmon) when every P was idle, and a woken sysmon
// polls every 20 µs for a millisecond and more before it sleeps again. An
// idle manager with thousands of workers wakes for a batch of reports ten
// times a second, and each batch's first read restarted that polling. The
// entry's bookkeeping is there for calls that block (so that sysmon can hand
// their P to another thread), and a read of a non-blocking socket never
// blocks. On the AMD VM, 10,000 simulated workers, five interleaved pairs
// over a minute: sysmon's sleeps 16,000 → 8,700 a minute, the manager's CPU
// 10% less at the mean and less in every pair (bench/FINDINGS.md).
//
// gRPC reads a plaintext connection through ReadOnReady when the connection
// has it (grpc-go's internal/transport/readyreader; it looks for the method,
// and otherwise reads raw only from a *net.TCPConn itself): the buffer is
// taken from gRPC's pool once data is there, so an idle connection holds
// none. Without it every idle worker's connection would pin a 32 KiB read
// buffer. Over TLS, crypto/tls reads through Read.

// rawReads makes l's TCP connections read with a bare read system call.
func rawReads(l net.Listener) net.Listener { return rawReadListener{l} }

type rawReadListener struct{ net.Listener }

func (l rawReadListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	return &rawReadConn{TCPConn: tc, rc: rc}, nil
}

// rawReadConn is a TCP connection whose reads skip the runtime's
// system-call entry; everything else is the *net.TCPConn's.
type rawReadConn struct {
	*net.TCPConn
	rc syscall.RawConn
}

// Read reads into p as net.Conn's Read does: it waits for data in the
// runtime's poller, honours the read deadline (os.ErrDeadlineExceeded) and
// returns io.EOF once the peer closed.
func (c *rawReadConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return c.read(func(fd uintptr) (int, syscall.Errno) { return sysRead(fd, p) })
}

// ReadOnReady waits for data, then takes a buffer of bufSize (positive) from
// pool and reads into it; the caller puts the buffer back. A read that finds
// nothing puts its buffer back before waiting, so a waiting connection holds
// none.
func (c *rawReadConn) ReadOnReady(bufSize int, pool mem.BufferPool) (*[]byte, int, error) {
	var buf *[]byte
	n, err := c.read(func(fd uintptr) (int, syscall.Errno) {
		buf = pool.Get(bufSize)
		n, errno := sysRead(fd, *buf)
		if errno != 0 || n == 0 {
			pool.Put(buf)
			buf = nil
		}
		return n, errno
	})
	if err != nil {
		return nil, 0, err
	}
	return buf, n, nil
}

// read calls once until it reads or fails, waiting in the poller while it
// finds nothing to read.
func (c *rawReadConn) read(once func(fd uintptr) (int, syscall.Errno)) (int, error) {
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = once(fd)
			switch errno {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait in the poller, then try again
			}
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

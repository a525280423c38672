package manager

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialWorkerLetsTheKernelWatch: connections to workers carry TCP
// keepalive after --worker-timeout of silence and a user timeout as long
// (at least 5 s), so the kernel closes one to a worker that is gone.
func TestDialWorkerLetsTheKernelWatch(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	tests := []struct {
		workerTimeout      time.Duration
		wantIdle, wantUser int // seconds, milliseconds
	}{
		{7 * time.Second, 7, 7000},
		{time.Second, 5, 5000},
	}
	for _, tt := range tests {
		m := &Manager{cfg: Config{WorkerTimeout: tt.workerTimeout}}
		c, err := m.dialWorker(t.Context(), lis.Addr().String())
		if err != nil {
			t.Fatalf("dialWorker: %v", err)
		}
		defer c.Close()
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		opts := []struct {
			name       string
			level, opt int
			want       int
		}{
			{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, tt.wantIdle},
			{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 1},
			{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3},
			{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, tt.wantUser},
		}
		for _, o := range opts {
			var got int
			var gerr error
			if err := raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), o.level, o.opt) }); err != nil || gerr != nil {
				t.Fatalf("getsockopt %s: %v %v", o.name, err, gerr)
			}
			if got != o.want {
				t.Errorf("worker timeout %v: %s = %d, want %d", tt.workerTimeout, o.name, got, o.want)
			}
		}
	}
}

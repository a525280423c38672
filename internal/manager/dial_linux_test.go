package manager

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialWorkerLetsTheKernelWatch: connections to workers carry TCP
// keepalive after --worker-timeout of silence and a user timeout of
// --worker-timeout, so the kernel closes one to a worker that is gone.
func TestDialWorkerLetsTheKernelWatch(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	m := &Manager{cfg: Config{WorkerTimeout: 7 * time.Second}}
	c, err := m.dialWorker(t.Context(), lis.Addr().String())
	if err != nil {
		t.Fatalf("dialWorker: %v", err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE (s)", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 7},
		{"TCP_KEEPINTVL (s)", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 1},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3},
		{"TCP_USER_TIMEOUT (ms)", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 7000},
	}
	for _, tt := range tests {
		var got int
		var gerr error
		if err := raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), tt.level, tt.opt) }); err != nil || gerr != nil {
			t.Fatalf("getsockopt %s: %v %v", tt.name, err, gerr)
		}
		if got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, got, tt.want)
		}
	}
}

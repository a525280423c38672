//go:build unix && !linux

package executor

import (
	"syscall"
	"testing"
)

// The API's signal numbers are Linux's; this OS's may differ.
func TestSignalsKeepTheirNames(t *testing.T) {
	for wire, local := range map[syscall.Signal]syscall.Signal{
		9: syscall.SIGKILL, 10: syscall.SIGUSR1, 12: syscall.SIGUSR2, 15: syscall.SIGTERM, 18: syscall.SIGCONT, 19: syscall.SIGSTOP,
	} {
		if got := localSignal(wire); got != local {
			t.Errorf("localSignal(%d) = %d, want %d", wire, got, local)
		}
		if got := wireSignal(local); got != wire {
			t.Errorf("wireSignal(%d) = %d, want %d", local, got, wire)
		}
	}
}

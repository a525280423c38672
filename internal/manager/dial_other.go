//go:build !linux

package manager

import (
	"syscall"
	"time"
)

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist: the
// keepalive probes alone close a connection to a worker that is gone.
func setUserTimeout(syscall.RawConn, time.Duration) error { return nil }

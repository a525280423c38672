package devops

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// Signals cross the API by their Linux numbers, whatever OS the client, the
// manager or the worker runs on. Most numbers agree across systems, but not
// all: SIGUSR1 is 10 on Linux and 30 on macOS, so a client on a Mac that
// sent its own number for `kill --signal USR1` would deliver SIGPWR to a
// command on a Linux worker.
var linuxSignals = [...]string{
	1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 5: "TRAP", 6: "ABRT", 7: "BUS", 8: "FPE",
	9: "KILL", 10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM",
	16: "STKFLT", 17: "CHLD", 18: "CONT", 19: "STOP", 20: "TSTP", 21: "TTIN", 22: "TTOU",
	23: "URG", 24: "XCPU", 25: "XFSZ", 26: "VTALRM", 27: "PROF", 28: "WINCH", 29: "IO",
	30: "PWR", 31: "SYS",
}

// maxSignal is the highest Linux signal number (SIGRTMAX).
const maxSignal = 64

// ParseSignal reads a signal's name ("TERM", "SIGTERM", "term") or Linux
// number ("15") into the number the API carries.
func ParseSignal(s string) (syscall.Signal, error) {
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG")
	for n, known := range linuxSignals {
		if known != "" && known == name {
			return syscall.Signal(n), nil
		}
	}
	if n, err := strconv.Atoi(name); err == nil && n > 0 && n <= maxSignal {
		return syscall.Signal(n), nil
	}
	return 0, fmt.Errorf("%w: unknown signal %q", ErrInvalid, s)
}

// SignalName names a signal the API carried: "SIGTERM", or "signal 40" for a
// real-time signal.
func SignalName(sig syscall.Signal) string {
	if sig > 0 && int(sig) < len(linuxSignals) && linuxSignals[sig] != "" {
		return "SIG" + linuxSignals[sig]
	}
	return fmt.Sprintf("signal %d", int(sig))
}

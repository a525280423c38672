//go:build unix && !linux

package executor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/devops-platform/devops"
)

// platform is the minimal fallback for Unix systems other than Linux: a
// session per process, no cgroups, no namespaces, no user switch.
type platform struct{}

// checkReach has nothing to check: no user is switched here.
func (pl *platform) checkReach(root string) {}

func newPlatform(cfg Config, log *slog.Logger) (*platform, error) {
	log.Warn("executor runs without isolation on this OS", logKeyMissing, "cgroups; namespaces; run-as")
	return &platform{}, nil
}

func (pl *platform) close() error { return nil }

func (pl *platform) fingerprint(fp *devops.Fingerprint) {}

func (pl *platform) check(spec devops.Spec) error {
	lim := spec.Limits
	if lim.MemoryBytes > 0 || lim.CPUs > 0 || lim.Pids > 0 {
		return fmt.Errorf("%w: memory, cpu and pids limits need cgroups (Linux)", devops.ErrInvalid)
	}
	return nil
}

func (pl *platform) lookupUser(s string) (*credential, error) {
	if s == "" {
		return nil, nil
	}
	cred, err := parseUser(s)
	if err != nil {
		return nil, err
	}
	if cred.uid == uint32(os.Geteuid()) {
		return nil, nil
	}
	return nil, fmt.Errorf("%w: running as user %q is not supported on this OS", devops.ErrInvalid, s)
}

func (pl *platform) start(ctx context.Context, l launch, log *slog.Logger) (sandbox, error) {
	return startDirect(l, log)
}

// rusage reads CPU time and peak RSS (bytes on BSD and macOS).
func rusage(ru *syscall.Rusage) usage {
	if ru == nil {
		return usage{}
	}
	return usage{
		cpu:  time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		peak: int64(ru.Maxrss),
	}
}

// RunInit exists so the devops binary builds everywhere; only Linux runs
// commands through an init.
func RunInit(args []string) int {
	fmt.Fprintln(os.Stderr, "devops: __init is only used on Linux")
	return 2
}

// StartSupervised needs Linux (pidfds); elsewhere it refuses.
func (e *Executor) StartSupervised(ctx context.Context, id devops.ProcessID, spec devops.Spec, dir string) (*Process, error) {
	return nil, fmt.Errorf("start %s: %w: supervised processes need Linux", id, devops.ErrInvalid)
}

// Adopt finds nothing outside Linux.
func (e *Executor) Adopt(id devops.ProcessID, dir string) (*Process, error) {
	return nil, fmt.Errorf("adopt %s: %w", id, devops.ErrNotFound)
}

// StartedAt is when the process started.
func (p *Process) StartedAt() time.Time { return p.started }

// Pooled is false: there is no warm pool outside Linux.
func (p *Process) Pooled() bool { return false }

type shimHandle struct{}

// pool is empty: warm shims serve StartSupervised, which needs Linux.
type pool struct{}

func (p *pool) close() {}

func (p *pool) idleCount() int { return 0 }

func (e *Executor) startPool(size int) {}

func (h *shimHandle) terminate(sig syscall.Signal, grace time.Duration) {}

// readBuffer is how much of a command's output is read at a time.
const readBuffer = 32 << 10

// outputPipe makes a pipe for a command's stdout or stderr.
func outputPipe() (r, w *os.File, err error) { return os.Pipe() }

// signalNames are this OS's signals by the names the API's Linux numbers
// have: some numbers differ (SIGUSR1 is 30 on macOS, 10 on Linux).
var signalNames = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT, "SIGILL": syscall.SIGILL,
	"SIGTRAP": syscall.SIGTRAP, "SIGABRT": syscall.SIGABRT, "SIGBUS": syscall.SIGBUS, "SIGFPE": syscall.SIGFPE,
	"SIGKILL": syscall.SIGKILL, "SIGUSR1": syscall.SIGUSR1, "SIGSEGV": syscall.SIGSEGV, "SIGUSR2": syscall.SIGUSR2,
	"SIGPIPE": syscall.SIGPIPE, "SIGALRM": syscall.SIGALRM, "SIGTERM": syscall.SIGTERM, "SIGCHLD": syscall.SIGCHLD,
	"SIGCONT": syscall.SIGCONT, "SIGSTOP": syscall.SIGSTOP, "SIGTSTP": syscall.SIGTSTP, "SIGTTIN": syscall.SIGTTIN,
	"SIGTTOU": syscall.SIGTTOU, "SIGURG": syscall.SIGURG, "SIGXCPU": syscall.SIGXCPU, "SIGXFSZ": syscall.SIGXFSZ,
	"SIGVTALRM": syscall.SIGVTALRM, "SIGPROF": syscall.SIGPROF, "SIGWINCH": syscall.SIGWINCH, "SIGIO": syscall.SIGIO,
	"SIGSYS": syscall.SIGSYS,
}

// localSignal turns a signal number of the API (Linux's) into this OS's.
// A signal this OS does not have by that name is sent by its number.
func localSignal(sig syscall.Signal) syscall.Signal {
	if local, ok := signalNames[devops.SignalName(sig)]; ok {
		return local
	}
	return sig
}

// wireSignal turns this OS's signal number into the API's.
func wireSignal(sig syscall.Signal) syscall.Signal {
	for name, local := range signalNames {
		if local == sig {
			if wire, err := devops.ParseSignal(name); err == nil {
				return wire
			}
		}
	}
	return sig
}

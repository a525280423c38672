package executor

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
)

// directSandbox is a process started without an init: its session is all
// that groups its tree. Used only where the init binary does not answer.
type directSandbox struct {
	cmd *exec.Cmd
}

// startDirect runs the command itself in a new session.
func startDirect(l launch, log *slog.Logger) (sandbox, error) {
	path, fail := lookPath(l.spec.Argv[0], l.env, l.dir)
	if fail != nil {
		l.stderr.WriteString(execMessage(l.spec.Argv[0], *fail))
		return &failedSandbox{res: *fail}, nil
	}
	stdin, err := openStdin(l.stdin)
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        l.spec.Argv,
		Env:         l.env,
		Dir:         l.dir,
		Stdout:      l.stdout,
		Stderr:      l.stderr,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if stdin != nil {
		cmd.Stdin = stdin
		defer stdin.Close() // the command has its own copy
	}
	if l.cred != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: l.cred.uid, Gid: l.cred.gid, Groups: l.cred.groups}
	}
	if err := cmd.Start(); err != nil {
		res := execFailure(err)
		l.stderr.WriteString(execMessage(l.spec.Argv[0], res))
		return &failedSandbox{res: res}, nil
	}
	return &directSandbox{cmd: cmd}, nil
}

func (s *directSandbox) pid() int { return s.cmd.Process.Pid }

func (s *directSandbox) wait() (initResult, *syscall.Rusage) {
	s.cmd.Wait()
	ru, _ := s.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	ws, _ := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return waitResult(ws), ru
}

func (s *directSandbox) signal(sig syscall.Signal) {
	syscall.Kill(-s.cmd.Process.Pid, localSignal(sig))
}

// kill SIGKILLs the session's group. After the leader was reaped its pid
// could in principle be reused by a new group; that window is the price of
// running without an init.
func (s *directSandbox) kill() { syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) }

func (s *directSandbox) usage(ru *syscall.Rusage) usage { return rusage(ru) }

func (s *directSandbox) destroy() {}

// failedSandbox is a command that could not be executed: it "ended" at once.
type failedSandbox struct{ res initResult }

func (s *failedSandbox) pid() int                            { return 0 }
func (s *failedSandbox) wait() (initResult, *syscall.Rusage) { return s.res, nil }
func (s *failedSandbox) signal(syscall.Signal)               {}
func (s *failedSandbox) kill()                               {}
func (s *failedSandbox) usage(*syscall.Rusage) usage         { return usage{} }
func (s *failedSandbox) destroy()                            {}

// openStdin opens the file a command reads as its standard input; nil for
// none ("").
func openStdin(path string) (*os.File, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open the standard input: %w", err)
	}
	return f, nil
}

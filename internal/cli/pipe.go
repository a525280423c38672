package cli

import (
	"errors"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// exitBrokenPipe is run's exit code once nobody reads its output: 128 +
// SIGPIPE, what a shell reports for ssh, which that signal kills.
const exitBrokenPipe = 128 + 13

// catchBrokenPipe makes a write to a closed standard output fail with
// EPIPE, until stop is called, instead of killing the CLI (Go's default for
// descriptors 1 and 2). `devops run … | head -1` can then end what it
// started, as the closed channel of ssh ends the remote command; before,
// the CLI died and the command ran on, a `tail -f` for good. A caught
// signal is reset at exec, so nothing the process starts inherits it.
func catchBrokenPipe() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGPIPE)
	return func() { signal.Stop(ch) }
}

// brokenPipe reports whether err is a write to a pipe nobody reads.
func brokenPipe(err error) bool { return errors.Is(err, syscall.EPIPE) }

// alreadyEnded reports whether the manager refused to end a process or a
// run because it had ended: `devops run -- seq 100000 | head -1` closes
// its pipe after seq is done, and that is no news to print.
func alreadyEnded(err error) bool { return status.Code(err) == codes.FailedPrecondition }

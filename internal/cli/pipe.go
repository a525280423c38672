package cli

import (
	"errors"
	"fmt"
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

// outputError is a failed write of a command's output to the CLI's own
// standard output or error: a closed pipe, a full disk (> /dev/full).
type outputError struct{ err error }

func (e *outputError) Error() string { return e.err.Error() }
func (e *outputError) Unwrap() error { return e.err }

// printing marks an error of printing a command's output as an outputError.
func printing(err error) error {
	if err == nil {
		return nil
	}
	return &outputError{err}
}

// outputLost turns a failed write of the output into run's end, after end
// (which stops the command or the run) ran: nobody can read the output,
// so the command is ended with the signal a closed pipe gives, as ssh's
// closed channel ends it, rather than left to run on unread. A closed pipe
// exits 141 and says nothing, as ssh does; any other failure exits 255
// and says what it was. It returns err unchanged when it is no such
// failure.
func outputLost(err error, end func() error) error {
	var oe *outputError
	if !errors.As(err, &oe) {
		return err
	}
	endErr := end()
	if endErr != nil && status.Code(endErr) == codes.FailedPrecondition {
		// It had ended before the pipe closed (`devops run -- seq 100000
		// | head -1`): no news.
		endErr = nil
	}
	if errors.Is(oe.err, syscall.EPIPE) {
		if endErr != nil {
			return &exitError{code: 255, msg: fmt.Sprintf("nobody reads the output, and ending the command failed: %s", describe(endErr))}
		}
		return &exitError{code: exitBrokenPipe}
	}
	msg := fmt.Sprintf("cannot print the output (%v): ended the command with SIGPIPE", oe.err)
	if endErr != nil {
		msg = fmt.Sprintf("cannot print the output (%v), and ending the command failed: %s", oe.err, describe(endErr))
	}
	return &exitError{code: 255, msg: msg}
}

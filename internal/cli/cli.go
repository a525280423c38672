// Package cli is the devops command line: one cobra command per subcommand,
// built fresh for every invocation so that nothing lives in globals and tests
// can run it in-process. cmd/devops only calls Main.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/client"
)

// Env is what a command reads from and writes to.
type Env struct {
	Stdout, Stderr io.Writer
	// Stdin is what run --stdin sends and login reads; nil: os.Stdin.
	Stdin io.Reader
	// LookupEnv reads the caller's environment (os.LookupEnv); nil: empty.
	LookupEnv func(string) (string, bool)
	// Interrupt delivers Ctrl-C presses; nil means none will come.
	Interrupt <-chan os.Signal
	// Term delivers SIGTERM to commands that handle it themselves (a worker
	// drains); nil means none will come.
	Term <-chan os.Signal
	// IsTerminal reports whether Stdout is a terminal (for --watch and tables).
	IsTerminal bool
	// StdinIsTerminal reports whether Stdin is one (run -i says it reads).
	StdinIsTerminal bool
}

// getenv is os.Getenv of the caller's environment.
func (e *Env) getenv(key string) string {
	v, _ := e.LookupEnv(key)
	return v
}

// exitError carries a process exit code out of a command.
type exitError struct {
	code      int
	msg       string // printed to stderr when not empty
	retryable bool   // the command failed by itself: --retries may run it again
}

func (e *exitError) Error() string { return e.msg }

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if env.LookupEnv == nil {
		env.LookupEnv = func(string) (string, bool) { return "", false }
	}
	root, g := newRoot(&env)
	root.SetArgs(args)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	if env.Stdin != nil {
		root.SetIn(env.Stdin)
	}
	cmd, err := root.ExecuteContextC(ctx)
	if g.stop != nil {
		g.stop()
	}
	var xe *exitError
	if errors.As(err, &xe) {
		if xe.msg != "" {
			fmt.Fprintln(env.Stderr, "devops:", xe.msg)
		}
		return xe.code
	}
	if g.interrupted.Load() {
		return 130 // Ctrl-C: what it cut short says nothing more
	}
	if err == nil {
		return 0
	}
	fmt.Fprintln(env.Stderr, "devops:", describe(err))
	if isUnreachable(err) || cmd != nil && cmd.Name() == "run" {
		// Like ssh when it cannot connect. run's own failures are all 255,
		// as ssh's are: `devops run --worker w3 -- grep -q x f` exiting 1
		// must mean that grep found nothing, not that w3 is unknown.
		return 255
	}
	return 1
}

// describe turns an error into the one line a person reads: a gRPC status
// prints as its message.
func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		if s.Code() == codes.Unavailable {
			return "manager unreachable: " + s.Message()
		}
		return s.Message()
	}
	return err.Error()
}

func isUnreachable(err error) bool {
	return status.Code(err) == codes.Unavailable || status.Code(errors.Unwrap(err)) == codes.Unavailable
}

type globals struct {
	manager   string
	logFormat string
	logLevel  string
	sec       securityFlags // --ca, --token-file, --insecure (login.go)
	env       *Env

	stop        context.CancelFunc // ends the command's context (stopOnInterrupt)
	interrupted atomic.Bool        // Ctrl-C ended it
}

// ownsInterrupt marks a command that handles Ctrl-C itself (run: the first
// terminates what it started, the second stops waiting).
const ownsInterrupt = "owns-interrupt"

func newRoot(env *Env) (*cobra.Command, *globals) {
	g := &globals{env: env}
	root := &cobra.Command{
		Use:           "devops",
		Short:         "Run commands on a fleet of machines and manage their processes",
		Version:       devops.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Every other command stops at Ctrl-C. The binary takes SIGINT for
		// the CLI to handle (cmd/devops), so a command that did not look
		// at it could not be stopped: logs -f, workers --watch, a call to
		// a manager that does not answer.
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if env.Interrupt != nil && cmd.Annotations[ownsInterrupt] == "" {
				g.stopOnInterrupt(cmd)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.manager, "manager", defaultManager(env.getenv), "manager address host:port; MANAGER_HOST and MANAGER_PORT set its default")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	g.sec.register(root)
	root.AddCommand(
		hideInherited(newManagerCmd(env, g), "ca", "manager", "token-file"),
		hideInherited(newWorkerCmd(env, g), "token-file"),
		newRunCmd(env, g),
		newPsCmd(env, g),
		newStatusCmd(env, g),
		newLogsCmd(env, g),
		newKillCmd(env, g),
		withSub(newWorkersCmd(env, g), newWorkersRevokeCmd(env, g)),
		newRunsCmd(env, g),
		newRunStatusCmd(env, g),
		newRunResumeCmd(env, g),
		newDrainCmd(env, g),
		newHealthcheckCmd(env, g),
		newTokenCmd(env, g),
		newAuditCmd(env, g),
		newLoginCmd(env, g),
	)
	addCompletions(root, g)
	return root, g
}

// hideInherited leaves the root's flags names out of cmd's help: the
// client's flags (--token-file, --ca) mean nothing to the manager, which
// listed them among its own. They stay accepted.
func hideInherited(cmd *cobra.Command, names ...string) *cobra.Command {
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		for _, n := range names {
			if f := c.InheritedFlags().Lookup(n); f != nil {
				f.Hidden = true // only this process, which prints help and exits
			}
		}
		c.Root().HelpFunc()(c, args)
	})
	return cmd
}

// stopOnInterrupt ends cmd's context at the first Ctrl-C.
func (g *globals) stopOnInterrupt(cmd *cobra.Command) {
	ctx, cancel := context.WithCancel(cmd.Context())
	cmd.SetContext(ctx)
	g.stop = cancel
	go func() {
		select {
		case <-ctx.Done():
		case <-g.env.Interrupt:
			g.interrupted.Store(true)
			cancel()
		}
	}()
}

// defaultManager builds host:port from MANAGER_HOST and MANAGER_PORT, as the
// original design names them.
func defaultManager(getenv func(string) string) string {
	host, port := getenv("MANAGER_HOST"), getenv("MANAGER_PORT")
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "50051"
	}
	return net.JoinHostPort(host, port)
}

func (g *globals) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", g.logLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}

// call dials the manager, hands the client to f and closes it afterwards.
func (g *globals) call(f func(c *client.Client) error) error {
	c, err := g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

func (g *globals) dial() (*client.Client, error) {
	opts, err := g.clientOptions()
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(g.manager, opts...)
	if err != nil {
		return nil, err
	}
	// A wait for the manager is a wait for a reason other than the command:
	// said on stderr, as a process's are.
	c.Notify = func(msg string) { fmt.Fprintln(g.env.Stderr, "devops:", msg) }
	return c, nil
}

// withSub adds subcommands to a command.
func withSub(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.AddCommand(subs...)
	return cmd
}

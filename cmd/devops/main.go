// Command devops is the one binary of DevOps Platform: the manager, the
// worker and the client commands. See `devops --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/devops-platform/devops/internal/cli"
	"github.com/devops-platform/devops/internal/executor"
)

func main() {
	// The executor re-runs this binary as the init of a command's namespaces.
	if len(os.Args) > 1 && os.Args[1] == "__init" {
		os.Exit(executor.RunInit(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	// SIGTERM stops servers gracefully. Ctrl-C does too, but the client
	// commands take it themselves (to terminate what they started), so it is
	// delivered to them as well.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	interrupt := make(chan os.Signal, 2)
	signal.Notify(interrupt, os.Interrupt)
	args := os.Args[1:]
	serving := len(args) > 0 && (args[0] == "manager" || args[0] == "worker")
	if serving {
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt)
		defer stop()
	}
	return cli.Main(ctx, args, cli.Env{
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		Getenv:     os.Getenv,
		Interrupt:  interrupt,
		IsTerminal: term.IsTerminal(int(os.Stdout.Fd())),
	})
}

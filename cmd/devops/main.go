// Command devops is the one binary of DevOps Platform: the manager, the
// worker and the client commands. See `devops --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"golang.org/x/term"

	"github.com/devops-platform/devops/internal/cli"
	"github.com/devops-platform/devops/internal/store"
)

func main() {
	// Only the manager serves NATS; in every other process (the shims and
	// inits of running commands above all) nats-server's CPU sampler would
	// wake it every second for nothing.
	if len(os.Args) < 2 || os.Args[1] != "manager" {
		store.StopNATSSampler()
	}
	if code, ok := runInit(os.Args[1:]); ok {
		os.Exit(code)
	}
	os.Exit(run())
}

func run() int {
	// Ctrl-C stops the manager and the worker; the client commands take it
	// themselves, to terminate what they started. SIGTERM stops the manager
	// and the client commands, and drains a worker (it handles it itself).
	args := os.Args[1:]
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	tuneGC(cmd, os.Getenv)
	ctx := context.Background()
	sigterm := make(chan os.Signal, 1)
	if cmd == "worker" {
		signal.Notify(sigterm, syscall.SIGTERM)
	} else {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM)
		defer stop()
	}
	interrupt := make(chan os.Signal, 2)
	signal.Notify(interrupt, os.Interrupt)
	if cmd == "manager" || cmd == "worker" {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt)
		defer stop()
	}
	return cli.Main(ctx, args, cli.Env{
		Stdout:          os.Stdout,
		Stderr:          os.Stderr,
		LookupEnv:       os.LookupEnv,
		Interrupt:       interrupt,
		Term:            sigterm,
		IsTerminal:      term.IsTerminal(int(os.Stdout.Fd())),
		StdinIsTerminal: term.IsTerminal(int(os.Stdin.Fd())),
	})
}

// clientGCPercent lets a client command's heap grow to three times what is
// live before the collector runs, not twice.
const clientGCPercent = 200

// tuneGC sets the collector for a client command, which lives for a call or
// a few. At the default setting, on a plaintext connection, its first read
// from the manager (into grpc's 1 MiB buffer) took the heap past the 4 MB at
// which a Go program first collects, in nearly every `devops run`; the
// collection cost more than the few MB it gave back (on the AMD VM, `devops
// run -- true` 44.8 → 40.6 ms, ten interleaved rounds of 20). Over TLS the
// buffer is not taken and nothing changes. The manager and the worker keep
// the default, and GOGC, when set, decides for every command.
func tuneGC(cmd string, getenv func(string) string) {
	if cmd == "manager" || cmd == "worker" || getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(clientGCPercent)
}

// Package testcluster starts a real manager and real workers in-process, on
// 127.0.0.1 with ports the kernel picks, talking real gRPC over loopback.
// Integration tests use it; it must only be imported from tests.
package testcluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/cli"
	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/executor"
	"github.com/devops-platform/devops/internal/manager"
	"github.com/devops-platform/devops/internal/worker"
)

// Main is for a test package's TestMain: the executor re-runs the test
// binary as the init of each command, as it re-runs devops in production.
func Main(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "__init" {
		os.Exit(executor.RunInit(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "devops" {
		os.Exit(runDevops(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// Options shape a cluster. Zero values take the defaults in brackets.
type Options struct {
	Workers  int                           // how many workers [1]
	Labels   func(i int) map[string]string // labels of worker i [none]
	Capacity int                           // slots per worker [8]
	// Manager and Worker, if set, adjust each config before it is used.
	Manager func(*manager.Config)
	Worker  func(i int, c *worker.Config)
	// Logger, if set, receives the cluster's logs instead (Logs is ignored).
	Logger *slog.Logger
	// HTTP serves the manager's and the workers' /metrics and /healthz on
	// 127.0.0.1 ports the kernel picks [off].
	HTTP bool
	// Logs sends the cluster's logs to the test log.
	Logs bool
	// Proxies puts a Proxy between the manager and each worker, both ways
	// (the manager's calls to the worker's server and the worker's
	// connection to the manager), so that tests can cut the network
	// between them.
	Proxies bool
	// Insecure runs the cluster in plaintext with no authentication
	// (--insecure); by default it runs as in production: TLS, the admin
	// token for the Client and the CLI, join tokens for the workers.
	Insecure bool
	// ManagerProcess runs the manager as a child process (the test binary
	// acting as devops) instead of in-process, so that KillManager can
	// kill -9 it. Manager (the config hook) does not apply then.
	ManagerProcess bool
}

// Cluster is a running manager and its workers.
type Cluster struct {
	tb   testing.TB
	opts Options
	dir  string
	log  *slog.Logger

	mu      sync.Mutex // protects the fields below
	addr    string     // the manager's address, kept across restarts
	manager *node
	workers []*node
	Client  *client.Client
	// Proxies[i] stands between the manager and worker i when Options.Proxies is set.
	Proxies   []*Proxy
	toManager []string // worker i's route to the manager through Proxies[i]
}

type node struct {
	cancel context.CancelFunc
	done   chan error
	w      *worker.Worker // nil for the manager
	m      *manager.Manager
	cmd    *exec.Cmd // the manager's process, with Options.ManagerProcess
}

// Start starts a manager and the workers, waits until every worker is UP,
// and stops everything when the test ends.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if opts.Workers == 0 {
		opts.Workers = 1
	}
	if opts.Capacity == 0 {
		opts.Capacity = 8
	}
	c := &Cluster{tb: tb, opts: opts, dir: tb.TempDir(), log: slog.New(slog.DiscardHandler), addr: "127.0.0.1:0"}
	if opts.Logs {
		c.log = slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opts.Logger != nil {
		c.log = opts.Logger
	}
	c.StartManager()
	cl, err := client.Dial(c.Addr(), c.ClientOptions(c.AdminTokenFile())...)
	if err != nil {
		tb.Fatalf("dial manager: %v", err)
	}
	c.Client = cl
	c.workers = make([]*node, opts.Workers)
	if opts.Proxies {
		for range opts.Workers {
			p := NewProxy(tb, "")
			c.Proxies = append(c.Proxies, p)
			c.toManager = append(c.toManager, p.Route(tb, c.Addr()))
		}
	}
	for i := range opts.Workers {
		c.StartWorker(i)
	}
	c.WaitWorkers(opts.Workers)
	tb.Cleanup(func() {
		c.terminateProcesses()
		for i := range c.workers {
			c.StopWorker(i)
		}
		c.StopManager()
		cl.Close()
	})
	return c
}

// Addr is the manager's gRPC address.
func (c *Cluster) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addr
}

// Manager returns the running manager, or nil.
func (c *Cluster) Manager() *manager.Manager {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.manager == nil {
		return nil
	}
	return c.manager.m
}

// StartManager starts the manager on its data dir and, after the first
// start, on the same address.
func (c *Cluster) StartManager() {
	c.tb.Helper()
	if c.opts.ManagerProcess {
		c.startManagerProcess()
		return
	}
	cfg := manager.Config{
		Listen:          c.Addr(),
		HTTP:            c.httpAddr(),
		DataDir:         c.ManagerDir(),
		HealthInterval:  100 * time.Millisecond,
		MetricsInterval: 200 * time.Millisecond,
		WorkerTimeout:   2 * time.Second,
		Logger:          c.log.With("node", "manager"),
	}
	cfg.Security.Insecure = c.opts.Insecure
	if c.opts.Manager != nil {
		c.opts.Manager(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m, err := manager.New(ctx, cfg)
	if err != nil {
		cancel()
		c.tb.Fatalf("start manager: %v", err)
	}
	n := &node{cancel: cancel, done: make(chan error, 1), m: m}
	go func() { n.done <- m.Run(ctx) }()
	c.mu.Lock()
	c.addr = m.Addr()
	c.manager = n
	c.mu.Unlock()
}

// StopManager stops the manager gracefully, as SIGTERM would.
func (c *Cluster) StopManager() {
	c.mu.Lock()
	n := c.manager
	c.manager = nil
	c.mu.Unlock()
	if n == nil {
		return
	}
	if n.cmd != nil {
		c.stopManagerProcess(n)
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		c.tb.Errorf("manager stopped with: %v", err)
	}
}

// httpAddr is where the manager and the workers serve HTTP: nowhere
// unless Options.HTTP.
func (c *Cluster) httpAddr() string {
	if c.opts.HTTP {
		return "127.0.0.1:0"
	}
	return "-"
}

// WorkerName is the name of worker i.
func WorkerName(i int) string { return fmt.Sprintf("w%d", i+1) }

// WorkerDir is worker i's data dir.
func (c *Cluster) WorkerDir(i int) string { return filepath.Join(c.dir, WorkerName(i)) }

// StartWorker starts worker i (again) on its data dir.
func (c *Cluster) StartWorker(i int) {
	c.tb.Helper()
	cfg := worker.Config{
		Manager:  c.Addr(),
		Name:     WorkerName(i),
		Capacity: c.opts.Capacity,
		Listen:   "127.0.0.1:0",
		HTTP:     c.httpAddr(),
		DataDir:  c.WorkerDir(i),
		InitPath: os.Args[0],
		Logger:   c.log.With("node", WorkerName(i)),
	}
	if c.opts.Labels != nil {
		cfg.Labels = c.opts.Labels(i)
	}
	cfg.Security = c.workerSecurity()
	if c.Proxies != nil {
		cfg.Advertise = c.Proxies[i].Addr()
		cfg.Manager = c.toManager[i]
	}
	if c.opts.Worker != nil {
		c.opts.Worker(i, &cfg)
	}
	w, err := worker.New(cfg)
	if err != nil {
		c.tb.Fatalf("start worker %d: %v", i, err)
	}
	if c.Proxies != nil {
		c.Proxies[i].SetTarget(w.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{cancel: cancel, done: make(chan error, 1), w: w}
	go func() { n.done <- w.Run(ctx) }()
	c.mu.Lock()
	c.workers[i] = n
	c.mu.Unlock()
}

// Worker returns worker i, or nil when it is stopped.
func (c *Cluster) Worker(i int) *worker.Worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.workers[i] == nil {
		return nil
	}
	return c.workers[i].w
}

// WaitWorkerExit waits for worker i's Run to return by itself (as after a
// drain, or once the manager refused it for good) and returns its error.
// The worker is stopped then, as after StopWorker.
func (c *Cluster) WaitWorkerExit(i int, timeout time.Duration) error {
	c.tb.Helper()
	c.mu.Lock()
	n := c.workers[i]
	c.mu.Unlock()
	select {
	case err := <-n.done:
		c.mu.Lock()
		if c.workers[i] == n {
			c.workers[i] = nil
		}
		c.mu.Unlock()
		n.cancel()
		return err
	case <-time.After(timeout):
		c.tb.Fatalf("worker %d did not exit within %v", i, timeout)
		return nil
	}
}

// StopWorker stops worker i gracefully; what it runs goes on under the
// processes' shims, for StartWorker(i) to adopt.
func (c *Cluster) StopWorker(i int) {
	c.mu.Lock()
	n := c.workers[i]
	c.workers[i] = nil
	c.mu.Unlock()
	if n == nil {
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		c.tb.Errorf("worker %d stopped with: %v", i, err)
	}
}

// WaitWorkers waits until n workers are UP.
func (c *Cluster) WaitWorkers(n int) {
	c.tb.Helper()
	c.Eventually(10*time.Second, fmt.Sprintf("%d workers up", n), func() bool {
		ws, err := c.Client.Workers(context.Background())
		if err != nil {
			return false
		}
		up := 0
		for _, w := range ws {
			if w.State == devops.WorkerUp {
				up++
			}
		}
		return up >= n
	})
}

// Eventually polls cond until it holds, and fails the test at the deadline.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() bool) {
	c.tb.Helper()
	Eventually(c.tb, timeout, what, cond)
}

// Eventually polls cond every few milliseconds until it holds, and fails
// the test when timeout passes first.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Result is what a CLI invocation printed and returned.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// CLI runs the devops command line in-process against this cluster.
func (c *Cluster) CLI(ctx context.Context, args ...string) Result {
	var out, errb bytes.Buffer
	code := cli.Main(ctx, append(c.cliFlags(), args...), cli.Env{Stdout: &out, Stderr: &errb})
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// CLIStdin runs the command line in-process with stdin as its standard input.
func (c *Cluster) CLIStdin(ctx context.Context, stdin io.Reader, args ...string) Result {
	var out, errb bytes.Buffer
	code := c.CLIEnv(ctx, cli.Env{Stdout: &out, Stderr: &errb, Stdin: stdin}, args...)
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// CLIEnv runs the command line in-process in env, against this cluster.
func (c *Cluster) CLIEnv(ctx context.Context, env cli.Env, args ...string) int {
	return cli.Main(ctx, append(c.cliFlags(), args...), env)
}

// CLIWith runs the command line with the given output writers and Ctrl-C channel.
func (c *Cluster) CLIWith(ctx context.Context, stdout, stderr io.Writer, interrupt <-chan os.Signal, args ...string) int {
	return cli.Main(ctx, append(c.cliFlags(), args...), cli.Env{Stdout: stdout, Stderr: stderr, Interrupt: interrupt})
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// SyncBuffer is a bytes.Buffer that one goroutine (a CLI, a logger) writes
// while a test reads it.
type SyncBuffer struct {
	mu  sync.Mutex // protects buf
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

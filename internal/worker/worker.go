// Package worker is the agent that runs on each machine: it registers with
// the manager (and keeps retrying until the manager answers), serves the
// WorkerProcessService, runs each command through the executor, spools its
// output to disk and streams it from any offset. It must not import
// internal/manager.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/executor"
	"github.com/devops-platform/devops/internal/retry"
	"github.com/devops-platform/devops/internal/wire"
)

// Config configures a Worker. Zero values take the defaults in brackets.
type Config struct {
	Manager   string            // manager's gRPC address ["localhost:50051"]
	Name      string            // [the hostname]
	Labels    map[string]string //
	Capacity  int               // most processes at once [64]
	Listen    string            // own gRPC address [":50052"]
	HTTP      string            // HTTP address for /metrics and /healthz [":8081"]; "-" disables it
	Advertise string            // address the manager dials [Listen; a missing host is the one the manager sees]
	DataDir   string            // worker id, spools and process directories ["./data/worker"]
	MaxLimits devops.Limits     // caps on every request's limits
	// KeepFinished is how long a finished process's output stays on disk
	// for the manager to read again after a failure [10m].
	KeepFinished time.Duration
	// ReregisterAfter: with no health stream from the manager for this long,
	// the worker registers again, as after the manager lost its data [10s].
	ReregisterAfter time.Duration
	// InitPath is the devops binary that the executor re-runs as init in
	// namespaces ["" = this executable].
	InitPath string
	Logger   *slog.Logger // nil discards logs
}

func (c *Config) setDefaults() error {
	if c.Manager == "" {
		c.Manager = "localhost:50051"
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("worker name: %w", err)
		}
		c.Name = h
	}
	if c.Capacity <= 0 {
		c.Capacity = 64
	}
	if c.Listen == "" {
		c.Listen = ":50052"
	}
	if c.HTTP == "" {
		c.HTTP = ":8081"
	}
	if c.DataDir == "" {
		c.DataDir = "./data/worker"
	}
	if c.KeepFinished <= 0 {
		c.KeepFinished = 10 * time.Minute
	}
	if c.ReregisterAfter <= 0 {
		c.ReregisterAfter = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Worker is the agent. Create it with New and run it with Run.
type Worker struct {
	cfg      Config
	log      *slog.Logger
	exec     *executor.Executor
	lis      net.Listener
	server   *grpc.Server
	health   *health.Server
	metrics  *workerMetrics
	started  time.Time
	spoolDir string
	quit     chan struct{} // closed at shutdown: ends the health and metrics streams

	mu         sync.Mutex // protects the fields below
	id         devops.WorkerID
	procs      map[devops.ProcessID]*proc
	draining   bool
	lastHealth time.Time // when the manager last had a health stream open
	healthSubs int       // health streams open now

	wg sync.WaitGroup // every goroutine the worker starts
}

// proc is one process the worker runs or ran.
type proc struct {
	id      devops.ProcessID
	spool   *spool
	x       *executor.Process
	started time.Time
	done    chan struct{} // closed when exit is set and the spool is closed

	exit    devops.ExitStatus // valid once done is closed
	endedAt time.Time         // when done closed, for cleanup
}

// New checks the config, prepares the data dir and the executor, and binds
// the listen address. Nothing is served until Run.
func New(cfg Config) (*Worker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, log: cfg.Logger.With("worker", cfg.Name), procs: make(map[devops.ProcessID]*proc), started: time.Now(), quit: make(chan struct{})}
	w.spoolDir = filepath.Join(cfg.DataDir, "spool")
	if err := os.MkdirAll(w.spoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	id, err := os.ReadFile(filepath.Join(cfg.DataDir, "worker-id"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read worker id: %w", err)
	}
	w.id = devops.WorkerID(strings.TrimSpace(string(id)))
	w.exec, err = executor.New(executor.Config{
		Root:      filepath.Join(cfg.DataDir, "processes"),
		Logger:    w.log,
		MaxLimits: cfg.MaxLimits,
		InitPath:  cfg.InitPath,
	})
	if err != nil {
		return nil, fmt.Errorf("start executor: %w", err)
	}
	if w.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	w.health = health.NewServer()
	if w.metrics, err = newWorkerMetrics(w); err != nil {
		w.lis.Close()
		return nil, err
	}
	w.server = grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Pings an idle manager connection so a dead one is noticed.
			Time:    10 * time.Second,
			Timeout: 5 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// The manager pings every 5 s (see internal/manager); allow it.
			MinTime:             4 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.ChainUnaryInterceptor(w.metrics.grpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(w.metrics.grpc.StreamServerInterceptor()),
	)
	pb.RegisterWorkerProcessServiceServer(w.server, &server{w: w})
	healthpb.RegisterHealthServer(w.server, w.health)
	reflection.Register(w.server)
	w.metrics.grpc.InitializeMetrics(w.server)
	return w, nil
}

// Addr is the address the worker's gRPC server listens on.
func (w *Worker) Addr() string { return w.lis.Addr().String() }

// ID is the id the manager gave this worker; empty before it registered.
func (w *Worker) ID() devops.WorkerID {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.id
}

// Run serves and keeps the worker registered until ctx ends. Then it stops
// serving and terminates what it still runs. It returns early with an error
// when the manager refuses the worker for good (its name is taken, its
// settings are invalid).
func (w *Worker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- w.server.Serve(w.lis) }()
	w.serveHTTP(errc)
	w.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		if err := w.registerLoop(ctx); err != nil {
			errc <- err
		}
	}()
	go func() { defer w.wg.Done(); w.cleanupLoop(ctx) }()
	w.log.Info("worker serving", "address", w.Addr(), "manager", w.cfg.Manager, "version", devops.Version)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	w.shutdown()
	return err
}

func (w *Worker) shutdown() {
	w.health.Shutdown()
	w.mu.Lock()
	procs := make([]*proc, 0, len(w.procs))
	for _, p := range w.procs {
		procs = append(procs, p)
	}
	w.mu.Unlock()
	// Nothing is left behind: a worker that stops ends what it runs.
	for _, p := range procs {
		if p.x != nil {
			p.x.Terminate(syscall.SIGTERM, 2*time.Second)
		}
	}
	for _, p := range procs {
		<-p.done
	}
	close(w.quit)
	stopped := make(chan struct{})
	go func() { w.server.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		w.server.Stop()
	}
	w.stopHTTP()
	w.wg.Wait()
	if err := w.exec.Close(); err != nil {
		w.log.Warn("close executor", "err", err)
	}
}

// registerLoop registers with the manager, retrying with backoff until it
// answers, and registers again whenever the manager has stopped checking
// this worker's health for a while.
func (w *Worker) registerLoop(ctx context.Context) error {
	conn, err := grpc.NewClient(w.cfg.Manager,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
	)
	if err != nil {
		return fmt.Errorf("manager address %q: %w", w.cfg.Manager, err)
	}
	defer conn.Close()
	client := pb.NewWorkerRegistrationServiceClient(conn)
	b := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for {
		err := w.register(ctx, client)
		switch status.Code(err) {
		case codes.OK:
			b.Reset()
			if err := w.waitUnwatched(ctx); err != nil {
				return nil
			}
			w.log.Info("manager stopped checking this worker; registering again")
			continue
		case codes.AlreadyExists, codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated:
			return fmt.Errorf("register with manager %s: %s", w.cfg.Manager, status.Convert(err).Message())
		}
		if ctx.Err() != nil {
			return nil
		}
		d := b.Next()
		w.log.Warn("register with manager", "manager", w.cfg.Manager, "err", status.Convert(err).Message(), "retry_in", d.Round(time.Millisecond))
		if retry.Sleep(ctx, d) != nil {
			return nil
		}
	}
}

func (w *Worker) register(ctx context.Context, client pb.WorkerRegistrationServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	advertise := w.cfg.Advertise
	if advertise == "" {
		_, port, err := net.SplitHostPort(w.Addr())
		if err != nil {
			return err
		}
		host, _, _ := net.SplitHostPort(w.cfg.Listen)
		advertise = net.JoinHostPort(host, port)
	}
	resp, err := client.RegisterWorker(ctx, &pb.RegisterWorkerRequest{
		WorkerId:    string(w.ID()),
		Name:        w.cfg.Name,
		Labels:      w.cfg.Labels,
		Capacity:    int32(w.cfg.Capacity),
		Address:     advertise,
		Version:     devops.Version,
		Fingerprint: wire.FingerprintToPB(w.exec.Fingerprint()),
	})
	if err != nil {
		return err
	}
	id := devops.WorkerID(resp.GetWorkerId())
	w.mu.Lock()
	changed := w.id != id
	w.id = id
	w.lastHealth = time.Now() // give the manager time to open its stream
	w.mu.Unlock()
	if changed {
		if err := os.WriteFile(filepath.Join(w.cfg.DataDir, "worker-id"), []byte(id+"\n"), 0o600); err != nil {
			return status.Errorf(codes.Internal, "save worker id: %v", err)
		}
	}
	w.log.Info("registered with manager", "worker_id", id, "manager", w.cfg.Manager)
	return nil
}

// waitUnwatched returns nil once the manager has had no health stream open
// for ReregisterAfter, or ctx.Err() when ctx ends.
func (w *Worker) waitUnwatched(ctx context.Context) error {
	tick := time.NewTicker(w.cfg.ReregisterAfter / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		w.mu.Lock()
		unwatched := w.healthSubs == 0 && time.Since(w.lastHealth) > w.cfg.ReregisterAfter
		w.mu.Unlock()
		if unwatched {
			return nil
		}
	}
}

// cleanupLoop forgets finished processes, and deletes their output, once
// the manager has had KeepFinished to read it.
func (w *Worker) cleanupLoop(ctx context.Context) {
	tick := time.NewTicker(min(w.cfg.KeepFinished/2, time.Minute))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.mu.Lock()
		var old []*proc
		for id, p := range w.procs {
			if !p.endedAt.IsZero() && time.Since(p.endedAt) > w.cfg.KeepFinished {
				old = append(old, p)
				delete(w.procs, id)
			}
		}
		w.mu.Unlock()
		for _, p := range old {
			if err := p.spool.remove(); err != nil {
				w.log.Warn("remove spool", "process_id", p.id, "err", err)
			}
		}
	}
}

// start runs a new process, or returns the existing one with that id: a
// process id is started at most once.
func (w *Worker) start(ctx context.Context, id devops.ProcessID, spec devops.Spec, attachOnly bool) (*proc, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p, ok := w.procs[id]; ok {
		return p, nil
	}
	if attachOnly {
		return nil, status.Errorf(codes.NotFound, "process %s is not known on this worker", id)
	}
	if w.draining {
		return nil, status.Error(codes.FailedPrecondition, "worker is draining")
	}
	if n := w.runningLocked(); n >= w.cfg.Capacity {
		return nil, status.Errorf(codes.ResourceExhausted, "worker is full (%d/%d)", n, w.cfg.Capacity)
	}
	sp, err := newSpool(filepath.Join(w.spoolDir, string(id)))
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	x, err := w.exec.Start(ctx, id, spec, sp.writer(devops.Stdout), sp.writer(devops.Stderr))
	if err != nil {
		sp.remove()
		if errors.Is(err, devops.ErrInvalid) {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return nil, status.Errorf(codes.Internal, "start: %v", err)
	}
	p := &proc{id: id, spool: sp, x: x, started: time.Now(), done: make(chan struct{})}
	w.procs[id] = p
	w.log.Info("process started", "process_id", id, "pid", x.Pid(), "argv0", spec.Argv[0])
	w.metrics.started.Inc()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		exit := x.Wait()
		if err := sp.close(); err != nil {
			w.log.Warn("close spool", "process_id", id, "err", err)
		}
		w.mu.Lock()
		p.exit = exit
		p.endedAt = time.Now()
		w.metrics.processEnded(exit.State) // before done closes: the exit is sent after it
		w.mu.Unlock()
		close(p.done)
		w.log.Info("process ended", "process_id", id, "state", exit.State, "exit_code", exit.Code, "signal", exit.Signal)
	}()
	return p, nil
}

func (w *Worker) runningLocked() int {
	n := 0
	for _, p := range w.procs {
		if p.endedAt.IsZero() {
			n++
		}
	}
	return n
}

func (w *Worker) get(id devops.ProcessID) (*proc, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.procs[id]
	return p, ok
}

// snapshot reports what the health stream says.
func (w *Worker) snapshot() (running int, ids []string, draining bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, p := range w.procs {
		if p.endedAt.IsZero() {
			running++
			ids = append(ids, string(id))
		}
	}
	return running, ids, w.draining
}

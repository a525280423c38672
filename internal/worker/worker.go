// Package worker is the agent that runs on each machine: it registers with
// the manager (and keeps retrying until the manager answers), keeps one
// stream open to it with its health and metrics, serves the
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
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/executor"
	"github.com/devops-platform/devops/internal/grpcbuf"
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
	// SpoolMax bounds one process's output on the worker's disk. While the
	// manager is unreachable the output waits there; past the bound the
	// oldest is dropped, and what the manager never read is counted as
	// lost in the process's record [DefaultSpoolMax]. Negative: no bound.
	SpoolMax int64
	// WarmShims is how many process supervisors (shims), each with its
	// init, the executor keeps started ahead of need, for fast starts
	// [DefaultWarmShims]. Negative: none.
	WarmShims int
	// InitPath is the devops binary that the executor re-runs as init in
	// namespaces ["" = this executable].
	InitPath string
	Logger   *slog.Logger // nil discards logs
	// Security is the join token, or --insecure (identity.go).
	Security SecurityConfig
}

// DefaultSpoolMax is Config.SpoolMax's default: at the rate of a chatty
// build log (1 MB/s) it holds minutes of a manager's absence, and a worker
// full of processes (Capacity) still fits a common disk.
const DefaultSpoolMax = 256 << 20

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
	// Absolute, because the processes' supervisors outlive the worker and
	// do not share its working directory.
	dir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("data dir %q: %w", c.DataDir, err)
	}
	c.DataDir = dir
	if c.SpoolMax == 0 {
		c.SpoolMax = DefaultSpoolMax
	}
	if c.KeepFinished <= 0 {
		c.KeepFinished = 10 * time.Minute
	}
	if c.WarmShims == 0 {
		c.WarmShims = DefaultWarmShims
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// DefaultWarmShims is Config.WarmShims's default: enough for a burst of two
// starts; each idle one holds two processes of the devops binary.
const DefaultWarmShims = 2

// Worker is the agent. Create it with New and run it with Run.
type Worker struct {
	cfg      Config
	bufs     *grpcbuf.Pool // grpc's buffers, on the server and the connection to the manager
	log      *slog.Logger
	cpu      *cpuMeter // the host's CPU use, for the metrics reported
	exec     *executor.Executor
	lis      net.Listener
	server   *grpc.Server
	health   *health.Server
	metrics  *workerMetrics
	ident    *identity // certificate and TLS (identity.go)
	started  time.Time
	spoolDir string
	files    *fileWatcher  // tells spool readers of each write
	quit     chan struct{} // closed at shutdown: ends the output streams
	// restate asks the status stream for a report now, out of turn: the
	// drain state changed (capacity 1).
	restate chan struct{}
	crash   chan struct{} // closed by Crash
	crashed sync.Once

	mu       sync.Mutex // protects the fields below
	id       devops.WorkerID
	procs    map[devops.ProcessID]*proc
	starting map[devops.ProcessID]chan struct{} // ids being started; closed when done
	// running counts the procs not ended. procs keeps ended ones for
	// KeepFinished (tens of thousands at a hundred commands a second), and
	// counting them on every start was 7% of a busy worker's CPU.
	running  int
	draining bool
	// drainGen counts the changes of draining. Reports and drain answers
	// carry it, so the manager can tell a report taken before a change
	// from one taken after it.
	drainGen uint64
	drained  chan struct{} // closed once draining with nothing left to run; replaced on undo
	// leaving is set while the worker deregisters: the manager ends its
	// status stream then, and the worker must not register again.
	leaving bool
	stay    chan struct{} // closed when leaving is undone; replaced when it is set

	wg sync.WaitGroup // every goroutine the worker starts
}

// proc is one process the worker runs or ran.
type proc struct {
	id      devops.ProcessID
	spool   *spool
	x       *executor.Process // held by its shim: it outlives the worker
	started time.Time
	done    chan struct{} // closed when exit is set: the spool is complete

	sent      chan struct{} // closed once the exit went out on a stream
	delivered sync.Once     // closes sent

	exit    devops.ExitStatus // valid once done is closed
	endedAt time.Time         // when done closed, for cleanup
}

// New checks the config, prepares the data dir and the executor, and binds
// the listen address. Nothing is served until Run.
func New(cfg Config) (*Worker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, bufs: grpcbuf.New(), log: cfg.Logger.With("worker", cfg.Name), procs: make(map[devops.ProcessID]*proc), starting: make(map[devops.ProcessID]chan struct{}), started: time.Now(), cpu: newCPUMeter(), quit: make(chan struct{}), crash: make(chan struct{}), drained: make(chan struct{}), restate: make(chan struct{}, 1)}
	w.spoolDir = filepath.Join(cfg.DataDir, "spool")
	// Searchable by all, not readable: a command run as another user
	// (--user) must reach its own directory under it. Made 0700, as the
	// spool is, it failed every such command (permission denied).
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
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
		WarmShims: max(cfg.WarmShims, 0),
		Logger:    w.log,
		MaxLimits: cfg.MaxLimits,
		InitPath:  cfg.InitPath,
		SpoolMax:  max(cfg.SpoolMax, 0),
		SpoolDir:  w.spoolDir,
	})
	if err != nil {
		return nil, fmt.Errorf("start executor: %w", err)
	}
	if w.ident, err = newIdentity(cfg, w.log); err != nil {
		w.exec.Close()
		return nil, err
	}
	if w.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
		w.exec.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	w.health = health.NewServer()
	if w.metrics, err = newWorkerMetrics(w); err != nil {
		w.lis.Close()
		w.exec.Close()
		return nil, err
	}
	w.files = newFileWatcher()
	w.adopt()
	w.pruneStaged() // inputs whose command never came, before a stop
	w.server = grpc.NewServer(
		experimental.BufferPool(w.bufs),
		grpc.ForceServerCodecV2(grpcbuf.NewCodec(w.bufs)),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Pings a manager connection that has sent nothing for a
			// minute, so a manager gone silent is noticed. Not sooner: an
			// idle worker's health flows to the manager and nothing comes
			// back, so every idle worker would ping its manager this often
			// (at 10,000 workers, every second of Time is 10,000 pings).
			Time:    time.Minute,
			Timeout: 5 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// The manager does not ping (the kernel watches its
			// connections, see internal/manager); allow any client every 4 s.
			MinTime:             4 * time.Second,
			PermitWithoutStream: true,
		}),
		w.ident.serverOption(),
		grpc.MaxRecvMsgSize(8<<20),
		// Output goes out in 256 KiB chunks: grpc's 32 KiB write buffer
		// made eight writes of each. The buffer comes from a pool for
		// each flush: an idle connection holds none.
		grpc.WriteBufferSize(1<<20),
		grpc.ChainUnaryInterceptor(w.metrics.grpc.UnaryServerInterceptor(), w.ident.unary),
		grpc.ChainStreamInterceptor(w.metrics.grpc.StreamServerInterceptor(), w.ident.stream),
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

// ManagerKeepalive is the keepalive of a worker's connection to its
// manager. The status stream sends every health interval but reads
// nothing, and grpc pings when nothing was read for Time. A manager that is
// gone is noticed without pings: grpc sets TCP_USER_TIMEOUT to Timeout, so
// reports unacknowledged that long close the connection. The pings only
// find a manager gone behind something that acknowledges for it (a TCP
// proxy), so they are rare: once a minute, 10,000 workers' pings and the
// manager's answers were a quarter of its idle CPU (bench/FINDINGS.md,
// session 26).
func ManagerKeepalive() keepalive.ClientParameters {
	return keepalive.ClientParameters{Time: 10 * time.Minute, Timeout: 10 * time.Second}
}

// Run serves and keeps the worker registered until ctx ends. Then it stops
// serving and leaves what it still runs to its shims: the next worker on the
// same data dir adopts them (a restart for an upgrade must not kill running
// commands; drain first to let them finish). It returns early with an error
// when the manager refuses the worker for good (its name is taken, its
// settings are invalid).
func (w *Worker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// One connection to the manager, held for the worker's life: it
	// carries the registration and the status stream, so that an idle
	// worker costs the manager nothing more (see ReportStatus).
	conn, err := grpc.NewClient(w.cfg.Manager,
		grpc.WithTransportCredentials(w.ident.managerCreds(w.cfg.Manager)),
		grpc.WithDisableServiceConfig(), // no TXT lookup: see client.Dial
		experimental.WithBufferPool(w.bufs),
		grpc.WithKeepaliveParams(ManagerKeepalive()),
		// After a manager restart the worker reconnects within a few
		// seconds: until it does, it is DOWN.
		retry.Connect(),
		// Little comes back from the manager (answers, the stream's
		// settings): fixed windows spare grpc's bandwidth-delay PINGs.
		grpc.WithStaticStreamWindowSize(1<<20),
		grpc.WithStaticConnWindowSize(1<<20),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.ForceCodecV2(grpcbuf.NewCodec(w.bufs))),
	)
	if err != nil {
		return fmt.Errorf("manager address %q: %w", w.cfg.Manager, err)
	}
	defer conn.Close()
	manager := pb.NewWorkerRegistrationServiceClient(conn)
	errc := make(chan error, 2)
	go func() { errc <- w.server.Serve(w.lis) }()
	w.serveHTTP(errc)
	w.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		if err := w.join(ctx, conn); err != nil {
			errc <- err
			return
		}
		if err := w.reportLoop(ctx, manager); err != nil {
			errc <- err
		}
	}()
	go func() { defer w.wg.Done(); w.cleanupLoop(ctx) }()
	w.log.Info("worker serving", "address", w.Addr(), "manager", w.cfg.Manager, "version", devops.Version)

	hard := false
	for {
		w.mu.Lock()
		drained := w.drained
		w.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-w.crash:
			hard = true
		case err = <-errc:
		case <-drained:
			if !w.stillDrained() {
				continue // undone meanwhile
			}
			w.log.Info("drained: every process has finished; deregistering")
			w.waitExitsSent(ctx, 2*time.Second)
			w.setLeaving(true)
			if !w.deregister(ctx, manager) {
				w.setLeaving(false)
				continue
			}
		}
		break
	}
	cancel()
	w.shutdown(hard)
	return err
}

// waitExitsSent waits, at most d, until the exit of every ended process
// went out to the manager: deregistering closes the manager's streams, and
// an exit not yet sent would leave its process DISCONNECTED.
func (w *Worker) waitExitsSent(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	w.mu.Lock()
	var sent []chan struct{}
	for _, p := range w.procs {
		sent = append(sent, p.sent)
	}
	w.mu.Unlock()
	for _, c := range sent {
		select {
		case <-c:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// Crash makes Run return as if the worker were killed (kill -9), for tests:
// connections are cut rather than closed, nothing is deregistered and the
// processes run on under their shims.
func (w *Worker) Crash() {
	w.crashed.Do(func() { close(w.crash) })
}

// adopt finds the processes a previous worker on this data dir left to
// their shims: running ones are followed again, ended ones keep their
// output and exit status for the manager to read; anything else is removed.
func (w *Worker) adopt() {
	entries, err := os.ReadDir(w.spoolDir)
	if err != nil {
		w.log.Warn("read spool directory", "err", err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue // the executor's spare directories (Config.SpoolDir)
		}
		id := devops.ProcessID(e.Name())
		dir := filepath.Join(w.spoolDir, e.Name())
		if !e.IsDir() {
			// A spool of a worker from before shims, or a stray file.
			os.Remove(dir)
			continue
		}
		x, err := w.exec.Adopt(id, dir)
		if err != nil {
			w.log.Warn("process left by the previous worker is lost", "process_id", id, "err", err)
			os.RemoveAll(dir)
			continue
		}
		w.trackLocked(id, x, dir)
		w.log.Info("process adopted", "process_id", id, "pid", x.Pid())
	}
}

// deregister tells the manager this worker leaves. The manager says
// FailedPrecondition until it has recorded how every process here ended, so the
// worker keeps serving and asks again, for at most a minute.
// It reports false when the drain was undone meanwhile: the worker stays.
func (w *Worker) deregister(ctx context.Context, manager pb.WorkerRegistrationServiceClient) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	b := retry.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	began := time.Now()
	for {
		if !w.stillDrained() {
			return false // undone meanwhile: stay
		}
		_, err := manager.DeregisterWorker(ctx, &pb.DeregisterWorkerRequest{WorkerId: string(w.ID())})
		// FailedPrecondition: the manager still waits for exits from here.
		// Unavailable: it is not there; it would only hold the worker up.
		if status.Code(err) == codes.Unavailable && time.Since(began) > 5*time.Second {
			w.log.Warn("deregister: manager unreachable; leaving anyway", "err", err)
			return true
		}
		if err == nil || status.Code(err) != codes.FailedPrecondition && status.Code(err) != codes.Unavailable {
			if err != nil {
				w.log.Warn("deregister", "err", err)
			}
			return true
		}
		if retry.Sleep(ctx, b.Next()) != nil {
			w.log.Warn("deregister: gave up", "err", err)
			return true
		}
	}
}

// Drain stops taking new work (or, with false, takes it again). Once a
// draining worker has nothing left to run, Run deregisters it and returns.
// It returns the drain generation that the change, if any, made.
func (w *Worker) Drain(draining bool) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.draining == draining {
		return w.drainGen
	}
	w.draining = draining
	w.drainGen++
	// The manager hears it now, not at the next report: a worker that
	// drains itself (SIGTERM) would otherwise be sent work it refuses for
	// up to an interval.
	select {
	case w.restate <- struct{}{}:
	default:
	}
	if draining {
		w.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		w.log.Info("draining: no new work; waiting for running processes")
		w.checkDrainedLocked()
		return w.drainGen
	}
	w.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	w.log.Info("drain undone: taking work again")
	select {
	case <-w.drained:
		w.drained = make(chan struct{})
	default:
	}
	return w.drainGen
}

func (w *Worker) checkDrainedLocked() {
	if !w.draining || w.runningLocked() > 0 {
		return
	}
	select {
	case <-w.drained:
	default:
		close(w.drained)
	}
}

func (w *Worker) stillDrained() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.draining && w.runningLocked() == 0
}

func (w *Worker) shutdown(hard bool) {
	w.health.Shutdown()
	// Processes are left running under their shims, for the next worker on
	// this data dir to adopt. Their output streams end here; the manager
	// attaches again from the offset it has.
	close(w.quit)
	if hard {
		w.server.Stop()
	} else {
		stopped := make(chan struct{})
		go func() { w.server.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			w.server.Stop()
		}
	}
	w.stopHTTP()
	w.wg.Wait()
	w.files.close()
	// It ends the warm shims; running processes go on under their shims.
	if err := w.exec.Close(); err != nil {
		w.log.Warn("close executor", "err", err)
	}
}

// TerminateAll terminates every process the worker runs and waits until
// they ended, for at most grace plus the kill. Tests use it to leave nothing
// running; a worker that stops does not.
func (w *Worker) TerminateAll(grace time.Duration) {
	w.mu.Lock()
	procs := make([]*proc, 0, len(w.procs))
	for _, p := range w.procs {
		procs = append(procs, p)
	}
	w.mu.Unlock()
	for _, p := range procs {
		p.x.Terminate(syscall.SIGTERM, grace)
	}
	for _, p := range procs {
		select {
		case <-p.x.Done():
		case <-time.After(grace + 10*time.Second):
			w.log.Warn("process did not end after terminate", "process_id", p.id)
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
	w.mu.Unlock()
	if changed {
		if err := os.WriteFile(filepath.Join(w.cfg.DataDir, "worker-id"), []byte(id+"\n"), 0o600); err != nil {
			return status.Errorf(codes.Internal, "save worker id: %v", err)
		}
	}
	w.log.Info("registered with manager", "worker_id", id, "manager", w.cfg.Manager)
	return nil
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
			// Not before Done: until then its shim writes into the
			// directory (a short --keep-finished could race it).
			if !p.endedAt.IsZero() && time.Since(p.endedAt) > w.cfg.KeepFinished && isClosed(p.x.Done()) {
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
	for {
		if p, ok := w.procs[id]; ok {
			w.mu.Unlock()
			return p, nil
		}
		wait, ok := w.starting[id]
		if !ok {
			break
		}
		// Another call is starting this id: attach once it has.
		w.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		w.mu.Lock()
	}
	if attachOnly {
		w.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "process %s is not known on this worker", id)
	}
	if w.draining {
		w.mu.Unlock()
		return nil, status.Error(codes.FailedPrecondition, "worker is draining")
	}
	if n := w.runningLocked(); n >= w.cfg.Capacity {
		w.mu.Unlock()
		return nil, status.Errorf(codes.ResourceExhausted, "worker is full (%d/%d)", n, w.cfg.Capacity)
	}
	// The start takes milliseconds (two processes are spawned): it runs
	// outside the lock, so that starts on one worker overlap.
	started := make(chan struct{})
	w.starting[id] = started
	w.mu.Unlock()

	dir := filepath.Join(w.spoolDir, string(id))
	x, err := w.exec.StartSupervised(ctx, id, spec, dir)

	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.starting, id)
	close(started)
	if err != nil {
		w.checkDrainedLocked()
		if !errors.Is(err, devops.ErrAlreadyExists) {
			os.RemoveAll(dir)
		}
		if errors.Is(err, devops.ErrInvalid) {
			// The manager names the process already.
			return nil, status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), "start "+string(id)+": "))
		}
		return nil, status.Errorf(codes.Internal, "start: %v", err)
	}
	p := w.trackLocked(id, x, dir)
	w.log.Info("process started", "process_id", id, "pid", x.Pid(), "argv0", spec.Argv[0])
	w.metrics.started.Inc()
	if x.Pooled() {
		w.metrics.warm.Inc()
	}
	return p, nil
}

// trackLocked adds x, whose state directory is dir, to the processes and
// waits for its end; the wait gives up at shutdown, leaving x to its shim.
func (w *Worker) trackLocked(id devops.ProcessID, x *executor.Process, dir string) *proc {
	p := &proc{id: id, x: x, started: x.StartedAt(), done: make(chan struct{}), sent: make(chan struct{})}
	p.spool = newSpool(dir, p.done, w.files.watch)
	w.procs[id] = p
	w.running++
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		// Ended rather than Done: the status goes out while the shim is
		// still putting it on disk.
		select {
		case <-x.Ended():
		case <-w.quit:
			return
		}
		exit := x.Status()
		w.mu.Lock()
		p.exit = exit
		p.endedAt = time.Now()
		w.running--
		w.mu.Unlock()
		w.metrics.processEnded(exit.State) // before done: the exit is sent after it
		close(p.done)
		// After done: a drained worker stops, and its streams must be able
		// to send this exit first.
		w.mu.Lock()
		w.checkDrainedLocked()
		w.mu.Unlock()
		w.log.Info("process ended", "process_id", id, "state", exit.State, "exit_code", exit.Code, "signal", exit.Signal)
		// Until Done the shim puts the output and the status on disk, in
		// the process's directory (a few ms): a worker that stops waits
		// for it, so that whoever removes the data dir next finds nothing
		// still written to it. A disk that stalls holds the stop back only
		// so long.
		select {
		case <-x.Done():
		case <-time.After(settleWait):
		}
	}()
	return p
}

// settleWait bounds how long a process's end waits for its shim to have
// its status on disk.
const settleWait = 5 * time.Second

func (w *Worker) runningLocked() int {
	return len(w.starting) + w.running
}

func (w *Worker) get(id devops.ProcessID) (*proc, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.procs[id]
	return p, ok
}

// drainState is the worker's draining and its generation, read together.
type drainState struct {
	on  bool
	gen uint64
}

// isDraining says whether the worker takes no new work.
func (w *Worker) isDraining() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.draining
}

// snapshot reports what the health stream says.
func (w *Worker) snapshot() (running int, ids []string, drain drainState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, p := range w.procs {
		if p.endedAt.IsZero() {
			running++
			ids = append(ids, string(id))
		}
	}
	return running, ids, drainState{w.draining, w.drainGen}
}

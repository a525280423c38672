// Package manager is the control plane: it registers workers, places each
// command on a fitting worker, tracks every process and serves the API. It
// wires the registry, the scheduler and the store together; the gRPC handlers
// live here too and are the only place that speaks protobuf. It must not
// import internal/worker.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
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
	"github.com/devops-platform/devops/internal/grpcbuf"
	"github.com/devops-platform/devops/internal/metrics"
	"github.com/devops-platform/devops/internal/registry"
	"github.com/devops-platform/devops/internal/store"
)

// Store keeps workers, process records and output durably.
type Store interface {
	PutWorker(ctx context.Context, w devops.Worker) error
	DeleteWorker(ctx context.Context, id devops.WorkerID) error
	Workers(ctx context.Context) ([]devops.Worker, error)
	PutProcess(ctx context.Context, p devops.Process) error
	Processes(ctx context.Context) ([]devops.Process, error)
	// PrepareOutput readies the output of id for its first chunk; optional.
	PrepareOutput(ctx context.Context, id devops.ProcessID) error
	AppendOutput(ctx context.Context, id devops.ProcessID, c devops.Chunk) error
	SkipOutput(ctx context.Context, id devops.ProcessID, to int64) error
	CloseOutput(ctx context.Context, id devops.ProcessID) error
	OutputEnd(ctx context.Context, id devops.ProcessID) (int64, error)
	// ReadOutput's fn must not keep c.Data once it returns.
	ReadOutput(ctx context.Context, id devops.ProcessID, from int64, follow bool, fn func(devops.Chunk) error) error
	Close() error
}

var _ Store = (*store.JetStream)(nil)

// Config configures a Manager. Zero values take the defaults in brackets.
type Config struct {
	Listen  string // gRPC address [":50051"]
	HTTP    string // HTTP address for /healthz and /metrics [":8080"]; "-" disables it
	DataDir string // where the store keeps its files ["./data/manager"]
	// Store, if not nil, is used instead of the embedded JetStream in DataDir.
	Store Store

	WorkerTimeout    time.Duration // silence before a worker is DOWN [10s]
	HealthInterval   time.Duration // how often workers report health [WorkerTimeout/2]
	MetricsInterval  time.Duration // how often workers report metrics [5s]
	DisconnectGrace  time.Duration // how long a process may be DISCONNECTED before it is LOST [2m]
	QueueTimeout     time.Duration // default wait for a free slot [1m]
	DispatchAttempts int           // workers tried when one refuses a command [3]
	// WorkerIdleTimeout is how long the manager keeps its connection to a
	// worker open with no call in flight [5m]. The next call connects
	// again, which costs it a round trip or three (TCP, TLS, HTTP/2).
	WorkerIdleTimeout time.Duration

	MaxOutputBytes        int64 // output kept across all processes [8 GiB]
	MaxProcessOutputBytes int64 // output kept per process [1 GiB]
	// MaxStdin bounds a standard input uploaded ahead of a run [16 GiB]:
	// the manager keeps it on disk until the processes that read it end.
	MaxStdin int64
	// Retention is how long processes and fleet runs are kept once they
	// ended: then their records and output are deleted (retention.go).
	// Zero keeps them for good.
	Retention time.Duration

	// Security is TLS, tokens and the audit log (security.go); the zero
	// value serves TLS with a CA and tokens made in DataDir.
	Security SecurityConfig

	Logger *slog.Logger // nil discards logs
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = ":50051"
	}
	if c.HTTP == "" {
		c.HTTP = ":8080"
	}
	if c.DataDir == "" {
		c.DataDir = "./data/manager"
	}
	if c.WorkerTimeout <= 0 {
		c.WorkerTimeout = 10 * time.Second
	}
	if c.HealthInterval <= 0 {
		// A worker is DOWN after missing about two reports; each report
		// costs the manager a read and two goroutine wakeups, which at
		// 10,000 idle workers is most of its CPU.
		c.HealthInterval = c.WorkerTimeout / 2
	}
	if c.MetricsInterval <= 0 {
		c.MetricsInterval = 5 * time.Second
	}
	if c.DisconnectGrace <= 0 {
		c.DisconnectGrace = 2 * time.Minute
	}
	if c.QueueTimeout <= 0 {
		c.QueueTimeout = time.Minute
	}
	if c.DispatchAttempts <= 0 {
		c.DispatchAttempts = 3
	}
	if c.WorkerIdleTimeout <= 0 {
		c.WorkerIdleTimeout = 5 * time.Minute
	}
	if c.MaxStdin <= 0 {
		c.MaxStdin = 16 << 30
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Manager is the control plane. Create it with New and run it with Run.
type Manager struct {
	cfg      Config
	bufs     *grpcbuf.Pool // grpc's buffers, on the server and the connections to workers
	log      *slog.Logger
	store    Store
	registry *registry.Registry
	procs    *table
	fleet    *fleet    // fleet runs (fleet.go)
	inputs   inputs    // standard inputs of commands (inputs.go)
	bornAt   time.Time // when New made it: workers it loaded are DOWN until they come back
	workers  *connections
	metrics  *managerMetrics
	sec      *security // TLS, tokens, audit log

	grpcLis  net.Listener
	httpLis  net.Listener
	server   *grpc.Server
	health   *health.Server
	httpSrv  *http.Server
	calls    unaryCalls         // the unary calls being served, for shutdown
	stopping atomic.Bool        // shutdown has begun
	wg       sync.WaitGroup     // every goroutine the manager starts
	runCtx   context.Context    // lives as long as Run; parent of process trackers
	stopRuns context.CancelFunc // ends runCtx
}

// New opens the store, loads what it holds and binds the listen addresses.
// Nothing is served until Run.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if cfg.HealthInterval >= cfg.WorkerTimeout {
		cfg.Logger.Warn("the health interval is not shorter than the worker timeout: workers will be marked DOWN between reports",
			"health_interval", cfg.HealthInterval, "worker_timeout", cfg.WorkerTimeout)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, store: cfg.Store, procs: newTable(), fleet: newFleet(), bufs: grpcbuf.New(),
		inputs: inputs{dir: filepath.Join(cfg.DataDir, "input"), uploads: filepath.Join(cfg.DataDir, "upload"), maxUpload: cfg.MaxStdin}, bornAt: time.Now()}
	if m.store == nil {
		st, err := store.OpenJetStream(ctx, store.Config{
			Dir:                   cfg.DataDir,
			MaxOutputBytes:        cfg.MaxOutputBytes,
			MaxProcessOutputBytes: cfg.MaxProcessOutputBytes,
			Logger:                cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("open store in %s: %w", cfg.DataDir, err)
		}
		m.store = st
	}
	m.registry = registry.New(registry.Config{Timeout: cfg.WorkerTimeout, OnChange: m.workerChanged})
	m.workers = newConnections()
	m.metrics = newManagerMetrics(m)
	m.runCtx, m.stopRuns = context.WithCancel(context.Background())

	if err := m.load(ctx); err != nil {
		m.store.Close()
		return nil, err
	}
	var err error
	if m.sec, err = newSecurity(cfg, m.log); err != nil {
		m.store.Close()
		return nil, err
	}
	if m.grpcLis, err = net.Listen("tcp", cfg.Listen); err != nil {
		m.sec.close()
		m.store.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	m.grpcLis = rawReads(m.grpcLis)
	if cfg.HTTP != "-" {
		if m.httpLis, err = net.Listen("tcp", cfg.HTTP); err != nil {
			m.grpcLis.Close()
			m.sec.close()
			m.store.Close()
			return nil, fmt.Errorf("listen on %s: %w", cfg.HTTP, err)
		}
	}
	m.server = grpc.NewServer(
		experimental.BufferPool(m.bufs),
		grpc.ForceServerCodecV2(grpcbuf.NewCodec(m.bufs)),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Pings a client idle for a minute, so that a dead one is
			// noticed. Each connection's keepalive goroutine wakes every
			// Time even when the client is busy, and every worker holds a
			// connection: at 10 s, 10,000 workers cost a tenth of the
			// manager's idle CPU this way. A worker that dies is noticed
			// sooner by its status stream.
			Time:    time.Minute,
			Timeout: 5 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// Must allow the clients' ping interval (see internal/client), or
			// healthy idle clients would be cut off with "too many pings".
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.MaxRecvMsgSize(8<<20),
		grpc.MaxSendMsgSize(8<<20),
		// Each worker holds a connection to this server for its status
		// stream (ReportStatus), so these are per worker. Fixed windows:
		// with grpc's dynamic ones the server answers each DATA frame it
		// receives, so every worker's every report, with a PING to
		// estimate the bandwidth-delay product. Nothing large comes in
		// (requests, reports), so 1 MiB is ample, and nothing is allocated
		// for it.
		grpc.StaticStreamWindowSize(1<<20),
		grpc.StaticConnWindowSize(1<<20),
		// How grpc reads each connection: see readBufferSize.
		grpc.ReadBufferSize(m.sec.readBufferSize()),
		// Followers get output in 256 KiB chunks: grpc's 32 KiB write
		// buffer made eight writes of each. grpc takes the buffer from a
		// pool for each flush, so an idle connection (each worker's
		// status stream) holds none; but 10,000 workers registering at
		// once flush at once: 1 MiB buffers cost up to 8 KiB of RSS per
		// worker (make bench, scenario 7), 256 KiB within its noise.
		grpc.WriteBufferSize(256<<10),
		m.sec.serverOption(),
		grpc.ChainUnaryInterceptor(m.calls.count, m.metrics.grpcServer.UnaryServerInterceptor(), m.authUnary),
		grpc.ChainStreamInterceptor(unlessReportStatus(m.metrics.grpcServer.StreamServerInterceptor()), m.authStream),
	)
	pb.RegisterSecurityServiceServer(m.server, &securityServer{m: m})
	pb.RegisterWorkerRegistrationServiceServer(m.server, &registrationServer{m: m})
	pb.RegisterProcessManagementServiceServer(m.server, &processServer{m: m})
	m.health = health.NewServer()
	healthpb.RegisterHealthServer(m.server, m.health)
	reflection.Register(m.server)
	m.metrics.grpcServer.InitializeMetrics(m.server)
	return m, nil
}

// unlessReportStatus applies a stream interceptor to every stream but the
// workers' ReportStatus: per-message accounting on a stream that every
// worker holds, for a report every few seconds, was a tenth of the
// manager's CPU at 10,000 idle workers, and tells nothing the registry's
// worker gauges do not.
func unlessReportStatus(i grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod == pb.WorkerRegistrationService_ReportStatus_FullMethodName {
			return handler(srv, ss)
		}
		return i(srv, ss, info, handler)
	}
}

// Addr is the address the gRPC server listens on.
func (m *Manager) Addr() string { return m.grpcLis.Addr().String() }

// HTTPAddr is the address of the HTTP server, or "" when it is disabled.
func (m *Manager) HTTPAddr() string {
	if m.httpLis == nil {
		return ""
	}
	return m.httpLis.Addr().String()
}

// load restores workers and processes from the store and resumes tracking
// every process that had not ended.
func (m *Manager) load(ctx context.Context) error {
	ws, err := m.store.Workers(ctx)
	if err != nil {
		return fmt.Errorf("load workers: %w", err)
	}
	m.registry.Load(ws)
	ps, err := m.store.Processes(ctx)
	if err != nil {
		return fmt.Errorf("load processes: %w", err)
	}
	for _, p := range ps {
		if !p.State.Terminal() {
			end, err := m.store.OutputEnd(ctx, p.ID)
			if err != nil {
				return fmt.Errorf("load output end of %s: %w", p.ID, err)
			}
			p.OutputBytes = end
		}
		e := m.procs.add(p)
		if !p.State.Terminal() && p.WorkerID != "" {
			m.registry.Hold(p.WorkerID)
			m.procs.setSlot(e)
		}
	}
	if err := m.loadRuns(ctx); err != nil {
		return err
	}
	// An input whose record was never stored (the manager stopped in
	// between), or whose readers ended as it stopped.
	err = m.inputs.prune(func(id string) bool {
		if e, ok := m.procs.get(devops.ProcessID(id)); ok {
			p, _ := m.procs.snapshot(e)
			return !p.State.Terminal()
		}
		r, err := m.FleetRun(devops.RunID(id))
		return err == nil && !r.State.Terminal()
	})
	if err != nil {
		m.log.Warn("remove inputs no process reads", "err", err)
	}
	m.inputs.removeParts()
	if err := m.inputs.pruneUploads(time.Now().Add(-uploadTTL)); err != nil {
		m.log.Warn("remove old uploads", "err", err)
	}
	m.log.Info("loaded state", "workers", len(ws), "processes", len(ps))
	return nil
}

// Run serves until ctx ends, then stops (shutdown: unary calls under way
// get up to 5 s, streams are cut) and closes the store.
func (m *Manager) Run(ctx context.Context) error {
	// Workers loaded from the store are DOWN until they report again: each
	// registers anew and opens its ReportStatus stream by itself.
	for _, e := range m.procs.live() {
		m.startTracking(e)
	}
	m.driveAll()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.retain(m.runCtx)
	}()
	m.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	errc := make(chan error, 2)
	go func() { errc <- m.server.Serve(m.grpcLis) }()
	if m.httpLis != nil {
		m.httpSrv = &http.Server{Handler: metrics.Handler(m.metrics.reg, m.health), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := m.httpSrv.Serve(m.httpLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	m.log.Info("manager serving", "grpc", m.Addr(), "http", m.HTTPAddr(), "version", devops.Version)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serve: %w", err)
	}
	m.shutdown()
	return err
}

// shutdown stops serving: it takes no new call, lets the unary calls under
// way finish (for up to 5 s), then cuts the streams. Those never end by
// themselves: every worker's status stream, every follower of output.
// Waiting for them (grpc's GracefulStop) made every stop of a manager with
// workers take its whole 5 s, a restart 5 s without a manager. Cutting them
// is what a crash does, gently: workers and followers reconnect to the next
// manager and go on from where they were.
func (m *Manager) shutdown() {
	m.stopping.Store(true)
	m.health.Shutdown()
	stopped := make(chan struct{})
	go func() { m.server.GracefulStop(); close(stopped) }()
	select {
	case <-m.calls.drain():
	case <-time.After(5 * time.Second):
	}
	m.server.Stop()
	<-stopped
	if m.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		m.httpSrv.Shutdown(ctx)
		cancel()
	}
	// Trackers stop without changing any record: the processes go on on their
	// workers, and the next manager on this data dir picks them up.
	m.stopRuns()
	m.workers.closeAll()
	m.wg.Wait()
	m.registry.Stop()
	if err := m.store.Close(); err != nil {
		m.log.Error("close store", "err", err)
	}
	m.sec.close()
}

// unaryCalls counts the unary calls being served; drain waits for them to
// end and refuses new ones.
type unaryCalls struct {
	mu       sync.Mutex
	n        int
	draining bool
	idle     chan struct{} // closed once n is 0 while draining
}

// count is a unary interceptor that counts the call while it is served.
func (c *unaryCalls) count(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c.mu.Lock()
	if c.draining {
		c.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "the manager is stopping")
	}
	c.n++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.n--; c.n == 0 && c.idle != nil {
			close(c.idle)
			c.idle = nil
		}
		c.mu.Unlock()
	}()
	return handler(ctx, req)
}

// drain refuses new calls and returns a channel closed once none is served.
func (c *unaryCalls) drain() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	idle := make(chan struct{})
	if c.n == 0 {
		close(idle)
	} else {
		c.idle = idle
	}
	return idle
}

// workerChanged persists a worker's new record and reacts to its state.
func (m *Manager) workerChanged(w devops.Worker, old devops.WorkerState) {
	if err := m.store.PutWorker(context.Background(), w); err != nil {
		m.log.Error("persist worker", "worker", w.Name, "err", err)
	}
	if old != w.State {
		m.log.Info("worker state", "worker", w.Name, "worker_id", w.ID, "from", old, "to", w.State)
	}
	if w.State == devops.WorkerDown && old != devops.WorkerDown && m.stillDown(w.ID) {
		m.procs.cancelStreamsOn(w.ID)
	}
}

// stillDown reports whether the worker is DOWN now. The registry tells of
// its changes from a goroutine of its own, after the listener persisted the
// ones before, so a worker may be UP again, with calls to it under way,
// by the time its going DOWN is told; those calls must not be cut.
func (m *Manager) stillDown(id devops.WorkerID) bool {
	w, err := m.registry.Get(string(id))
	return err != nil || w.ID != id || w.State == devops.WorkerDown
}

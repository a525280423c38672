package manager

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/retry"
	"github.com/devops-platform/devops/internal/scheduler"
	"github.com/devops-platform/devops/internal/wire"
)

// connections holds one gRPC connection per worker, and the goroutines that
// keep its health and metrics streams open.
type connections struct {
	mu    sync.Mutex // protects conns
	conns map[devops.WorkerID]*workerConn
}

type workerConn struct {
	address string
	conn    *grpc.ClientConn
	client  pb.WorkerProcessServiceClient
	cancel  context.CancelFunc // ends the health and metrics loops
	poke    chan struct{}      // wakes the health loop from its backoff
}

func newConnections() *connections {
	return &connections{conns: make(map[devops.WorkerID]*workerConn)}
}

func (c *connections) get(id devops.WorkerID) (*workerConn, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wc, ok := c.conns[id]
	return wc, ok
}

func (c *connections) remove(id devops.WorkerID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wc, ok := c.conns[id]; ok {
		wc.cancel()
		wc.conn.Close()
		delete(c.conns, id)
	}
}

func (c *connections) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, wc := range c.conns {
		wc.cancel()
		wc.conn.Close()
		delete(c.conns, id)
	}
}

// client returns the gRPC client of a worker; an error wrapping
// devops.ErrUnavailable when the manager has no connection to it.
func (m *Manager) client(id devops.WorkerID) (pb.WorkerProcessServiceClient, error) {
	wc, ok := m.workers.get(id)
	if !ok {
		return nil, fmt.Errorf("worker %s: no connection: %w", id, devops.ErrUnavailable)
	}
	return wc.client, nil
}

// watchWorker connects to the worker (or reconnects when its address
// changed) and keeps its health and metrics streams open.
func (m *Manager) watchWorker(w devops.Worker) {
	m.workers.mu.Lock()
	defer m.workers.mu.Unlock()
	if wc, ok := m.workers.conns[w.ID]; ok {
		if wc.address == w.Address {
			select {
			case wc.poke <- struct{}{}:
			default:
			}
			return
		}
		wc.cancel()
		wc.conn.Close()
		delete(m.workers.conns, w.ID)
	}
	conn, err := grpc.NewClient(w.Address,
		grpc.WithTransportCredentials(m.sec.workerCreds(w.Name)),
		// No grpc keepalive: its timer wakes a goroutine every few
		// seconds for each worker even when it never pings (at 10,000
		// idle workers, a sixth of the manager's CPU). The kernel watches
		// these connections instead, at no cost while they are healthy.
		grpc.WithContextDialer(m.dialWorker),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20)),
		// One connection per worker, most of them idle: grpc's 32 KiB read
		// and write buffers would be 64 KiB a worker before anything else.
		// Output still arrives in chunks of up to 256 KiB; these only size
		// the socket reads and writes.
		grpc.WithReadBufferSize(8<<10),
		grpc.WithWriteBufferSize(8<<10),
		// Fixed flow-control windows. With grpc's default dynamic windows
		// the manager answers every DATA frame it receives with a PING to
		// estimate the bandwidth-delay product, so each health message of
		// each idle worker cost a round trip more (a CPU profile at 10,000
		// idle workers). These are the most the estimator grows windows
		// to; nothing is allocated until output arrives.
		grpc.WithStaticStreamWindowSize(16<<20),
		grpc.WithStaticConnWindowSize(16<<20),
		grpc.WithChainUnaryInterceptor(m.metrics.grpcClient.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(m.metrics.grpcClient.StreamClientInterceptor()),
	)
	if err != nil {
		m.log.Error("connect to worker", "worker", w.Name, "address", w.Address, "err", err)
		return
	}
	ctx, cancel := context.WithCancel(m.runCtx)
	wc := &workerConn{address: w.Address, conn: conn, client: pb.NewWorkerProcessServiceClient(conn), cancel: cancel, poke: make(chan struct{}, 1)}
	m.workers.conns[w.ID] = wc
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.healthLoop(ctx, w, wc) }()
	go func() { defer m.wg.Done(); m.metricsLoop(ctx, w, wc) }()
}

// dialWorker connects to a worker with TCP keepalive probes once nothing
// has come from it for --worker-timeout, and a user timeout as long for
// what it does not acknowledge, so the kernel closes a connection to a
// worker that is gone (dead host, silent network) and the next call dials
// again instead of waiting on it. Both are at least 5 s: shorter, a few
// lost packets would cut a healthy connection. A hung worker's kernel still
// answers both: the health stream's watchdog catches it, and the
// connection is still good once it runs again.
func (m *Manager) dialWorker(ctx context.Context, addr string) (net.Conn, error) {
	silence := max(m.cfg.WorkerTimeout, 5*time.Second)
	d := net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: silence, Interval: time.Second, Count: 3},
		Control: func(_, _ string, c syscall.RawConn) error {
			return setUserTimeout(c, silence)
		},
	}
	return d.DialContext(ctx, "tcp", addr)
}

// healthLoop holds the worker's HealthCheck stream open. A broken stream
// marks the worker DOWN at once; a silent one is caught by the registry's
// heartbeat timer.
func (m *Manager) healthLoop(ctx context.Context, w devops.Worker, wc *workerConn) {
	log := m.log.With("worker", w.Name, "worker_id", w.ID)
	b := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for ctx.Err() == nil {
		err := m.healthStream(ctx, w.ID, wc)
		if ctx.Err() != nil {
			return
		}
		m.registry.MarkDown(w.ID)
		log.Debug("health stream ended", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-wc.poke:
			b.Reset()
		case <-time.After(b.Next()):
		}
	}
}

func (m *Manager) healthStream(ctx context.Context, id devops.WorkerID, wc *workerConn) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A silent worker (hung, or cut off by the network) sends nothing and
	// breaks nothing: the watchdog ends the call, so the loop reconnects.
	watchdog := time.AfterFunc(m.cfg.WorkerTimeout, func() {
		cancel(fmt.Errorf("no health report for %v", m.cfg.WorkerTimeout))
	})
	defer watchdog.Stop()
	stream, err := wc.client.HealthCheck(ctx, &pb.HealthCheckRequest{Interval: wire.Duration(m.cfg.HealthInterval)})
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				return cause
			}
			return err
		}
		watchdog.Reset(m.cfg.WorkerTimeout)
		m.registry.Heartbeat(id, msg.GetState() == pb.WorkerState_WORKER_STATE_DRAINING)
		m.reconcile(ctx, id, wc, msg.GetProcessIds())
	}
}

// reconcile tells a worker to kill what it runs for processes the manager
// has given up on (LOST, or unknown): no zombie work.
func (m *Manager) reconcile(ctx context.Context, id devops.WorkerID, wc *workerConn, running []string) {
	for _, pid := range running {
		e, ok := m.procs.get(devops.ProcessID(pid))
		if ok {
			p, _ := m.procs.snapshot(e)
			if !p.State.Terminal() {
				continue
			}
			if p.State != devops.StateLost {
				continue // ended normally; the worker just has not forgotten it yet
			}
		}
		m.log.Warn("worker runs a process the manager gave up on; killing it", "worker", m.workerName(id), "worker_id", id, "process_id", pid)
		_, err := wc.client.TerminateProcess(ctx, &pb.TerminateProcessRequest{ProcessId: pid, Signal: int32(syscall.SIGKILL)})
		if err != nil {
			m.log.Warn("kill abandoned process", "worker", m.workerName(id), "worker_id", id, "process_id", pid, "err", err)
		}
	}
}

func (m *Manager) metricsLoop(ctx context.Context, w devops.Worker, wc *workerConn) {
	b := retry.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		stream, err := wc.client.ReportMetrics(ctx, &pb.ReportMetricsRequest{Interval: wire.Duration(m.cfg.MetricsInterval)})
		if err == nil {
			for {
				msg, rerr := stream.Recv()
				if rerr != nil {
					break
				}
				b.Reset()
				m.registry.SetMetrics(w.ID, wire.MetricsFromPB(msg))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(b.Next()):
		}
	}
}

// register admits a worker and starts watching it.
func (m *Manager) register(ctx context.Context, req *pb.RegisterWorkerRequest) (devops.Worker, error) {
	if req.GetName() == "" {
		return devops.Worker{}, fmt.Errorf("%w: worker name is empty", devops.ErrInvalid)
	}
	if err := scheduler.ValidateLabels(req.GetLabels()); err != nil {
		return devops.Worker{}, err
	}
	if req.GetCapacity() <= 0 {
		return devops.Worker{}, fmt.Errorf("%w: capacity must be positive", devops.ErrInvalid)
	}
	addr, err := dialAddress(ctx, req.GetAddress())
	if err != nil {
		return devops.Worker{}, err
	}
	id := devops.WorkerID(req.GetWorkerId())
	if id == "" {
		id = devops.WorkerID(newID())
	}
	w, err := m.registry.Register(devops.Worker{
		ID:          id,
		Name:        req.GetName(),
		Labels:      req.GetLabels(),
		Address:     addr,
		Capacity:    int(req.GetCapacity()),
		Fingerprint: wire.FingerprintFromPB(req.GetFingerprint()),
		Version:     req.GetVersion(),
	})
	if err != nil {
		return devops.Worker{}, err
	}
	m.watchWorker(w)
	return w, nil
}

// Drain stops new work for a worker (or, with undo, takes it back): the
// worker is told first, so that it refuses what the manager might still send,
// then the scheduler stops choosing it. A drained worker deregisters by
// itself once its processes have finished.
func (m *Manager) Drain(ctx context.Context, worker string, undo bool) (devops.Worker, error) {
	w, err := m.registry.Get(worker)
	if err != nil {
		return devops.Worker{}, err
	}
	client, err := m.client(w.ID)
	if err != nil {
		return devops.Worker{}, err
	}
	if _, err := client.Drain(ctx, &pb.DrainRequest{Undo: undo}); err != nil {
		return devops.Worker{}, fmt.Errorf("drain %s: %v: %w", w.Name, status.Convert(err).Message(), devops.ErrUnavailable)
	}
	m.log.Info("worker drain", "worker", w.Name, "undo", undo)
	return m.registry.SetDraining(w.ID, !undo)
}

// deregister forgets a worker that drained and left.
func (m *Manager) deregister(ctx context.Context, id devops.WorkerID) error {
	w, err := m.registry.Get(string(id))
	if err != nil {
		return err
	}
	// A worker leaves only once the manager has recorded how each of its
	// processes ended; until then it keeps serving their streams and asks again.
	live := m.procs.list(func(p devops.Process) bool { return p.WorkerID == id && !p.State.Terminal() })
	if n := len(live); n > 0 {
		return status.Errorf(codes.FailedPrecondition, "worker %s: the manager has not yet recorded the end of %d processes; ask again", w.Name, n)
	}
	m.workers.remove(id)
	m.registry.Remove(id)
	if err := m.store.DeleteWorker(ctx, id); err != nil {
		return fmt.Errorf("deregister %s: %w", w.Name, err)
	}
	m.log.Info("worker deregistered", "worker", w.Name, "worker_id", id)
	return nil
}

// dialAddress turns the address a worker advertises into one the manager
// can dial: a missing or unspecified host is replaced by the address the
// worker's call came from.
func dialAddress(ctx context.Context, advertised string) (string, error) {
	host, port, err := net.SplitHostPort(advertised)
	if err != nil {
		return "", fmt.Errorf("%w: worker address %q: %v", devops.ErrInvalid, advertised, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return advertised, nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", fmt.Errorf("%w: worker address %q has no host and the caller's is unknown", devops.ErrInvalid, advertised)
	}
	peerHost, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return "", fmt.Errorf("%w: caller address %q: %v", devops.ErrInvalid, p.Addr, err)
	}
	return net.JoinHostPort(peerHost, port), nil
}

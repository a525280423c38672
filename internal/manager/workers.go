package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/grpcbuf"
	"github.com/devops-platform/devops/internal/registry"
	"github.com/devops-platform/devops/internal/retry"
	"github.com/devops-platform/devops/internal/scheduler"
	"github.com/devops-platform/devops/internal/wire"
)

// connections holds, for each worker, the manager's gRPC connection to it
// and which of its ReportStatus streams is current.
//
// An idle worker costs the manager one stream on a connection the worker
// opened, and nothing else: the connection to the worker is made on the
// first call to it, and goes idle again (grpc.WithIdleTimeout) once no call
// has been in flight for Config.WorkerIdleTimeout. Goroutines are most of
// what a worker costs (their stacks); a grpc client connection runs five,
// a stream two, a server-side connection three and a server stream one.
type connections struct {
	mu    sync.Mutex // protects the fields below
	conns map[devops.WorkerID]*workerConn
	seq   uint64 // the last stream token handed out
}

type workerConn struct {
	address string                        // where conn dials
	conn    *grpc.ClientConn              // nil until the manager first calls the worker
	client  pb.WorkerProcessServiceClient // on conn
	// stream is the token of the current ReportStatus stream, 0 for none.
	// It changes under connections.mu; the stream reads it without the
	// lock at each report.
	stream atomic.Uint64
}

func newConnections() *connections {
	return &connections{conns: make(map[devops.WorkerID]*workerConn)}
}

// remove forgets a worker: its connection closes and its stream, if any,
// is no longer current.
func (c *connections) remove(id devops.WorkerID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wc, ok := c.conns[id]; ok {
		wc.cut()
		delete(c.conns, id)
	}
}

func (c *connections) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, wc := range c.conns {
		wc.cut()
		delete(c.conns, id)
	}
}

// cut closes the connection and makes the current stream no longer
// current. The caller holds connections.mu.
func (wc *workerConn) cut() {
	wc.closeConn()
	wc.stream.Store(0)
}

func (wc *workerConn) closeConn() {
	if wc.conn != nil {
		wc.conn.Close()
		wc.conn, wc.client = nil, nil
	}
}

// getLocked returns the worker's entry, made if missing.
func (c *connections) getLocked(id devops.WorkerID) *workerConn {
	wc, ok := c.conns[id]
	if !ok {
		wc = &workerConn{}
		c.conns[id] = wc
	}
	return wc
}

// registered notes the address a worker registered with. A connection to
// another address is closed (the worker restarted elsewhere: what was in
// flight on it is gone with the old process). So is one to the same
// address that is waiting out a reconnect backoff: the worker is back, and
// the next call dials it at once. (Not ResetConnectBackoff: grpc-go 1.85
// reads the connection's subconnections outside its lock there, a data
// race with a connection being made; closing a failed connection loses
// nothing.)
func (c *connections) registered(id devops.WorkerID, address string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wc := c.getLocked(id)
	if wc.conn != nil && (wc.address != address || wc.conn.GetState() == connectivity.TransientFailure) {
		wc.closeConn()
	}
	wc.address = address
}

// openStream makes a new ReportStatus stream of the worker its current one
// and returns its token, and the entry whose stream field says whether it
// is still current. An older stream still open is superseded: it ends at
// its next message.
func (c *connections) openStream(id devops.WorkerID) (*workerConn, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	wc := c.getLocked(id)
	wc.stream.Store(c.seq)
	return wc, c.seq
}

// closeStream records that the stream with token ended. It reports whether
// no newer stream of the worker replaced it, so that the worker is down.
func (c *connections) closeStream(id devops.WorkerID, token uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	wc, ok := c.conns[id]
	if !ok {
		return true
	}
	wc.stream.CompareAndSwap(token, 0)
	return wc.stream.Load() == 0
}

// cut closes the connection to the worker and makes its current stream no
// longer current: it ends at its next message, and nothing it says counts.
func (c *connections) cut(id devops.WorkerID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wc, ok := c.conns[id]; ok {
		wc.cut()
	}
}

// client returns the gRPC client of a worker, connecting on first use; an
// error wrapping devops.ErrUnavailable when the manager does not know where
// the worker is.
func (m *Manager) client(id devops.WorkerID) (pb.WorkerProcessServiceClient, error) {
	w, err := m.registry.Get(string(id))
	if err != nil || w.ID != id {
		return nil, fmt.Errorf("worker %s: no connection: %w", id, devops.ErrUnavailable)
	}
	m.workers.mu.Lock()
	defer m.workers.mu.Unlock()
	wc := m.workers.getLocked(id)
	if wc.conn != nil && wc.address == w.Address {
		return wc.client, nil
	}
	wc.closeConn()
	conn, err := m.dialWorkerConn(w)
	if err != nil {
		return nil, fmt.Errorf("worker %s: connect to %s: %v: %w", w.Name, w.Address, err, devops.ErrUnavailable)
	}
	wc.address, wc.conn, wc.client = w.Address, conn, pb.NewWorkerProcessServiceClient(conn)
	return wc.client, nil
}

// dialWorkerConn makes the manager's client connection to a worker. It
// connects on the first call, not here.
func (m *Manager) dialWorkerConn(w devops.Worker) (*grpc.ClientConn, error) {
	return grpc.NewClient(w.Address,
		grpc.WithTransportCredentials(m.sec.workerCreds(w.Name)),
		grpc.WithDisableServiceConfig(), // no TXT lookup: see client.Dial
		experimental.WithBufferPool(m.bufs),
		// No grpc keepalive: its timer wakes a goroutine every few
		// seconds for each worker even when it never pings. The kernel
		// watches these connections instead, at no cost while they are
		// healthy, and the worker's ReportStatus stream tells whether the
		// worker itself is alive.
		grpc.WithContextDialer(m.dialWorker),
		// A connection with no call in flight for this long is closed, and
		// made again by the next call: an idle worker costs the manager no
		// connection of its own (a connection is five goroutines). While a
		// worker runs something, the output stream keeps it open.
		grpc.WithIdleTimeout(m.cfg.WorkerIdleTimeout),
		// A worker that is down is tried again within a few seconds of
		// the call that needs it; registered drops a failed connection
		// when the worker comes back.
		retry.Connect(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.ForceCodecV2(grpcbuf.NewCodec(m.bufs))),
		// Few connections are open at once now, but each may carry output
		// at full speed: grpc's default 32 KiB read buffer.
		//
		// Fixed flow-control windows. With grpc's default dynamic windows
		// the manager answers every DATA frame it receives with a PING to
		// estimate the bandwidth-delay product: a round trip more per
		// output chunk. A window is what the manager holds per worker
		// when the worker sends faster than it stores: 4 MiB, not the
		// 16 MiB the estimator grows to, took a stalled follower's
		// manager growth from 52 to 33 MiB with bandwidth unchanged
		// (1 GiB and 10M lines, two interleaved runs each).
		grpc.WithStaticStreamWindowSize(4<<20),
		grpc.WithStaticConnWindowSize(4<<20),
		grpc.WithChainUnaryInterceptor(m.metrics.grpcClient.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(m.metrics.grpcClient.StreamClientInterceptor()),
	)
}

// dialWorker connects to a worker with TCP keepalive probes once nothing
// has come from it for --worker-timeout, and a user timeout as long for
// what it does not acknowledge, so the kernel closes a connection to a
// worker that is gone (dead host, silent network) and the next call dials
// again instead of waiting on it. Both are at least 5 s: shorter, a few
// lost packets would cut a healthy connection. A hung worker's kernel still
// answers both: its ReportStatus stream falls silent, and the registry's
// timer marks it DOWN.
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

// ReportStatus is the handler of a worker's status stream (reportStatus).
func (s *registrationServer) ReportStatus(stream pb.WorkerRegistrationService_ReportStatusServer) error {
	return toStatus(s.m.reportStatus(stream))
}

// reportStatus serves a worker's ReportStatus stream: each report is a
// heartbeat (the registry marks the worker DOWN after --worker-timeout
// without one: a hung worker), its metrics sample is kept, and the
// processes it says it runs are reconciled. The stream's end marks the
// worker DOWN at once (a killed worker's kernel closes the connection),
// unless a newer stream of the same worker replaced it.
//
// The handler's goroutine waits in Recv for as long as the worker is up,
// one per worker, so its stack is per worker too. The runtime grows a
// stack to fit the deepest call and shrinks it only while its goroutine
// uses less than a quarter of it. So what stays on the stack under the
// parked Recv is kept small (the loop is statusStream.serve;
// openStatusStream's frame is gone once the stream is open), and the deep
// work a report may cause (a worker coming UP is persisted and logged) is
// done on the registry's goroutine, not this one: the stack stays at 8 KiB
// instead of 16 (bench/FINDINGS.md).
func (m *Manager) reportStatus(stream pb.WorkerRegistrationService_ReportStatusServer) error {
	s, first, err := m.openStatusStream(stream)
	if err != nil {
		return err
	}
	defer s.close()
	return s.serve(stream, first)
}

// statusStream is a worker's status stream once it is open.
type statusStream struct {
	m     *Manager
	id    devops.WorkerID
	name  string
	heart *registry.Heart
	wc    *workerConn
	token uint64
}

// openStatusStream reads a worker's first report, checks that the worker
// is registered and is who speaks, and sends it its settings.
func (m *Manager) openStatusStream(stream pb.WorkerRegistrationService_ReportStatusServer) (*statusStream, *pb.StatusReport, error) {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return nil, nil, err
	}
	id := devops.WorkerID(first.GetWorkerId())
	w, err := m.registry.Get(string(id))
	if err != nil || w.ID != id {
		return nil, nil, status.Errorf(codes.NotFound, "worker %q is not registered: register again", id)
	}
	if err := m.speaksFor(ctx, w, "worker.report"); err != nil {
		return nil, nil, err
	}
	heart, err := m.registry.Heart(id)
	if err != nil {
		return nil, nil, status.Errorf(codes.NotFound, "worker %q is not registered: register again", id)
	}
	s := &statusStream{m: m, id: id, name: w.Name, heart: heart}
	s.wc, s.token = m.workers.openStream(id)
	if err := stream.Send(&pb.StatusSettings{
		HealthInterval:  wire.Duration(m.cfg.HealthInterval),
		MetricsInterval: wire.Duration(m.cfg.MetricsInterval),
	}); err != nil {
		s.close()
		return nil, nil, err
	}
	return s, first, nil
}

// close marks the worker DOWN unless a newer stream replaced this one, or
// the stream ends because the manager stops: the next manager loads every
// worker DOWN until it hears from it, and marking and storing each
// (thousands, at once) made a stop take seconds more.
func (s *statusStream) close() {
	if s.m.workers.closeStream(s.id, s.token) && !s.m.stopping.Load() {
		s.m.registry.MarkDown(s.id)
	}
}

// serve takes the worker's reports until the stream ends.
func (s *statusStream) serve(stream pb.WorkerRegistrationService_ReportStatusServer, msg *pb.StatusReport) error {
	for {
		if err := s.report(msg); err != nil {
			return err
		}
		// Into the same message each time: the codec resets it with
		// ResetVT, which puts its health and metrics messages back in
		// their pools for the decode to take (internal/grpcbuf). Nothing
		// of the last report is kept.
		if err := stream.RecvMsg(msg); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// report takes one report: a heartbeat, a metrics sample, the processes
// the worker runs.
func (s *statusStream) report(msg *pb.StatusReport) error {
	h := msg.GetHealth()
	if h != nil {
		s.heart.Beat(h.GetState() == pb.WorkerState_WORKER_STATE_DRAINING, h.GetDrainGeneration())
	}
	if ms := msg.GetMetrics(); ms != nil {
		s.m.registry.SetMetrics(s.id, wire.MetricsFromPB(ms))
	}
	// Checked after the heartbeat: a cut that came in between has its
	// MarkDown undone by it, and close marks the worker DOWN again.
	if s.wc.stream.Load() != s.token {
		return status.Errorf(codes.Aborted, "worker %s: a newer stream replaced this one, or the worker was cut off", s.name)
	}
	if h != nil {
		s.m.reconcile(s.id, h.GetProcessIds())
	}
	return nil
}

// reconcile tells a worker to kill what it runs for processes the manager
// has given up on (LOST, or unknown): no zombie work. The kills run apart
// from the stream, so that a worker slow to answer them does not hold up
// its own heartbeats; each is bounded by the worker timeout, and the next
// report asks again for what is still running.
func (m *Manager) reconcile(id devops.WorkerID, running []string) {
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
		log := m.log.With("worker", m.workerName(id), "worker_id", id, "process_id", pid)
		log.Warn("worker runs a process the manager gave up on; killing it")
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			ctx, cancel := context.WithTimeout(m.runCtx, m.cfg.WorkerTimeout)
			defer cancel()
			client, err := m.client(id)
			if err == nil {
				_, err = client.TerminateProcess(ctx, &pb.TerminateProcessRequest{ProcessId: pid, Signal: int32(syscall.SIGKILL)})
			}
			if err != nil {
				log.Warn("kill abandoned process", "err", err)
			}
		}()
	}
}

// register admits a worker. It is UP once its first status report arrives
// (reportStatus).
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
	m.workers.registered(w.ID, w.Address)
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
	resp, err := client.Drain(ctx, &pb.DrainRequest{Undo: undo})
	if err != nil {
		return devops.Worker{}, fmt.Errorf("drain %s: %v: %w", w.Name, status.Convert(err).Message(), devops.ErrUnavailable)
	}
	m.log.Info("worker drain", "worker", w.Name, "undo", undo)
	return m.registry.SetDraining(w.ID, !undo, resp.GetDrainGeneration())
}

// deregister forgets a worker that drained and left.
func (m *Manager) deregister(ctx context.Context, id devops.WorkerID) error {
	w, err := m.registry.Get(string(id))
	if err != nil {
		return err
	}
	if err := m.speaksFor(ctx, w, "worker.deregister"); err != nil {
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

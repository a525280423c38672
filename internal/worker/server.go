package worker

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/wire"
)

// server is the worker's WorkerProcessService, called by the manager.
type server struct {
	pb.UnimplementedWorkerProcessServiceServer
	w *Worker
}

func (s *server) ExecuteCommand(req *pb.ExecuteCommandRequest, stream pb.WorkerProcessService_ExecuteCommandServer) error {
	id := devops.ProcessID(req.GetProcessId())
	if id == "" {
		return status.Error(codes.InvalidArgument, "process id is empty")
	}
	spec := wire.SpecFromPB(req.GetSpec())
	if !req.GetAttachOnly() {
		if err := spec.Validate(); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
	}
	if req.GetFromOffset() < 0 {
		return status.Error(codes.InvalidArgument, "negative offset")
	}
	p, err := s.w.start(stream.Context(), id, spec, req.GetAttachOnly())
	if err != nil {
		return err
	}
	if err := stream.Send(&pb.ExecuteCommandResponse{Event: &pb.ExecuteCommandResponse_Started{Started: &pb.Started{
		StartedAt: wire.Timestamp(p.started), Pid: int32(p.x.Pid()),
	}}}); err != nil {
		return err
	}
	// The stream ends when the worker stops, though the process runs on:
	// the manager attaches again, to this worker or the next one.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-s.w.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	err = p.spool.read(ctx, req.GetFromOffset(), func(c devops.Chunk) error {
		return stream.Send(&pb.ExecuteCommandResponse{Event: &pb.ExecuteCommandResponse_Output{Output: wire.ChunkToPB(id, c)}})
	})
	if errors.Is(err, devops.ErrOutOfRange) {
		return status.Error(codes.OutOfRange, err.Error())
	}
	if err != nil {
		if isClosed(s.w.quit) {
			return status.Error(codes.Unavailable, "worker is stopping")
		}
		return err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		if isClosed(p.done) {
			break // ended as the worker stops: the exit still goes out
		}
		if isClosed(s.w.quit) {
			return status.Error(codes.Unavailable, "worker is stopping")
		}
		return ctx.Err()
	}
	if err := stream.Send(&pb.ExecuteCommandResponse{Event: &pb.ExecuteCommandResponse_Exit{Exit: wire.ExitToPB(p.exit)}}); err != nil {
		return err
	}
	p.delivered.Do(func() { close(p.sent) })
	return nil
}

func (s *server) TerminateProcess(ctx context.Context, req *pb.TerminateProcessRequest) (*pb.TerminateProcessResponse, error) {
	p, ok := s.w.get(devops.ProcessID(req.GetProcessId()))
	if !ok {
		return nil, status.Errorf(codes.NotFound, "process %s is not known on this worker", req.GetProcessId())
	}
	sig := syscall.Signal(req.GetSignal())
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	grace := wire.FromDuration(req.GetGrace())
	if grace <= 0 {
		grace = devops.DefaultGrace
	}
	s.w.log.Info("terminating process", "process_id", p.id, "signal", sig, "grace", grace)
	p.x.Terminate(sig, grace)
	return &pb.TerminateProcessResponse{}, nil
}

func (s *server) HealthCheck(req *pb.HealthCheckRequest, stream pb.WorkerProcessService_HealthCheckServer) error {
	interval := max(wire.FromDuration(req.GetInterval()), 50*time.Millisecond)
	s.w.mu.Lock()
	s.w.healthSubs++
	s.w.mu.Unlock()
	defer func() {
		s.w.mu.Lock()
		s.w.healthSubs--
		s.w.lastHealth = time.Now()
		s.w.mu.Unlock()
	}()
	return s.every(stream.Context(), interval, func() error {
		running, ids, draining := s.w.snapshot()
		state := pb.WorkerState_WORKER_STATE_UP
		if draining {
			state = pb.WorkerState_WORKER_STATE_DRAINING
		}
		return stream.Send(&pb.HealthCheckResponse{
			State:      state,
			Running:    int32(running),
			Capacity:   int32(s.w.cfg.Capacity),
			Time:       wire.Timestamp(time.Now()),
			ProcessIds: ids,
		})
	})
}

func (s *server) ReportMetrics(req *pb.ReportMetricsRequest, stream pb.WorkerProcessService_ReportMetricsServer) error {
	interval := max(wire.FromDuration(req.GetInterval()), 100*time.Millisecond)
	return s.every(stream.Context(), interval, func() error {
		return stream.Send(wire.MetricsToPB(s.w.sample(stream.Context())))
	})
}

// every calls send at once and then every interval, until send fails, the
// call ends (nil) or the worker stops (Unavailable, so the manager
// reconnects elsewhere or later).
func (s *server) every(ctx context.Context, interval time.Duration, send func() error) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if err := send(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.w.quit:
			return status.Error(codes.Unavailable, "worker is stopping")
		case <-tick.C:
		}
	}
}

// sample reads the host's figures with gopsutil. A figure that cannot be
// read stays zero: metrics are advisory, and a missing one must not stop
// the stream.
func (w *Worker) sample(ctx context.Context) devops.Metrics {
	running, _, _ := w.snapshot()
	m := devops.Metrics{
		Time:      time.Now(),
		Running:   running,
		FreeSlots: max(w.cfg.Capacity-running, 0),
		Uptime:    time.Since(w.started),
		Version:   devops.Version,
	}
	if pct, err := cpu.PercentWithContext(ctx, 0, false); err == nil && len(pct) > 0 {
		m.CPUPercent = pct[0]
	}
	if l, err := load.AvgWithContext(ctx); err == nil {
		m.Load1, m.Load5, m.Load15 = l.Load1, l.Load5, l.Load15
	}
	if v, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		m.MemoryUsedBytes, m.MemoryTotalBytes = v.Used, v.Total
	}
	if d, err := disk.UsageWithContext(ctx, w.cfg.DataDir); err == nil {
		m.DiskUsedBytes, m.DiskFreeBytes = d.Used, d.Free
	}
	return m
}

func (s *server) Drain(ctx context.Context, req *pb.DrainRequest) (*pb.DrainResponse, error) {
	s.w.Drain(!req.GetUndo())
	return &pb.DrainResponse{}, nil
}

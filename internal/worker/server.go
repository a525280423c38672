package worker

import (
	"context"
	"errors"
	"math"
	"os"
	"runtime"
	"syscall"
	"time"

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
		if len(spec.Stdin) == 0 && spec.StdinBytes > 0 {
			// It came apart (PutStdin), unless this id started already:
			// then start attaches, and the file went to the process.
			path, err := s.w.stagedStdin(id, spec.StdinBytes)
			if err != nil && !s.w.known(id) {
				return status.Error(codes.FailedPrecondition, err.Error())
			}
			spec.StdinFile = path
		}
	}
	if req.GetFromOffset() < 0 {
		return status.Error(codes.InvalidArgument, "negative offset")
	}
	p, err := s.w.start(stream.Context(), id, spec, req.GetAttachOnly())
	if spec.StdinFile != "" {
		os.Remove(spec.StdinFile) // left when the start failed, or attached
	}
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

// HealthCheck is for tools and tests: the manager hears the same on the
// worker's status stream (report.go).
func (s *server) HealthCheck(req *pb.HealthCheckRequest, stream pb.WorkerProcessService_HealthCheckServer) error {
	interval := max(wire.FromDuration(req.GetInterval()), 50*time.Millisecond)
	return s.every(stream.Context(), interval, func() error {
		return stream.Send(s.w.healthReport())
	})
}

// ReportMetrics samples the host every interval and sends the samples that
// matter (see metricsSender), like the worker's status stream (report.go),
// for tools and tests.
func (s *server) ReportMetrics(req *pb.ReportMetricsRequest, stream pb.WorkerProcessService_ReportMetricsServer) error {
	interval := max(wire.FromDuration(req.GetInterval()), 100*time.Millisecond)
	f := metricsSender{cpus: runtime.NumCPU()}
	return s.every(stream.Context(), interval, func() error {
		m := s.w.sample(stream.Context())
		if !f.due(m) {
			return nil
		}
		return stream.Send(wire.MetricsToPB(m))
	})
}

// metricsRefresh is how many samples in a row may go unsent when none
// changed much: an idle worker sends one a minute at the default interval
// of 5 s.
const metricsRefresh = 12

// metricsSender picks the samples a status or ReportMetrics stream sends: the first;
// one that changed much since the last one sent (slots in use, CPU use by 5
// points, the 1-minute load by a tenth of a CPU, memory used or disk free by
// 1% of the total); and otherwise every metricsRefresh-th. An idle worker's
// metrics barely move, and at 10,000 workers every message is CPU time of
// the manager.
type metricsSender struct {
	cpus    int
	sent    bool           // whether last was sent
	last    devops.Metrics // the last sample sent
	skipped int            // samples not sent since last
}

// due reports whether m goes out, and if so remembers it as the last one sent.
func (f *metricsSender) due(m devops.Metrics) bool {
	if f.sent && f.skipped+1 < metricsRefresh && !f.changed(m) {
		f.skipped++
		return false
	}
	f.sent, f.last, f.skipped = true, m, 0
	return true
}

func (f *metricsSender) changed(m devops.Metrics) bool {
	l := f.last
	return m.Running != l.Running || m.FreeSlots != l.FreeSlots ||
		math.Abs(m.CPUPercent-l.CPUPercent) >= 5 ||
		math.Abs(m.Load1-l.Load1) >= 0.1*float64(max(f.cpus, 1)) ||
		movedPercent(l.MemoryUsedBytes, m.MemoryUsedBytes, m.MemoryTotalBytes) ||
		movedPercent(l.DiskFreeBytes, m.DiskFreeBytes, m.DiskUsedBytes+m.DiskFreeBytes)
}

// movedPercent reports whether a and b are at least 1% of total apart.
func movedPercent(a, b, total uint64) bool {
	d := max(a, b) - min(a, b)
	return d > 0 && d*100 >= total
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

// sample reads the host's figures (gopsutil; the CPU with cpuMeter). A
// figure that cannot be read stays zero: metrics are advisory, and a
// missing one must not stop the stream.
func (w *Worker) sample(ctx context.Context) devops.Metrics {
	running, _, _ := w.snapshot()
	m := devops.Metrics{
		Time:      time.Now(),
		Running:   running,
		FreeSlots: max(w.cfg.Capacity-running, 0),
		Uptime:    time.Since(w.started),
		Version:   devops.Version,
	}
	if pct, ok := w.cpu.percent(); ok {
		m.CPUPercent = pct
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
	return &pb.DrainResponse{DrainGeneration: s.w.Drain(!req.GetUndo())}, nil
}

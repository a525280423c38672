// Package wire converts between the API's protobuf messages and the domain
// types of package devops. Generated types stop at the edges (the manager's
// handlers, the worker's server, the client); everything inside speaks devops
// types. It imports only the API and the domain.
package wire

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
)

// The domain enums use the API's numbers, so conversions are casts.

// StateToPB converts a process state.
func StateToPB(s devops.State) pb.ProcessState { return pb.ProcessState(s) }

// StateFromPB converts a process state.
func StateFromPB(s pb.ProcessState) devops.State { return devops.State(s) }

// Timestamp converts a time; the zero time becomes nil.
func Timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// Time converts a timestamp; nil becomes the zero time.
func Time(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// Duration converts a duration; zero becomes nil.
func Duration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// FromDuration converts a duration; nil becomes zero.
func FromDuration(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

// SpecToPB converts a spec. Secret values are sent as they are: the manager
// must pass them to the worker. Use RedactSpec before showing a spec.
func SpecToPB(s devops.Spec) *pb.Spec {
	p := &pb.Spec{
		Argv:          s.Argv,
		Env:           s.Env,
		Dir:           s.Dir,
		Timeout:       Duration(s.Timeout),
		Grace:         Duration(s.Grace),
		User:          s.User,
		KeepDir:       s.KeepDir,
		Image:         s.Image,
		SecretEnvKeys: s.SecretEnvKeys,
		StdinBytes:    s.StdinBytes,
		Limits: &pb.Limits{
			MemoryBytes:    s.Limits.MemoryBytes,
			Cpus:           s.Limits.CPUs,
			Pids:           s.Limits.Pids,
			MaxOutputBytes: s.Limits.MaxOutputBytes,
		},
	}
	// Set only when there is one: a record has neither, and its JSON
	// leaves out an optional field that is not set.
	if len(s.Stdin) > 0 {
		p.Stdin = s.Stdin
	}
	if s.StdinUpload != "" {
		p.StdinUpload = &s.StdinUpload
	}
	return p
}

// SpecFromPB converts a spec; nil becomes the zero spec.
func SpecFromPB(s *pb.Spec) devops.Spec {
	if s == nil {
		return devops.Spec{}
	}
	l := s.GetLimits()
	n := s.GetStdinBytes()
	if len(s.GetStdin()) > 0 {
		n = int64(len(s.GetStdin())) // the bytes themselves say
	}
	return devops.Spec{
		Argv:          s.GetArgv(),
		Env:           s.GetEnv(),
		Dir:           s.GetDir(),
		Timeout:       FromDuration(s.GetTimeout()),
		Grace:         FromDuration(s.GetGrace()),
		User:          s.GetUser(),
		KeepDir:       s.GetKeepDir(),
		Image:         s.GetImage(),
		SecretEnvKeys: s.GetSecretEnvKeys(),
		Stdin:         s.GetStdin(),
		StdinBytes:    n,
		StdinUpload:   s.GetStdinUpload(),
		Limits: devops.Limits{
			MemoryBytes:    l.GetMemoryBytes(),
			CPUs:           l.GetCpus(),
			Pids:           l.GetPids(),
			MaxOutputBytes: l.GetMaxOutputBytes(),
		},
	}
}

// Redacted is what a secret value is replaced with wherever a spec is shown.
const Redacted = "[redacted]"

// RedactSpec returns a copy of s whose secret environment values are
// replaced, without its standard input (StdinBytes stays).
func RedactSpec(s devops.Spec) devops.Spec {
	s.Stdin = nil
	if len(s.SecretEnvKeys) == 0 {
		return s
	}
	env := make(map[string]string, len(s.Env))
	for k, v := range s.Env {
		env[k] = v
	}
	for _, k := range s.SecretEnvKeys {
		if _, ok := env[k]; ok {
			env[k] = Redacted
		}
	}
	s.Env = env
	return s
}

// ProcessToPB converts a process record, with secrets redacted: this is what
// clients see.
func ProcessToPB(p devops.Process) *pb.Process {
	return &pb.Process{
		Id:              string(p.ID),
		WorkerId:        string(p.WorkerID),
		WorkerName:      p.WorkerName,
		Spec:            SpecToPB(RedactSpec(p.Spec)),
		State:           StateToPB(p.State),
		ExitCode:        int32(p.Code),
		Signal:          int32(p.Signal),
		Reason:          p.Reason,
		CreatedAt:       Timestamp(p.CreatedAt),
		StartedAt:       Timestamp(p.StartedAt),
		EndedAt:         Timestamp(p.EndedAt),
		StateChangedAt:  Timestamp(p.StateChangedAt),
		OutputBytes:     p.OutputBytes,
		OutputLostBytes: p.OutputLost,
		PeakMemoryBytes: p.PeakMemory,
		CpuTime:         Duration(p.CPUTime),
	}
}

// ProcessFromPB converts a process record.
func ProcessFromPB(p *pb.Process) devops.Process {
	return devops.Process{
		ID:             devops.ProcessID(p.GetId()),
		WorkerID:       devops.WorkerID(p.GetWorkerId()),
		WorkerName:     p.GetWorkerName(),
		Spec:           SpecFromPB(p.GetSpec()),
		State:          StateFromPB(p.GetState()),
		Code:           int(p.GetExitCode()),
		Signal:         int(p.GetSignal()),
		Reason:         p.GetReason(),
		CreatedAt:      Time(p.GetCreatedAt()),
		StartedAt:      Time(p.GetStartedAt()),
		EndedAt:        Time(p.GetEndedAt()),
		StateChangedAt: Time(p.GetStateChangedAt()),
		OutputBytes:    p.GetOutputBytes(),
		OutputLost:     p.GetOutputLostBytes(),
		PeakMemory:     p.GetPeakMemoryBytes(),
		CPUTime:        FromDuration(p.GetCpuTime()),
	}
}

// ChunkToPB converts an output chunk of a process.
func ChunkToPB(id devops.ProcessID, c devops.Chunk) *pb.OutputChunk {
	return &pb.OutputChunk{ProcessId: string(id), Offset: c.Offset, Stream: pb.Stream(c.Stream), Data: c.Data}
}

// ChunkFromPB converts an output chunk.
func ChunkFromPB(c *pb.OutputChunk) devops.Chunk {
	return devops.Chunk{Offset: c.GetOffset(), Stream: devops.Stream(c.GetStream()), Data: c.GetData()}
}

// ExitToPB converts an exit status.
func ExitToPB(e devops.ExitStatus) *pb.ExitStatus {
	return &pb.ExitStatus{
		State:           StateToPB(e.State),
		ExitCode:        int32(e.Code),
		Signal:          int32(e.Signal),
		Reason:          e.Reason,
		EndedAt:         Timestamp(e.EndedAt),
		PeakMemoryBytes: e.PeakMemory,
		CpuTime:         Duration(e.CPUTime),
	}
}

// ExitFromPB converts an exit status.
func ExitFromPB(e *pb.ExitStatus) devops.ExitStatus {
	return devops.ExitStatus{
		State:      StateFromPB(e.GetState()),
		Code:       int(e.GetExitCode()),
		Signal:     int(e.GetSignal()),
		Reason:     e.GetReason(),
		EndedAt:    Time(e.GetEndedAt()),
		PeakMemory: e.GetPeakMemoryBytes(),
		CPUTime:    FromDuration(e.GetCpuTime()),
	}
}

// FingerprintToPB converts a fingerprint.
func FingerprintToPB(f devops.Fingerprint) *pb.Fingerprint {
	return &pb.Fingerprint{
		Os: f.OS, Arch: f.Arch, Cpus: int32(f.CPUs), MemoryBytes: f.MemoryBytes,
		Cgroups: f.Cgroups, Namespaces: f.Namespaces, RunAs: f.RunAs, Docker: f.Docker,
	}
}

// FingerprintFromPB converts a fingerprint.
func FingerprintFromPB(f *pb.Fingerprint) devops.Fingerprint {
	return devops.Fingerprint{
		OS: f.GetOs(), Arch: f.GetArch(), CPUs: int(f.GetCpus()), MemoryBytes: f.GetMemoryBytes(),
		Cgroups: f.GetCgroups(), Namespaces: f.GetNamespaces(), RunAs: f.GetRunAs(), Docker: f.GetDocker(),
	}
}

// MetricsToPB converts a metrics sample.
func MetricsToPB(m devops.Metrics) *pb.WorkerMetrics {
	return &pb.WorkerMetrics{
		Time: Timestamp(m.Time), CpuPercent: m.CPUPercent,
		Load1: m.Load1, Load5: m.Load5, Load15: m.Load15,
		MemoryUsedBytes: m.MemoryUsedBytes, MemoryTotalBytes: m.MemoryTotalBytes,
		DiskUsedBytes: m.DiskUsedBytes, DiskFreeBytes: m.DiskFreeBytes,
		Running: int32(m.Running), FreeSlots: int32(m.FreeSlots),
		Uptime: Duration(m.Uptime), Version: m.Version,
	}
}

// MetricsFromPB converts a metrics sample.
func MetricsFromPB(m *pb.WorkerMetrics) devops.Metrics {
	return devops.Metrics{
		Time: Time(m.GetTime()), CPUPercent: m.GetCpuPercent(),
		Load1: m.GetLoad1(), Load5: m.GetLoad5(), Load15: m.GetLoad15(),
		MemoryUsedBytes: m.GetMemoryUsedBytes(), MemoryTotalBytes: m.GetMemoryTotalBytes(),
		DiskUsedBytes: m.GetDiskUsedBytes(), DiskFreeBytes: m.GetDiskFreeBytes(),
		Running: int(m.GetRunning()), FreeSlots: int(m.GetFreeSlots()),
		Uptime: FromDuration(m.GetUptime()), Version: m.GetVersion(),
	}
}

// WorkerToPB converts a worker record.
func WorkerToPB(w devops.Worker) *pb.Worker {
	return &pb.Worker{
		Id: string(w.ID), Name: w.Name, Labels: w.Labels, Address: w.Address,
		Capacity: int32(w.Capacity), Running: int32(w.Running), State: pb.WorkerState(w.State),
		RegisteredAt: Timestamp(w.RegisteredAt), LastSeen: Timestamp(w.LastSeen),
		Fingerprint: FingerprintToPB(w.Fingerprint), Metrics: MetricsToPB(w.Metrics), Version: w.Version,
	}
}

// WorkerFromPB converts a worker record.
func WorkerFromPB(w *pb.Worker) devops.Worker {
	return devops.Worker{
		ID: devops.WorkerID(w.GetId()), Name: w.GetName(), Labels: w.GetLabels(), Address: w.GetAddress(),
		Capacity: int(w.GetCapacity()), Running: int(w.GetRunning()), State: devops.WorkerState(w.GetState()),
		RegisteredAt: Time(w.GetRegisteredAt()), LastSeen: Time(w.GetLastSeen()),
		Fingerprint: FingerprintFromPB(w.GetFingerprint()), Metrics: MetricsFromPB(w.GetMetrics()), Version: w.GetVersion(),
	}
}

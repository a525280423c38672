package wire

import (
	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
)

// LimitToPB converts a limit; no limit becomes nil.
func LimitToPB(l devops.Limit) *pb.Limit {
	if !l.Set {
		return nil
	}
	return &pb.Limit{Value: int32(l.N), Percent: l.Percent}
}

// LimitFromPB converts a limit; nil is no limit.
func LimitFromPB(l *pb.Limit) devops.Limit {
	if l == nil {
		return devops.Limit{}
	}
	return devops.Limit{Set: true, N: int(l.GetValue()), Percent: l.GetPercent()}
}

// RunTargetToPB converts a fleet run's target.
func RunTargetToPB(t devops.RunTarget) *pb.RunTarget {
	return &pb.RunTarget{Workers: t.Workers, Selector: t.Selector, All: t.All, Exclude: t.Exclude}
}

// RunTargetFromPB converts a fleet run's target.
func RunTargetFromPB(t *pb.RunTarget) devops.RunTarget {
	return devops.RunTarget{Workers: t.GetWorkers(), Selector: t.GetSelector(), All: t.GetAll(), Exclude: t.GetExclude()}
}

// RunOptionsToPB converts a fleet run's options.
func RunOptionsToPB(o devops.RunOptions) *pb.RunOptions {
	return &pb.RunOptions{
		MaxConcurrency:   LimitToPB(o.MaxConcurrency),
		MaxErrors:        LimitToPB(o.MaxErrors),
		StopOnError:      pb.StopOnError(o.StopOnError),
		Canary:           int32(o.Canary),
		PauseAfterCanary: o.PauseAfterCanary,
		Retries:          int32(o.Retries),
	}
}

// RunOptionsFromPB converts a fleet run's options.
func RunOptionsFromPB(o *pb.RunOptions) devops.RunOptions {
	return devops.RunOptions{
		MaxConcurrency:   LimitFromPB(o.GetMaxConcurrency()),
		MaxErrors:        LimitFromPB(o.GetMaxErrors()),
		StopOnError:      devops.StopOnError(o.GetStopOnError()),
		Canary:           int(o.GetCanary()),
		PauseAfterCanary: o.GetPauseAfterCanary(),
		Retries:          int(o.GetRetries()),
	}
}

// RunToPB converts a fleet run, with the secrets of its spec redacted.
func RunToPB(r devops.Run) *pb.Run {
	out := &pb.Run{
		Id:              string(r.ID),
		Spec:            SpecToPB(RedactSpec(r.Spec)),
		Target:          RunTargetToPB(r.Target),
		Options:         RunOptionsToPB(r.Options),
		State:           pb.RunState(r.State),
		Reason:          r.Reason,
		CreatedAt:       Timestamp(r.CreatedAt),
		EndedAt:         Timestamp(r.EndedAt),
		Resumed:         r.Resumed,
		Cancelled:       r.Cancelled,
		QueueTimeout:    Duration(r.QueueTimeout),
		DisconnectGrace: Duration(r.DisconnectGrace),
		Summary: &pb.RunSummary{
			Total:     int32(r.Summary.Total),
			Succeeded: int32(r.Summary.Succeeded),
			Failed:    int32(r.Summary.Failed),
			Running:   int32(r.Summary.Running),
			Pending:   int32(r.Summary.Pending),
			Skipped:   int32(r.Summary.Skipped),
		},
	}
	for _, t := range r.Tasks {
		pt := &pb.RunTask{
			WorkerId:   string(t.WorkerID),
			WorkerName: t.WorkerName,
			ProcessId:  string(t.ProcessID),
			Canary:     t.Canary,
			Skipped:    t.Skipped,
			Reason:     t.Reason,
			State:      StateToPB(t.State),
			ExitCode:   int32(t.ExitCode),
		}
		for _, a := range t.Previous {
			pt.Previous = append(pt.Previous, &pb.RunAttempt{ProcessId: string(a.ProcessID), State: StateToPB(a.State), ExitCode: int32(a.ExitCode)})
		}
		out.Tasks = append(out.Tasks, pt)
	}
	for _, x := range r.Excluded {
		out.Excluded = append(out.Excluded, &pb.Exclusion{WorkerId: string(x.WorkerID), WorkerName: x.WorkerName, Reason: x.Reason})
	}
	return out
}

// RunFromPB converts a fleet run.
func RunFromPB(r *pb.Run) devops.Run {
	s := r.GetSummary()
	out := devops.Run{
		ID:              devops.RunID(r.GetId()),
		Spec:            SpecFromPB(r.GetSpec()),
		Target:          RunTargetFromPB(r.GetTarget()),
		Options:         RunOptionsFromPB(r.GetOptions()),
		State:           devops.RunState(r.GetState()),
		Reason:          r.GetReason(),
		CreatedAt:       Time(r.GetCreatedAt()),
		EndedAt:         Time(r.GetEndedAt()),
		Resumed:         r.GetResumed(),
		Cancelled:       r.GetCancelled(),
		QueueTimeout:    FromDuration(r.GetQueueTimeout()),
		DisconnectGrace: FromDuration(r.GetDisconnectGrace()),
		Summary: devops.RunSummary{
			Total:     int(s.GetTotal()),
			Succeeded: int(s.GetSucceeded()),
			Failed:    int(s.GetFailed()),
			Running:   int(s.GetRunning()),
			Pending:   int(s.GetPending()),
			Skipped:   int(s.GetSkipped()),
		},
	}
	for _, t := range r.GetTasks() {
		dt := devops.RunTask{
			WorkerID:   devops.WorkerID(t.GetWorkerId()),
			WorkerName: t.GetWorkerName(),
			ProcessID:  devops.ProcessID(t.GetProcessId()),
			Canary:     t.GetCanary(),
			Skipped:    t.GetSkipped(),
			Reason:     t.GetReason(),
			State:      StateFromPB(t.GetState()),
			ExitCode:   int(t.GetExitCode()),
		}
		for _, a := range t.GetPrevious() {
			dt.Previous = append(dt.Previous, devops.RunAttempt{ProcessID: devops.ProcessID(a.GetProcessId()), State: StateFromPB(a.GetState()), ExitCode: int(a.GetExitCode())})
		}
		out.Tasks = append(out.Tasks, dt)
	}
	for _, x := range r.GetExcluded() {
		out.Excluded = append(out.Excluded, devops.Exclusion{WorkerID: devops.WorkerID(x.GetWorkerId()), WorkerName: x.GetWorkerName(), Reason: x.GetReason()})
	}
	return out
}

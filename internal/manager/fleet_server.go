package manager

import (
	"context"
	"syscall"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/wire"
)

// The fleet run handlers of ProcessManagementService: validate, call the
// domain (fleet.go), convert.

func runSubmissionFromPB(req *pb.StartRunRequest) RunSubmission {
	return RunSubmission{
		Spec:            wire.SpecFromPB(req.GetSpec()),
		Target:          wire.RunTargetFromPB(req.GetTarget()),
		Options:         wire.RunOptionsFromPB(req.GetOptions()),
		QueueTimeout:    wire.FromDuration(req.GetQueueTimeout()),
		DisconnectGrace: wire.FromDuration(req.GetDisconnectGrace()),
		IdempotencyKey:  req.GetIdempotencyKey(),
	}
}

func (s *processServer) StartRun(ctx context.Context, req *pb.StartRunRequest) (*pb.StartRunResponse, error) {
	sub := runSubmissionFromPB(req)
	var r devops.Run
	var err error
	if req.GetDryRun() {
		r, err = s.m.PlanRun(sub)
	} else {
		r, err = s.m.StartRun(ctx, sub)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.StartRunResponse{Run: wire.RunToPB(r)}, nil
}

func (s *processServer) GetRun(ctx context.Context, req *pb.GetRunRequest) (*pb.GetRunResponse, error) {
	r, err := s.m.FleetRun(devops.RunID(req.GetRunId()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetRunResponse{Run: wire.RunToPB(r)}, nil
}

func (s *processServer) ListRuns(ctx context.Context, req *pb.ListRunsRequest) (*pb.ListRunsResponse, error) {
	n := pageLen(req.GetPageSize())
	page, more := fillPage(s.m.FleetRunPage(devops.RunID(req.GetPageToken()), lookahead(n), req.GetNewestFirst()), n, wire.RunToPB)
	resp := &pb.ListRunsResponse{Runs: page}
	if more {
		resp.NextPageToken = page[len(page)-1].GetId()
	}
	return resp, nil
}

func (s *processServer) ResumeRun(ctx context.Context, req *pb.ResumeRunRequest) (*pb.ResumeRunResponse, error) {
	r, err := s.m.ResumeRun(ctx, devops.RunID(req.GetRunId()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ResumeRunResponse{Run: wire.RunToPB(r)}, nil
}

func (s *processServer) CancelRun(ctx context.Context, req *pb.CancelRunRequest) (*pb.CancelRunResponse, error) {
	r, err := s.m.CancelRun(ctx, devops.RunID(req.GetRunId()), syscall.Signal(req.GetSignal()), wire.FromDuration(req.GetGrace()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CancelRunResponse{Run: wire.RunToPB(r)}, nil
}

func (s *processServer) WatchRun(req *pb.WatchRunRequest, stream pb.ProcessManagementService_WatchRunServer) error {
	offsets := make(map[devops.ProcessID]int64, len(req.GetOffsets()))
	for id, off := range req.GetOffsets() {
		offsets[devops.ProcessID(id)] = off
	}
	send := func(ev RunEvent) error {
		var msg pb.WatchRunResponse
		switch {
		case ev.Run != nil:
			msg.Event = &pb.WatchRunResponse_Run{Run: wire.RunToPB(*ev.Run)}
		case ev.Chunk != nil:
			msg.Event = &pb.WatchRunResponse_Output{Output: wire.ChunkToPB(ev.ID, *ev.Chunk)}
		default:
			msg.Event = &pb.WatchRunResponse_Process{Process: wire.ProcessToPB(*ev.Process)}
		}
		return stream.Send(&msg)
	}
	return toStatus(s.m.WatchRun(stream.Context(), devops.RunID(req.GetRunId()), req.GetFollow(), req.GetOutput(), offsets, send))
}

package manager

import (
	"context"
	"errors"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/wire"
)

// toStatus maps domain errors to gRPC status codes: the one place that does.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, devops.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, devops.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, devops.ErrNoMatch), errors.Is(err, devops.ErrTerminal):
		code = codes.FailedPrecondition
	case errors.Is(err, devops.ErrNoCapacity):
		code = codes.ResourceExhausted
	case errors.Is(err, devops.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, devops.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, devops.ErrOutOfRange):
		code = codes.OutOfRange
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

type registrationServer struct {
	pb.UnimplementedWorkerRegistrationServiceServer
	m *Manager
}

func (s *registrationServer) RegisterWorker(ctx context.Context, req *pb.RegisterWorkerRequest) (*pb.RegisterWorkerResponse, error) {
	w, err := s.m.register(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	s.m.log.Info("worker registered", "worker", w.Name, "worker_id", w.ID, "address", w.Address)
	return &pb.RegisterWorkerResponse{WorkerId: string(w.ID)}, nil
}

func (s *registrationServer) DeregisterWorker(ctx context.Context, req *pb.DeregisterWorkerRequest) (*pb.DeregisterWorkerResponse, error) {
	if err := s.m.deregister(ctx, devops.WorkerID(req.GetWorkerId())); err != nil {
		return nil, toStatus(err)
	}
	return &pb.DeregisterWorkerResponse{}, nil
}

type processServer struct {
	pb.UnimplementedProcessManagementServiceServer
	m *Manager
}

func (s *processServer) ExecuteDistributedCommand(req *pb.ExecuteDistributedCommandRequest, stream pb.ProcessManagementService_ExecuteDistributedCommandServer) error {
	ctx := stream.Context()
	t := req.GetTarget()
	ids, err := s.m.Submit(ctx, Submission{
		Spec:            wire.SpecFromPB(req.GetSpec()),
		Target:          Target{Worker: t.GetWorker(), Selector: t.GetSelector(), All: t.GetAll()},
		QueueTimeout:    wire.FromDuration(req.GetQueueTimeout()),
		DisconnectGrace: wire.FromDuration(req.GetDisconnectGrace()),
		IdempotencyKey:  req.GetIdempotencyKey(),
	})
	if err != nil {
		return toStatus(err)
	}
	send := func(ev Event) error {
		if ev.Chunk != nil {
			return stream.Send(&pb.ExecuteDistributedCommandResponse{Event: &pb.ExecuteDistributedCommandResponse_Output{Output: wire.ChunkToPB(ev.ID, *ev.Chunk)}})
		}
		return stream.Send(&pb.ExecuteDistributedCommandResponse{Event: &pb.ExecuteDistributedCommandResponse_Process{Process: wire.ProcessToPB(*ev.Process)}})
	}
	if req.GetDetach() {
		for _, id := range ids {
			p, err := s.m.Process(id)
			if err != nil {
				return toStatus(err)
			}
			if err := send(Event{ID: id, Process: &p}); err != nil {
				return err
			}
		}
		return nil
	}
	return toStatus(s.m.Watch(ctx, ids, 0, true, true, send))
}

// UploadStdin keeps a standard input too large for a request, for the
// run that names it next.
func (s *processServer) UploadStdin(stream pb.ProcessManagementService_UploadStdinServer) error {
	id, n, err := s.m.inputs.receive(func() ([]byte, error) {
		msg, err := stream.Recv()
		return msg.GetData(), err
	})
	if err != nil {
		return toStatus(err)
	}
	s.m.log.Info("standard input uploaded", "upload_id", id, "bytes", n)
	return stream.SendAndClose(&pb.UploadStdinResponse{UploadId: id, Size: n})
}

func (s *processServer) TerminateProcess(ctx context.Context, req *pb.TerminateProcessRequest) (*pb.TerminateProcessResponse, error) {
	p, err := s.m.Terminate(ctx, devops.ProcessID(req.GetProcessId()), syscall.Signal(req.GetSignal()), wire.FromDuration(req.GetGrace()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.TerminateProcessResponse{Process: wire.ProcessToPB(p)}, nil
}

func (s *processServer) GetProcessStatus(ctx context.Context, req *pb.GetProcessStatusRequest) (*pb.GetProcessStatusResponse, error) {
	p, err := s.m.Process(devops.ProcessID(req.GetProcessId()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetProcessStatusResponse{Process: wire.ProcessToPB(p)}, nil
}

func (s *processServer) ListProcesses(ctx context.Context, req *pb.ListProcessesRequest) (*pb.ListProcessesResponse, error) {
	n := pageLen(req.GetPageSize())
	ps := s.m.ProcessPage(ProcessFilter{State: wire.StateFromPB(req.GetState()), Worker: req.GetWorker()},
		devops.ProcessID(req.GetPageToken()), lookahead(n), req.GetNewestFirst())
	page, more := fillPage(ps, n, wire.ProcessToPB)
	resp := &pb.ListProcessesResponse{Processes: page}
	if more {
		resp.NextPageToken = page[len(page)-1].GetId()
	}
	return resp, nil
}

func (s *processServer) ListWorkers(ctx context.Context, req *pb.ListWorkersRequest) (*pb.ListWorkersResponse, error) {
	ws := span(s.m.Workers(), req.GetPageToken(), func(w devops.Worker) string { return w.Name }, false)
	page, more := fillPage(ws, pageLen(req.GetPageSize()), wire.WorkerToPB)
	resp := &pb.ListWorkersResponse{Workers: page}
	if more {
		resp.NextPageToken = page[len(page)-1].GetName()
	}
	return resp, nil
}

func (s *processServer) StreamOutput(req *pb.StreamOutputRequest, stream pb.ProcessManagementService_StreamOutputServer) error {
	id := devops.ProcessID(req.GetProcessId())
	send := func(ev Event) error {
		if ev.Chunk != nil {
			return stream.Send(&pb.StreamOutputResponse{Event: &pb.StreamOutputResponse_Output{Output: wire.ChunkToPB(ev.ID, *ev.Chunk)}})
		}
		return stream.Send(&pb.StreamOutputResponse{Event: &pb.StreamOutputResponse_Process{Process: wire.ProcessToPB(*ev.Process)}})
	}
	// A follower also hears why the process waits, as ExecuteDistributedCommand's do.
	return toStatus(s.m.Watch(stream.Context(), []devops.ProcessID{id}, req.GetFromOffset(), req.GetFollow(), req.GetFollow(), send))
}

func (s *processServer) DrainWorker(ctx context.Context, req *pb.DrainWorkerRequest) (*pb.DrainWorkerResponse, error) {
	if req.GetWorker() == "" {
		return nil, status.Error(codes.InvalidArgument, "worker is empty")
	}
	w, err := s.m.Drain(ctx, req.GetWorker(), req.GetUndo())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DrainWorkerResponse{Worker: wire.WorkerToPB(w)}, nil
}

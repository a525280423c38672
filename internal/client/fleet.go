package client

import (
	"context"
	"io"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/wire"
)

// FleetRequest is a command to run on many workers as one fleet run.
type FleetRequest struct {
	Spec            devops.Spec
	Target          devops.RunTarget
	Options         devops.RunOptions
	QueueTimeout    time.Duration
	DisconnectGrace time.Duration
	// IdempotencyKey makes a retried request get the run the first one
	// started; empty: the client makes one.
	IdempotencyKey string
}

func (r FleetRequest) toPB(dry bool) *pb.StartRunRequest {
	return &pb.StartRunRequest{
		Spec:            wire.SpecToPB(r.Spec),
		Target:          wire.RunTargetToPB(r.Target),
		Options:         wire.RunOptionsToPB(r.Options),
		QueueTimeout:    wire.Duration(r.QueueTimeout),
		DisconnectGrace: wire.Duration(r.DisconnectGrace),
		IdempotencyKey:  r.IdempotencyKey,
		DryRun:          dry,
	}
}

// PlanRun answers which workers would run the request and why the others
// would not, and starts nothing. The run it returns has no ID.
func (c *Client) PlanRun(ctx context.Context, r FleetRequest) (devops.Run, error) {
	resp, err := c.api.StartRun(ctx, r.toPB(true))
	if err != nil {
		return devops.Run{}, err
	}
	return wire.RunFromPB(resp.GetRun()), nil
}

// StartRun starts a fleet run and returns it at once. It retries while the
// manager is unreachable, with one idempotency key so the run starts once.
func (c *Client) StartRun(ctx context.Context, r FleetRequest) (devops.Run, error) {
	if r.IdempotencyKey == "" {
		r.IdempotencyKey = uuid.NewString()
	}
	var run devops.Run
	err := c.retryUnavailable(ctx, func() error {
		resp, err := c.api.StartRun(ctx, r.toPB(false))
		if err != nil {
			return err
		}
		run = wire.RunFromPB(resp.GetRun())
		return nil
	})
	return run, err
}

// FleetRun returns a fleet run with its children's states and summary.
func (c *Client) FleetRun(ctx context.Context, id devops.RunID) (devops.Run, error) {
	resp, err := c.api.GetRun(ctx, &pb.GetRunRequest{RunId: string(id)})
	if err != nil {
		return devops.Run{}, err
	}
	return wire.RunFromPB(resp.GetRun()), nil
}

// FleetRuns lists the fleet runs, oldest first.
func (c *Client) FleetRuns(ctx context.Context) ([]devops.Run, error) {
	return listPages(func(token string) ([]devops.Run, string, error) {
		resp, err := c.api.ListRuns(ctx, &pb.ListRunsRequest{PageSize: listPageSize, PageToken: token})
		return convert(resp.GetRuns(), wire.RunFromPB), resp.GetNextPageToken(), err
	})
}

// RecentFleetRuns lists the n most recent fleet runs, oldest first; n <= 0
// lists them all, as FleetRuns.
func (c *Client) RecentFleetRuns(ctx context.Context, n int) ([]devops.Run, error) {
	if n <= 0 {
		return c.FleetRuns(ctx)
	}
	return recentPages(n, func(token string, size int32) ([]devops.Run, string, error) {
		resp, err := c.api.ListRuns(ctx, &pb.ListRunsRequest{PageSize: size, PageToken: token, NewestFirst: true})
		return convert(resp.GetRuns(), wire.RunFromPB), resp.GetNextPageToken(), err
	}, func(r devops.Run) string { return string(r.ID) })
}

// ResumeRun continues a run paused after its canary.
func (c *Client) ResumeRun(ctx context.Context, id devops.RunID) (devops.Run, error) {
	resp, err := c.api.ResumeRun(ctx, &pb.ResumeRunRequest{RunId: string(id)})
	if err != nil {
		return devops.Run{}, err
	}
	return wire.RunFromPB(resp.GetRun()), nil
}

// CancelRun stops a fleet run: nothing new starts and its running children
// get sig (0: SIGTERM), then SIGKILL after grace (0: the spec's grace).
func (c *Client) CancelRun(ctx context.Context, id devops.RunID, sig syscall.Signal, grace time.Duration) (devops.Run, error) {
	resp, err := c.api.CancelRun(ctx, &pb.CancelRunRequest{RunId: string(id), Signal: int32(sig), Grace: wire.Duration(grace)})
	if err != nil {
		return devops.Run{}, err
	}
	return wire.RunFromPB(resp.GetRun()), nil
}

// RunEvent is one thing a run watcher sees: the run's record (the last one
// is its final record), a child's record, or a chunk of a child's output.
type RunEvent struct {
	Run     *devops.Run
	ID      devops.ProcessID
	Process *devops.Process
	Chunk   *devops.Chunk
	Lost    int64 // as in Event
}

// WatchRun calls on with a run's changes, its children's state changes and,
// with output, their output, until the run ends (with follow) or what there
// is now was sent. If the manager goes away meanwhile it reconnects and
// resumes each child's output from the last byte seen. on is never called
// concurrently.
func (c *Client) WatchRun(ctx context.Context, id devops.RunID, follow, output bool, on func(RunEvent) error) error {
	offsets := map[devops.ProcessID]int64{}
	final := map[devops.ProcessID]bool{}
	return unwrapPermanent(c.retryUnavailable(ctx, func() error {
		stream, err := c.api.WatchRun(ctx, &pb.WatchRunRequest{RunId: string(id), Follow: follow, Output: output, Offsets: toPBOffsets(offsets)})
		if err != nil {
			return err
		}
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			switch {
			case msg.GetRun() != nil:
				r := wire.RunFromPB(msg.GetRun())
				err = on(RunEvent{Run: &r})
			case msg.GetProcess() != nil:
				p := wire.ProcessFromPB(msg.GetProcess())
				if final[p.ID] {
					continue
				}
				final[p.ID] = p.State.Terminal()
				err = on(RunEvent{ID: p.ID, Process: &p})
			case msg.GetOutput() != nil:
				pid := devops.ProcessID(msg.GetOutput().GetProcessId())
				ch := wire.ChunkFromPB(msg.GetOutput())
				at := offsets[pid]
				if ch.End() <= at {
					continue
				}
				if ch.Offset < at {
					ch.Data = ch.Data[at-ch.Offset:]
					ch.Offset = at
				}
				offsets[pid] = ch.End()
				err = on(RunEvent{ID: pid, Chunk: &ch, Lost: ch.Offset - at})
			}
			if err != nil {
				return permanent{err}
			}
		}
	}))
}

func toPBOffsets(m map[devops.ProcessID]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for id, off := range m {
		out[string(id)] = off
	}
	return out
}

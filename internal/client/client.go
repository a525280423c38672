// Package client is a Go client for the manager's ProcessManagementService
// that speaks domain types. Following a process survives a restart of the
// manager: the client reconnects and resumes from the last byte it saw. The
// CLI and the tests use it.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/grpcbuf"
	"github.com/devops-platform/devops/internal/retry"
	"github.com/devops-platform/devops/internal/wire"
)

// Client talks to one manager.
type Client struct {
	conn *grpc.ClientConn
	api  pb.ProcessManagementServiceClient
	// Reconnect is how long a follower keeps trying to reach a manager that
	// went away before it gives up, each time it goes away.
	Reconnect time.Duration
	// FirstContact is how long a call keeps trying a manager that has not
	// answered this client yet: long enough to ride over a restart, short
	// enough that a wrong address fails about as fast as ssh's.
	FirstContact time.Duration
	// Notify, if set, is told when calls start waiting for the manager and
	// when it answers again.
	Notify func(msg string)

	answers atomic.Uint64 // how many times the manager answered: an outage ends at an answer; none yet: first contact
	waiting atomic.Bool   // calls wait for the manager: Notify was told so
}

// Dial returns a client of the manager at addr. It does not wait for the
// manager: the first call does. Without options it talks plaintext with no
// token, as to a manager run with --insecure; see WithTLS and WithToken.
func Dial(addr string, opts ...Option) (*Client, error) {
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	bufs := grpcbuf.New()
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// No service config from DNS: grpc's resolver would otherwise ask
		// for a TXT record (_grpc_config.NAME) before every connection to a
		// manager named by host name, even "localhost": one more round trip
		// to the name server per CLI call, or its timeout where DNS is slow
		// or unreachable. We publish none.
		grpc.WithDisableServiceConfig(),
		experimental.WithBufferPool(bufs),
		// Output comes in 256 KiB chunks: read from the socket up to
		// 1 MiB at a time, not grpc's 32 KiB (1 GiB followed: 45k reads
		// and twice as many context switches in the client before). A
		// plaintext connection borrows the buffer only for each read.
		grpc.WithReadBufferSize(1 << 20),
		retry.Connect(),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			// Within the manager's enforcement policy (MinTime 5s).
			Time:    10 * time.Second,
			Timeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20), grpc.ForceCodecV2(grpcbuf.NewCodec(bufs))),
	}
	c := &Client{Reconnect: time.Minute, FirstContact: 5 * time.Second}
	dopts = append(dopts, grpc.WithChainUnaryInterceptor(c.unaryAnswer), grpc.WithChainStreamInterceptor(c.streamAnswer))
	conn, err := grpc.NewClient(addr, append(dopts, o.grpc()...)...)
	if err != nil {
		return nil, fmt.Errorf("dial manager %s: %w", addr, err)
	}
	c.conn, c.api = conn, pb.NewProcessManagementServiceClient(conn)
	return c, nil
}

// noteAnswer notes whether err, a call's outcome, is an answer from the
// manager: anything but Unavailable is.
func (c *Client) noteAnswer(err error) {
	if err != nil && status.Code(err) == codes.Unavailable {
		return
	}
	c.answers.Add(1)
	if c.waiting.CompareAndSwap(true, false) && c.Notify != nil {
		c.Notify("manager reachable again")
	}
}

func (c *Client) unaryAnswer(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	c.noteAnswer(err)
	return err
}

func (c *Client) streamAnswer(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		c.noteAnswer(err)
		return nil, err
	}
	return &answeredStream{ClientStream: s, c: c}, nil
}

// answeredStream notes the manager's answer at a stream's first message (a
// stream's start sends nothing).
type answeredStream struct {
	grpc.ClientStream
	c    *Client
	seen bool
}

func (s *answeredStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if !s.seen {
		s.seen = true
		if err == io.EOF {
			s.c.noteAnswer(nil) // it ended, as the manager meant
		} else {
			s.c.noteAnswer(err)
		}
	}
	return err
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Event is one thing a follower sees: a process record (a state change; the
// last one of each process is its final state) or a chunk of its output.
type Event struct {
	ID      devops.ProcessID
	Process *devops.Process
	Chunk   *devops.Chunk
	// Lost counts the output bytes right before Chunk that are gone: the
	// worker dropped them before the manager had them (devops.Process's
	// OutputLost). Chunk starts that far past the previous one.
	Lost int64
}

// Target says where a command runs; the zero Target lets the scheduler pick.
type Target struct {
	Worker   string
	Selector string
	All      bool
}

// RunRequest is a command to run.
type RunRequest struct {
	Spec            devops.Spec
	Target          Target
	QueueTimeout    time.Duration
	DisconnectGrace time.Duration
	// IdempotencyKey makes a retried request attach to what the first one
	// started; empty: the client makes one.
	IdempotencyKey string
}

func (r RunRequest) toPB(detach bool) *pb.ExecuteDistributedCommandRequest {
	return &pb.ExecuteDistributedCommandRequest{
		Spec:            wire.SpecToPB(r.Spec),
		Target:          &pb.Target{Worker: r.Target.Worker, Selector: r.Target.Selector, All: r.Target.All},
		QueueTimeout:    wire.Duration(r.QueueTimeout),
		DisconnectGrace: wire.Duration(r.DisconnectGrace),
		IdempotencyKey:  r.IdempotencyKey,
		Detach:          detach,
	}
}

// Submit starts the command and returns its processes without following them.
func (c *Client) Submit(ctx context.Context, r RunRequest) ([]devops.Process, error) {
	if r.IdempotencyKey == "" {
		r.IdempotencyKey = uuid.NewString()
	}
	var ps []devops.Process
	err := c.retryUnavailable(ctx, func() error {
		ps = ps[:0]
		stream, err := c.api.ExecuteDistributedCommand(ctx, r.toPB(true))
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
			if p := msg.GetProcess(); p != nil {
				ps = append(ps, wire.ProcessFromPB(p))
			}
		}
	})
	return ps, err
}

// Run starts the command and calls on for every event of every process it
// started, until all have ended. If the manager goes away meanwhile, Run
// reconnects and resumes each process's output from the last byte seen:
// nothing is lost or repeated. on is never called concurrently.
func (c *Client) Run(ctx context.Context, r RunRequest, on func(Event) error) error {
	if r.IdempotencyKey == "" {
		r.IdempotencyKey = uuid.NewString()
	}
	f := newFollower(on)
	err := c.retryUnavailable(ctx, func() error {
		if len(f.ids) > 0 {
			return errAccepted // accepted before the break: resume below
		}
		stream, err := c.api.ExecuteDistributedCommand(ctx, r.toPB(false))
		if err != nil {
			return err
		}
		return pump(stream.Recv, "", f)
	})
	if !errors.Is(err, errAccepted) {
		return unwrapPermanent(err)
	}
	return c.resume(ctx, f)
}

var errAccepted = errors.New("accepted")

// resume follows every process of f that has not ended, each from where f stands.
func (c *Client) resume(ctx context.Context, f *follower) error {
	var wg sync.WaitGroup
	errs := make([]error, len(f.ids))
	for i, id := range f.ids {
		if f.ended(id) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.follow(ctx, id, f)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Logs calls on with the output of a process from offset from and, with
// follow, until it ends (the last event is then its final record),
// reconnecting to the manager as Run does.
func (c *Client) Logs(ctx context.Context, id devops.ProcessID, from int64, follow bool, on func(Event) error) error {
	f := newFollower(on)
	f.ids = []devops.ProcessID{id}
	f.offsets[id] = from
	if !follow {
		return unwrapPermanent(c.retryUnavailable(ctx, func() error { return c.stream(ctx, id, f, false) }))
	}
	return c.follow(ctx, id, f)
}

func (c *Client) follow(ctx context.Context, id devops.ProcessID, f *follower) error {
	return unwrapPermanent(c.retryUnavailable(ctx, func() error { return c.stream(ctx, id, f, true) }))
}

func (c *Client) stream(ctx context.Context, id devops.ProcessID, f *follower, follow bool) error {
	stream, err := c.api.StreamOutput(ctx, &pb.StreamOutputRequest{ProcessId: string(id), FromOffset: f.offset(id), Follow: follow})
	if err != nil {
		return err
	}
	return pump(stream.Recv, id, f)
}

// event is what both output streams of the API carry.
type event interface {
	GetProcess() *pb.Process
	GetOutput() *pb.OutputChunk
}

// pump hands every event of a stream to f until the stream ends. Chunks
// without a process id belong to id. An error from f's callback is
// permanent: it must not be retried.
func pump[E event](recv func() (E, error), id devops.ProcessID, f *follower) error {
	for {
		msg, err := recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if p := msg.GetProcess(); p != nil {
			err = f.process(wire.ProcessFromPB(p))
		} else if o := msg.GetOutput(); o != nil {
			chunkID := devops.ProcessID(o.GetProcessId())
			if chunkID == "" {
				chunkID = id
			}
			err = f.chunk(chunkID, wire.ChunkFromPB(o))
		}
		if err != nil {
			return permanent{err}
		}
	}
}

// permanent marks an error that must not be retried: it came from the
// caller's callback.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

func unwrapPermanent(err error) error {
	var p permanent
	if errors.As(err, &p) {
		return p.err
	}
	return err
}

// retryUnavailable calls f until it succeeds, fails for a reason other than
// the manager being unreachable, or the manager stays unreachable for
// c.Reconnect (c.FirstContact while it never answered this client). Each
// outage gets its own c.Reconnect: one ends when the manager answers (a
// follower's stream that resumed). A manager that never answered has been
// out since the first try, which may have taken the whole connect timeout.
func (c *Client) retryUnavailable(ctx context.Context, f func() error) error {
	b := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	first := time.Now()
	var since time.Time // the outage's start; zero: none yet
	var answers uint64  // c.answers when it started
	for {
		err := f()
		var p permanent
		if err == nil || errors.As(err, &p) || status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		n := c.answers.Load()
		limit := c.Reconnect
		if n == 0 {
			limit = c.FirstContact
		}
		if since.IsZero() || n != answers {
			since, answers = time.Now(), n
			if n == 0 {
				since = first
			}
			if limit-time.Since(since) > 0 && c.waiting.CompareAndSwap(false, true) && c.Notify != nil {
				c.Notify(fmt.Sprintf("manager unreachable (%s); trying again for up to %v", status.Convert(err).Message(), limit))
			}
		}
		left := limit - time.Since(since)
		if left <= 0 {
			return status.Errorf(codes.Unavailable, "no answer for %v: %s", limit, status.Convert(err).Message())
		}
		if err := retry.Sleep(ctx, min(b.Next(), left)); err != nil {
			return err
		}
	}
}

// follower keeps where each followed process stands, so that a resumed
// stream neither repeats nor skips a byte.
type follower struct {
	on func(Event) error

	mu      sync.Mutex // protects the fields below and serialises on
	ids     []devops.ProcessID
	offsets map[devops.ProcessID]int64
	final   map[devops.ProcessID]bool
}

func newFollower(on func(Event) error) *follower {
	return &follower{on: on, offsets: make(map[devops.ProcessID]int64), final: make(map[devops.ProcessID]bool)}
}

func (f *follower) process(p devops.Process) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.offsets[p.ID]; !ok {
		f.ids = append(f.ids, p.ID)
		f.offsets[p.ID] = 0
	}
	if f.final[p.ID] {
		return nil
	}
	if p.State.Terminal() {
		f.final[p.ID] = true
	}
	return f.on(Event{ID: p.ID, Process: &p})
}

func (f *follower) chunk(id devops.ProcessID, c devops.Chunk) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	at := f.offsets[id]
	if c.End() <= at {
		return nil
	}
	if c.Offset < at {
		c.Data = c.Data[at-c.Offset:]
		c.Offset = at
	}
	f.offsets[id] = c.End()
	return f.on(Event{ID: id, Chunk: &c, Lost: c.Offset - at})
}

func (f *follower) offset(id devops.ProcessID) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.offsets[id]
}

func (f *follower) ended(id devops.ProcessID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.final[id]
}

// Status returns a process's record.
func (c *Client) Status(ctx context.Context, id devops.ProcessID) (devops.Process, error) {
	resp, err := c.api.GetProcessStatus(ctx, &pb.GetProcessStatusRequest{ProcessId: string(id)})
	if err != nil {
		return devops.Process{}, err
	}
	return wire.ProcessFromPB(resp.GetProcess()), nil
}

// Processes lists processes, oldest first, filtered by state and worker
// when they are set.
func (c *Client) Processes(ctx context.Context, state devops.State, worker string) ([]devops.Process, error) {
	return listPages(func(token string) ([]devops.Process, string, error) {
		resp, err := c.api.ListProcesses(ctx, &pb.ListProcessesRequest{State: wire.StateToPB(state), Worker: worker,
			PageSize: listPageSize, PageToken: token})
		return convert(resp.GetProcesses(), wire.ProcessFromPB), resp.GetNextPageToken(), err
	})
}

// RecentProcesses lists the n most recent processes (by creation) that
// pass the filters, oldest first; n <= 0 lists them all, as Processes.
func (c *Client) RecentProcesses(ctx context.Context, state devops.State, worker string, n int) ([]devops.Process, error) {
	if n <= 0 {
		return c.Processes(ctx, state, worker)
	}
	return recentPages(n, func(token string, size int32) ([]devops.Process, string, error) {
		resp, err := c.api.ListProcesses(ctx, &pb.ListProcessesRequest{State: wire.StateToPB(state), Worker: worker,
			PageSize: size, PageToken: token, NewestFirst: true})
		return convert(resp.GetProcesses(), wire.ProcessFromPB), resp.GetNextPageToken(), err
	}, func(p devops.Process) string { return string(p.ID) })
}

// Workers lists the manager's workers.
func (c *Client) Workers(ctx context.Context) ([]devops.Worker, error) {
	return listPages(func(token string) ([]devops.Worker, string, error) {
		resp, err := c.api.ListWorkers(ctx, &pb.ListWorkersRequest{PageSize: listPageSize, PageToken: token})
		return convert(resp.GetWorkers(), wire.WorkerFromPB), resp.GetNextPageToken(), err
	})
}

// listPageSize is how many items a listing asks for at once. The manager
// answers fewer when they would make too large a message.
const listPageSize = 5000

// listPages gathers a listing the manager answers a page at a time: ask
// gets one page, the one after token, and the token of the next ("" after
// the last).
func listPages[T any](ask func(token string) ([]T, string, error)) ([]T, error) {
	var all []T
	token := ""
	for {
		items, next, err := ask(token)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		if next == token {
			return nil, fmt.Errorf("list: the manager answered page %q with itself as the next", token)
		}
		token = next
	}
}

// recentPages gathers the n newest items of a listing the manager answers
// a page at a time from the newest back (ask), and returns them oldest
// first, by id. A manager that pages nothing (older than the client)
// answers every item, oldest first: the last n are kept.
func recentPages[T any](n int, ask func(token string, size int32) ([]T, string, error), id func(T) string) ([]T, error) {
	var items []T
	token := ""
	for len(items) < n {
		page, next, err := ask(token, int32(min(n-len(items), listPageSize)))
		if err != nil {
			return nil, err
		}
		items = append(items, page...)
		if next == "" || next == token {
			break
		}
		token = next
	}
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	return items[max(len(items)-n, 0):], nil
}

func convert[P, T any](ps []P, from func(P) T) []T {
	ts := make([]T, len(ps))
	for i, p := range ps {
		ts[i] = from(p)
	}
	return ts
}

// Terminate asks for a process to end: sig (0: SIGTERM) to its process
// group, SIGKILL after grace (0: the default).
func (c *Client) Terminate(ctx context.Context, id devops.ProcessID, sig syscall.Signal, grace time.Duration) (devops.Process, error) {
	resp, err := c.api.TerminateProcess(ctx, &pb.TerminateProcessRequest{ProcessId: string(id), Signal: int32(sig), Grace: wire.Duration(grace)})
	if err != nil {
		return devops.Process{}, err
	}
	return wire.ProcessFromPB(resp.GetProcess()), nil
}

// Drain stops new work for a worker (name or id), or with undo takes it back.
func (c *Client) Drain(ctx context.Context, worker string, undo bool) (devops.Worker, error) {
	resp, err := c.api.DrainWorker(ctx, &pb.DrainWorkerRequest{Worker: worker, Undo: undo})
	if err != nil {
		return devops.Worker{}, err
	}
	return wire.WorkerFromPB(resp.GetWorker()), nil
}

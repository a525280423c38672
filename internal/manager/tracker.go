package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/retry"
	"github.com/devops-platform/devops/internal/scheduler"
	"github.com/devops-platform/devops/internal/store"
	"github.com/devops-platform/devops/internal/wire"
)

// newID returns a UUIDv7: unique, and sortable by creation time.
func newID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// startTracking starts the goroutine that carries one process from PENDING
// to its end. The goroutine outlives every client stream that watches it.
func (m *Manager) startTracking(e *entry) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.track(m.runCtx, e)
		if p, _ := m.procs.snapshot(e); p.State.Terminal() && p.Spec.StdinBytes > 0 {
			// Nothing reads it again (nothing runs twice), and an
			// uploaded one may be gigabytes.
			m.inputs.release(string(p.ID))
		}
	}()
}

// track places the process on a worker (unless it has one), delivers it and
// follows its output and exit. It returns when the process has ended or the
// manager stops.
func (m *Manager) track(ctx context.Context, e *entry) {
	p, _ := m.procs.snapshot(e)
	log := m.log.With("process_id", p.ID)
	if p.State == devops.StatePending && p.WorkerID == "" {
		if p.CreatedAt.Before(m.bornAt) {
			m.awaitReconnects(ctx)
		}
		w, err := m.schedule(ctx, e, nil)
		if err != nil {
			if ctx.Err() == nil {
				m.finish(ctx, e, devops.ExitStatus{State: stateForScheduleError(err), Reason: err.Error(), EndedAt: time.Now()})
			}
			return
		}
		m.procs.update(e, func(p *devops.Process) { p.WorkerID, p.WorkerName = w.ID, w.Name })
		m.persist(ctx, e)
	} else if !m.procs.hasSlot(e) {
		if err := m.waitForSlot(ctx, e); err != nil {
			if ctx.Err() == nil {
				m.finish(ctx, e, devops.ExitStatus{State: stateForScheduleError(err), Reason: err.Error(), EndedAt: time.Now()})
			}
			return
		}
	}
	p, _ = m.procs.snapshot(e)
	log = log.With("worker", p.WorkerName)
	m.follow(ctx, e, log)
}

// awaitReconnects waits until a worker is up, for at most a worker timeout
// after this manager started. Workers are loaded DOWN and come back by
// themselves within that: a process queued before a restart of the manager
// would otherwise fail at once for their absence ("the only worker w1 is
// down").
func (m *Manager) awaitReconnects(ctx context.Context) {
	end := time.NewTimer(time.Until(m.bornAt.Add(m.cfg.WorkerTimeout)))
	defer end.Stop()
	for {
		changed := m.registry.Changed()
		if slices.ContainsFunc(m.registry.Snapshot(), func(w devops.Worker) bool { return w.State == devops.WorkerUp }) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-end.C:
			return
		case <-changed:
		}
	}
}

func stateForScheduleError(err error) devops.State {
	if errors.Is(err, errKilledWhilePending) {
		return devops.StateTerminated
	}
	return devops.StateFailed
}

var errKilledWhilePending = errors.New("terminated before it started")

// errAllTried: every worker was tried for a command, and none took it.
var errAllTried = errors.New("every worker was tried")

// refusals are the workers that did not take a command, in order, with
// why; workers that refused for the same reason are told as one.
type refusals []struct{ why, workers string }

func (r *refusals) add(worker string, err error) {
	why := status.Convert(err).Message()
	for i := range *r {
		if (*r)[i].why == why {
			(*r)[i].workers += ", " + worker
			return
		}
	}
	*r = append(*r, struct{ why, workers string }{why, worker})
}

func (r refusals) String() string {
	parts := make([]string, len(r))
	for i, x := range r {
		parts[i] = fmt.Sprintf("%s (%s)", x.why, x.workers)
	}
	return strings.Join(parts, "; ")
}

// errNotDelivered marks a call that certainly did not reach the worker, so
// the command may be sent elsewhere without running twice.
var errNotDelivered = errors.New("not delivered")

// schedule waits for a worker with a free slot among those that match (every
// worker: a process without a fixed worker has no selector) and takes the
// slot. It gives up after the queue timeout.
func (m *Manager) schedule(ctx context.Context, e *entry, exclude map[devops.WorkerID]bool) (devops.Worker, error) {
	return m.acquire(ctx, e, func(ws []devops.Worker) (devops.Worker, error) {
		all := len(ws)
		ws = slices.DeleteFunc(ws, func(w devops.Worker) bool { return exclude[w.ID] })
		if len(ws) == 0 && all > 0 {
			return devops.Worker{}, fmt.Errorf("%w: %w", devops.ErrNoMatch, errAllTried)
		}
		return scheduler.Pick(ws, scheduler.Selector{})
	})
}

// waitForSlot takes a slot on the process's fixed worker, waiting while it is
// full, up to the queue timeout.
func (m *Manager) waitForSlot(ctx context.Context, e *entry) error {
	p, _ := m.procs.snapshot(e)
	_, err := m.acquire(ctx, e, func(ws []devops.Worker) (devops.Worker, error) {
		for _, w := range ws {
			if w.ID != p.WorkerID {
				continue
			}
			if w.State == devops.WorkerDown {
				// Submit refuses a worker that is down, so it went down
				// since, or this manager just restarted and the worker has
				// not reconnected yet: wait for it as for a free slot.
				return devops.Worker{}, fmt.Errorf("%w: worker %s is %s", devops.ErrNoCapacity, w.Name, w.State)
			}
			if w.State != devops.WorkerUp {
				return devops.Worker{}, fmt.Errorf("%w: worker %s is %s", devops.ErrNoMatch, w.Name, w.State)
			}
			if w.Running >= w.Capacity {
				return devops.Worker{}, fmt.Errorf("%w: worker %s is full", devops.ErrNoCapacity, w.Name)
			}
			return w, nil
		}
		return devops.Worker{}, fmt.Errorf("%w: worker %s is gone", devops.ErrNoMatch, p.WorkerName)
	})
	return err
}

func (m *Manager) acquire(ctx context.Context, e *entry, pick func([]devops.Worker) (devops.Worker, error)) (devops.Worker, error) {
	p, _ := m.procs.snapshot(e)
	timeout := p.QueueTimeout
	if timeout <= 0 {
		timeout = m.cfg.QueueTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	waiting := false
	for {
		changed := m.registry.Changed()
		w, err := m.registry.Acquire(pick)
		if err == nil {
			m.procs.setSlot(e)
			return w, nil
		}
		if !errors.Is(err, devops.ErrNoCapacity) {
			return devops.Worker{}, err
		}
		if !waiting {
			// Its watchers are told why it waits (devops run says so on
			// stderr), and status shows it, until it runs (started) or
			// ends.
			waiting = true
			m.procs.update(e, func(p *devops.Process) { p.Reason = "waiting: " + err.Error() })
		}
		select {
		case <-ctx.Done():
			return devops.Worker{}, ctx.Err()
		case <-e.kill:
			return devops.Worker{}, errKilledWhilePending
		case <-deadline.C:
			return devops.Worker{}, fmt.Errorf("%w: waited %v for a free slot (%v)", devops.ErrNoCapacity, timeout, err)
		case <-changed:
		}
	}
}

// follow delivers the process to its worker (or re-attaches to it) and
// stores its output until it ends. Connection trouble makes the process
// DISCONNECTED until the worker answers again, or LOST after the grace.
func (m *Manager) follow(ctx context.Context, e *entry, log *slog.Logger) {
	b := retry.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	var lostSince time.Time
	tried := map[devops.WorkerID]bool{} // workers that refused it or could not be reached
	var refusals refusals               // and why, for the reason it fails with
	for ctx.Err() == nil {
		p, _ := m.procs.snapshot(e)
		// A process the worker may have started is only ever attached to, so
		// that a worker that restarted and lost it can never start it twice.
		attachOnly := p.State != devops.StatePending
		if p.State == devops.StatePending {
			if asked, _, _ := m.procs.killRequest(e); asked {
				m.finish(ctx, e, devops.ExitStatus{State: devops.StateTerminated, Signal: int(syscall.SIGTERM), Reason: errKilledWhilePending.Error(), EndedAt: time.Now()})
				return
			}
		}
		grace := p.DisconnectGrace
		if grace <= 0 {
			grace = m.cfg.DisconnectGrace
		}
		var err error
		if w, werr := m.registry.Get(string(p.WorkerID)); !lostSince.IsZero() && werr == nil && w.State == devops.WorkerDown {
			err = fmt.Errorf("worker %s is down: %w", w.Name, devops.ErrUnavailable)
		} else {
			var giveUp time.Time
			if !lostSince.IsZero() {
				giveUp = lostSince.Add(grace)
			}
			err = m.stream(ctx, e, p, attachOnly, giveUp, log)
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNoInput) {
			m.finish(ctx, e, devops.ExitStatus{State: devops.StateFailed, Reason: err.Error(), EndedAt: time.Now()})
			return
		}
		if attachOnly && status.Code(err) == codes.NotFound {
			m.finish(ctx, e, devops.ExitStatus{State: devops.StateLost, Reason: fmt.Sprintf("worker %s no longer knows the process (it restarted without it)", p.WorkerName), EndedAt: time.Now()})
			return
		}
		cur, _ := m.procs.snapshot(e) // the call may have moved it on from p
		if cur.State == devops.StatePending && (refused(err) || errors.Is(err, errNotDelivered)) && !e.pinned && len(tried)+1 < m.cfg.DispatchAttempts {
			// It certainly did not start there: try another worker.
			tried[p.WorkerID] = true
			refusals.add(p.WorkerName, err)
			log.Warn("worker did not take the command; trying another", "err", err)
			if m.procs.releaseSlot(e) {
				m.registry.Release(p.WorkerID)
			}
			w, serr := m.schedule(ctx, e, tried)
			if serr != nil {
				reason := "no worker took the command: " + refusals.String()
				if !errors.Is(serr, errAllTried) {
					reason = fmt.Sprintf("%s; and no other could: %v", reason, serr)
				}
				m.finish(ctx, e, devops.ExitStatus{State: devops.StateFailed, Reason: reason, EndedAt: time.Now()})
				return
			}
			m.procs.update(e, func(p *devops.Process) { p.WorkerID, p.WorkerName = w.ID, w.Name })
			m.persist(ctx, e)
			log = m.log.With("process_id", p.ID, "worker", w.Name)
			continue
		}
		if refused(err) && cur.State == devops.StatePending {
			reason := fmt.Sprintf("worker %s refused the command: %v", p.WorkerName, status.Convert(err).Message())
			if len(refusals) > 0 {
				refusals.add(p.WorkerName, err)
				reason = "no worker took the command: " + refusals.String()
			}
			m.finish(ctx, e, devops.ExitStatus{State: devops.StateFailed, Reason: reason, EndedAt: time.Now()})
			return
		}
		if cur.State == devops.StateRunning {
			// It was running (again): this is a new disconnection.
			lostSince = time.Now()
			m.procs.update(e, func(p *devops.Process) {
				p.State = devops.StateDisconnected
				p.Reason = fmt.Sprintf("worker %s unreachable: %v", p.WorkerName, status.Convert(err).Message())
			})
			m.persist(ctx, e)
			log.Warn("process disconnected", "err", err)
		} else if lostSince.IsZero() {
			lostSince = time.Now()
		}
		remaining := time.Until(lostSince.Add(grace))
		if remaining <= 0 {
			m.finish(ctx, e, devops.ExitStatus{State: devops.StateLost, Reason: fmt.Sprintf("worker %s unreachable for more than %v", p.WorkerName, grace), EndedAt: time.Now()})
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-m.registry.Changed():
		case <-time.After(min(b.Next(), remaining)):
		}
	}
}

// refused reports whether the worker answered that it will not run the
// command, as opposed to not answering.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted, codes.PermissionDenied,
		codes.AlreadyExists, codes.Internal, codes.Unimplemented:
		return true
	}
	return false
}

// stream runs one ExecuteCommand call: it returns nil once the exit was
// recorded, or the error that broke the call. A call that has not reached
// the process by giveUp (when set) is abandoned: re-attaching must not
// outlast the disconnect grace, even through a network that swallows bytes.
func (m *Manager) stream(ctx context.Context, e *entry, p devops.Process, attachOnly bool, giveUp time.Time, log *slog.Logger) error {
	client, err := m.client(p.WorkerID)
	if err != nil {
		return fmt.Errorf("%w: %v", errNotDelivered, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reached := func() {}
	if !giveUp.IsZero() {
		t := time.AfterFunc(time.Until(giveUp), cancel)
		defer t.Stop()
		reached = func() { t.Stop() }
	}
	spec := p.Spec
	switch {
	case attachOnly || spec.StdinBytes == 0:
	case spec.StdinBytes > devops.MaxStdin:
		if err := m.pushStdin(ctx, client, p.ID, spec.StdinBytes); err != nil {
			return err
		}
	default:
		if spec.Stdin, err = m.inputs.read(string(p.ID), spec.StdinBytes); err != nil {
			return err
		}
	}
	m.procs.setStreamCancel(e, cancel)
	defer m.procs.setStreamCancel(e, nil)
	stream, err := client.ExecuteCommand(ctx, &pb.ExecuteCommandRequest{
		ProcessId:  string(p.ID),
		Spec:       wire.SpecToPB(spec),
		FromOffset: p.OutputBytes,
		AttachOnly: attachOnly,
	})
	if err != nil {
		// The request never left: the connection was down.
		return fmt.Errorf("%w: %v", errNotDelivered, err)
	}
	if !attachOnly && p.OutputBytes == 0 {
		// While the worker starts the command: creating the output's
		// index took 0.4 ms at the median on this project's test VM
		// (2,000 `echo hi` back to back), between the first chunk's
		// arrival and its send to the followers. AppendOutput does it
		// otherwise.
		if err := m.store.PrepareOutput(ctx, p.ID); err != nil {
			log.Debug("prepare output", "err", err)
		}
	}
	end := p.OutputBytes
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return fmt.Errorf("worker ended the stream without an exit: %w", devops.ErrUnavailable)
		}
		if err != nil {
			return err
		}
		switch ev := msg.GetEvent().(type) {
		case *pb.ExecuteCommandResponse_Started:
			reached()
			m.started(ctx, e, wire.Time(ev.Started.GetStartedAt()), log)
		case *pb.ExecuteCommandResponse_Output:
			c := wire.ChunkFromPB(ev.Output)
			if c.End() <= end {
				continue // already stored: a resumed stream may repeat a little
			}
			if c.Offset < end {
				c.Data = c.Data[end-c.Offset:]
				c.Offset = end
			}
			if c.Offset > end {
				if err := m.lost(ctx, e, p.ID, end, c.Offset, log); err != nil {
					return err
				}
			}
			if err := m.storeOutput(ctx, e, c, log); err != nil {
				if !errors.Is(err, store.ErrOutputLimit) {
					return fmt.Errorf("store output: %w", err)
				}
				// The store keeps output up to its limit and no more; live
				// followers must see exactly what a replay would.
				if stored, err := m.store.OutputEnd(ctx, p.ID); err == nil && stored > c.Offset && stored < c.End() {
					e.out.append(devops.Chunk{Offset: c.Offset, Stream: c.Stream, Data: c.Data[:stored-c.Offset]})
				}
				e.out.freeze()
			}
			e.out.append(c)
			end = c.End()
			m.procs.addOutput(e, end)
			m.metrics.output(c)
			if p, _ := m.procs.snapshot(e); p.State == devops.StateDisconnected || p.State == devops.StatePending {
				m.started(ctx, e, time.Time{}, log)
			}
		case *pb.ExecuteCommandResponse_Exit:
			m.finish(ctx, e, wire.ExitFromPB(ev.Exit))
			return nil
		}
	}
}

// storeOutput appends c to the process's stored output. While the
// manager's disk is full it waits and tries again, the process RUNNING
// with the reason said: the worker is there and keeps the output in its
// spool meanwhile. Handled as a broken connection instead, the process
// went DISCONNECTED and RUNNING again at each try for as long as the disk
// stayed full, never LOST, its reason blaming the worker.
func (m *Manager) storeOutput(ctx context.Context, e *entry, c devops.Chunk, log *slog.Logger) error {
	id := e.p.ID // set once, never changed
	b := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	waited := false
	for {
		err := m.store.AppendOutput(ctx, id, c)
		if err == nil && waited {
			m.procs.update(e, func(p *devops.Process) { p.Reason = "" })
			m.persist(ctx, e)
			log.Info("output stored again")
		}
		if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
			return err
		}
		if !waited {
			waited = true
			m.procs.update(e, func(p *devops.Process) {
				p.Reason = fmt.Sprintf("the manager cannot store output (%v); trying again, the worker keeps it meanwhile", err)
			})
			m.persist(ctx, e)
			log.Error("store output: disk full; trying again", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(b.Next()):
		}
	}
}

// started marks the process RUNNING (again, after a disconnection) and
// carries out a termination asked for while it was being delivered.
func (m *Manager) started(ctx context.Context, e *entry, at time.Time, log *slog.Logger) {
	var first bool // PENDING to RUNNING, as opposed to back from DISCONNECTED
	p, changed := m.procs.update(e, func(p *devops.Process) {
		first = p.State == devops.StatePending
		if p.StartedAt.IsZero() {
			p.StartedAt = at
			if at.IsZero() {
				p.StartedAt = time.Now()
			}
		}
		p.State = devops.StateRunning
		p.Reason = ""
	})
	if !changed {
		return
	}
	m.persist(ctx, e)
	if first {
		m.metrics.processStarted(p)
	}
	log.Info("process running", "argv0", p.Spec.Argv[0])
	if asked, sig, grace := m.procs.killRequest(e); asked {
		go func() {
			if err := m.signalWorker(ctx, p, sig, grace); err != nil {
				log.Warn("terminate after start", "err", err)
			}
		}()
	}
}

// finish records the process's end, frees its slot and closes its output so
// that followers return.
func (m *Manager) finish(ctx context.Context, e *entry, x devops.ExitStatus) {
	before, _ := m.procs.snapshot(e)
	p, changed := m.procs.update(e, func(p *devops.Process) {
		p.State = x.State
		p.Code = x.Code
		p.Signal = x.Signal
		p.Reason = x.Reason
		p.EndedAt = x.EndedAt
		if p.EndedAt.IsZero() {
			p.EndedAt = time.Now()
		}
		p.PeakMemory = x.PeakMemory
		p.CPUTime = x.CPUTime
	})
	if !changed {
		return
	}
	if m.procs.releaseSlot(e) {
		m.registry.Release(before.WorkerID)
	}
	m.metrics.processFinished(p)
	m.persist(ctx, e)
	if err := m.store.CloseOutput(ctx, p.ID); err != nil {
		m.log.Error("close output", "process_id", p.ID, "worker", p.WorkerName, "err", err)
	}
	e.out.close() // after the store has every byte: a follower that ends may replay at once
	m.log.Info("process ended", "process_id", p.ID, "worker", p.WorkerName, "state", p.State, "exit_code", p.Code, "signal", p.Signal, "reason", p.Reason)
}

// lost records the output from offset from to offset to, which the worker
// dropped before it was sent (its spool reached its bound while this
// manager was away): the store passes over the gap, and the record and the
// metrics count it, so the loss is shown and never silent.
func (m *Manager) lost(ctx context.Context, e *entry, id devops.ProcessID, from, to int64, log *slog.Logger) error {
	if err := m.store.SkipOutput(ctx, id, to); err != nil {
		return fmt.Errorf("record lost output: %w", err)
	}
	m.procs.update(e, func(p *devops.Process) { p.OutputLost += to - from })
	m.persist(ctx, e)
	m.metrics.outputLost.Add(float64(to - from))
	log.Warn("output lost: the worker's spool dropped it before it was sent", "from", from, "to", to, "bytes", to-from)
	return nil
}

// persist writes the entry's current record to the store.
func (m *Manager) persist(ctx context.Context, e *entry) {
	p, _ := m.procs.snapshot(e)
	if err := m.store.PutProcess(context.WithoutCancel(ctx), p); err != nil {
		m.log.Error("persist process", "process_id", p.ID, "worker", p.WorkerName, "err", err)
	}
}

// signalWorker asks the process's worker to terminate it.
func (m *Manager) signalWorker(ctx context.Context, p devops.Process, sig syscall.Signal, grace time.Duration) error {
	client, err := m.client(p.WorkerID)
	if err != nil {
		return err
	}
	_, err = client.TerminateProcess(ctx, &pb.TerminateProcessRequest{ProcessId: string(p.ID), Signal: int32(sig), Grace: wire.Duration(grace)})
	return err
}

// pushStdin hands the worker a process's standard input of n bytes ahead
// of its ExecuteCommand, which may not carry that much. A worker that
// answers ends it as a refusal of the command; one that cannot be reached
// never got the command.
func (m *Manager) pushStdin(ctx context.Context, client pb.WorkerProcessServiceClient, id devops.ProcessID, n int64) error {
	f, err := m.inputs.open(string(id), n)
	if err != nil {
		return err
	}
	defer f.Close()
	stream, err := client.PutStdin(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", errNotDelivered, err)
	}
	msg := &pb.PutStdinRequest{ProcessId: string(id), Size: n}
	for sent := int64(0); sent < n; {
		// A new buffer each time: a sent message may be read later (by
		// gRPC's stats handlers), so it is not reused.
		msg.Data = make([]byte, min(devops.StdinChunk, n-sent))
		if _, err := io.ReadFull(f, msg.Data); err != nil {
			return fmt.Errorf("%w: %v", errNoInput, err)
		}
		if err := stream.Send(msg); errors.Is(err, io.EOF) {
			break // the worker answered early: CloseAndRecv says what
		} else if err != nil {
			return fmt.Errorf("%w: send its standard input: %v", errNotDelivered, err)
		}
		sent += int64(len(msg.Data))
		msg = &pb.PutStdinRequest{}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		if refused(err) {
			return err
		}
		return fmt.Errorf("%w: send its standard input: %v", errNotDelivered, err)
	}
	return nil
}

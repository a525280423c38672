package manager

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/scheduler"
)

// Target says where a command runs; the zero Target lets the scheduler pick
// one worker.
type Target struct {
	Worker   string // a worker name or id
	Selector string // every worker that matches
	All      bool
}

// Submission is one request to run a command.
type Submission struct {
	Spec            devops.Spec
	Target          Target
	QueueTimeout    time.Duration
	DisconnectGrace time.Duration
	IdempotencyKey  string
}

// Submit creates the processes a submission asks for and starts tracking
// them. A retried submission with the same idempotency key returns the
// processes it created the first time instead of starting new ones. It fails
// at once (devops.ErrNoMatch, ErrNotFound, ErrInvalid) when no worker can run
// the command.
func (m *Manager) Submit(ctx context.Context, s Submission) ([]devops.ProcessID, error) {
	if err := s.Spec.Validate(); err != nil {
		return nil, err
	}
	if s.QueueTimeout < 0 || s.DisconnectGrace < 0 {
		return nil, fmt.Errorf("%w: negative timeout", devops.ErrInvalid)
	}
	if s.IdempotencyKey != "" {
		if ids := m.procs.byIdempotencyKey(s.IdempotencyKey); len(ids) > 0 {
			return ids, nil
		}
	}
	targets, err := m.resolve(s.Target)
	if err != nil {
		return nil, err
	}
	input, upload := s.Spec.Stdin, s.Spec.StdinUpload
	s.Spec.Stdin, s.Spec.StdinUpload, s.Spec.StdinBytes = nil, "", int64(len(input))
	if upload != "" {
		if s.Spec.StdinBytes, err = m.inputs.uploaded(upload); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	base := devops.Process{
		Spec:            s.Spec,
		State:           devops.StatePending,
		CreatedAt:       now,
		StateChangedAt:  now,
		IdempotencyKey:  s.IdempotencyKey,
		QueueTimeout:    s.QueueTimeout,
		DisconnectGrace: s.DisconnectGrace,
	}
	// The key check and the insert happen under one lock so that two
	// concurrent retries of one request create the processes once.
	m.procs.mu.Lock()
	if s.IdempotencyKey != "" {
		if ids := m.procs.byKey[s.IdempotencyKey]; len(ids) > 0 {
			m.procs.mu.Unlock()
			return ids, nil
		}
	}
	var entries []*entry
	for _, w := range targets {
		p := base
		p.ID = devops.ProcessID(newID())
		p.WorkerID, p.WorkerName = w.ID, w.Name
		e := m.procs.addLocked(p)
		e.pinned = w.ID != ""
		entries = append(entries, e)
	}
	m.procs.mu.Unlock()

	ids := make([]devops.ProcessID, len(entries))
	for i, e := range entries {
		ids[i] = e.p.ID
	}
	if len(input) > 0 || upload != "" {
		if err := m.putInputs(ids, input, upload); err != nil {
			m.procs.remove(ids)
			return nil, err
		}
	}
	for _, e := range entries {
		if !e.pinned {
			m.placeNow(e)
		}
		m.persist(ctx, e)
		m.startTracking(e)
	}
	return ids, nil
}

// putInputs keeps data, or the upload, as the standard input of each of
// ids: one file, linked to the others.
func (m *Manager) putInputs(ids []devops.ProcessID, data []byte, upload string) error {
	var err error
	if upload != "" {
		err = m.inputs.linkUpload(upload, string(ids[0]))
	} else {
		err = m.inputs.put(string(ids[0]), data)
	}
	for _, id := range ids[1:] {
		if err == nil {
			err = m.inputs.link(string(ids[0]), string(id))
		}
	}
	if err != nil {
		for _, id := range ids {
			m.inputs.drop(string(id))
		}
	}
	return err
}

// placeNow puts a process that may run anywhere on a worker with a free
// slot, when one has a slot right now, so that its first record already
// names the worker: one write to the store before the command is delivered
// instead of two (~0.4 ms each on the path to the first byte). Without a
// free slot it stays unplaced, and track waits for one.
func (m *Manager) placeNow(e *entry) {
	w, err := m.registry.Acquire(func(ws []devops.Worker) (devops.Worker, error) {
		return scheduler.Pick(ws, scheduler.Selector{})
	})
	if err != nil {
		return
	}
	m.procs.setSlot(e)
	m.procs.update(e, func(p *devops.Process) { p.WorkerID, p.WorkerName = w.ID, w.Name })
}

// resolve turns a target into the workers that run the command: one zero
// Worker (the scheduler picks later) for an empty target, else the named or
// matching workers.
func (m *Manager) resolve(t Target) ([]devops.Worker, error) {
	switch {
	case t.Worker != "" && (t.Selector != "" || t.All):
		return nil, fmt.Errorf("%w: a worker name cannot be combined with a selector or all", devops.ErrInvalid)
	case t.Worker != "":
		w, err := m.registry.Get(t.Worker)
		if err != nil {
			return nil, fmt.Errorf("unknown worker %q: %w", t.Worker, devops.ErrNotFound)
		}
		if w.State != devops.WorkerUp {
			return nil, fmt.Errorf("%w: worker %s is %s", devops.ErrNoMatch, w.Name, w.State)
		}
		return []devops.Worker{w}, nil
	case t.All || t.Selector != "":
		sel, err := scheduler.ParseSelector(t.Selector)
		if err != nil {
			return nil, err
		}
		return scheduler.Match(m.registry.Snapshot(), sel)
	default:
		// Fail now rather than queue when nothing could ever run it.
		if _, err := scheduler.Match(m.registry.Snapshot(), scheduler.Selector{}); err != nil {
			return nil, err
		}
		return []devops.Worker{{}}, nil
	}
}

// Process returns the record of a process; devops.ErrNotFound when unknown.
func (m *Manager) Process(id devops.ProcessID) (devops.Process, error) {
	e, ok := m.procs.get(id)
	if !ok {
		return devops.Process{}, fmt.Errorf("process %q: %w", id, devops.ErrNotFound)
	}
	p, _ := m.procs.snapshot(e)
	return p, nil
}

// ProcessFilter selects processes; zero fields select everything.
type ProcessFilter struct {
	State  devops.State
	Worker string // a worker name or id
}

func (f ProcessFilter) keep(p devops.Process) bool {
	if f.State != devops.StateUnknown && p.State != f.State {
		return false
	}
	return f.Worker == "" || string(p.WorkerID) == f.Worker || p.WorkerName == f.Worker
}

// Workers lists every known worker, by name.
func (m *Manager) Workers() []devops.Worker {
	return m.registry.Snapshot()
}

// Terminate asks for a process to end: sig to its process group, SIGKILL
// after grace. A process still waiting for a slot ends at once. It returns
// devops.ErrTerminal for a process that already ended, and ErrUnavailable
// when its worker cannot be reached.
func (m *Manager) Terminate(ctx context.Context, id devops.ProcessID, sig syscall.Signal, grace time.Duration) (devops.Process, error) {
	e, ok := m.procs.get(id)
	if !ok {
		return devops.Process{}, fmt.Errorf("process %q: %w", id, devops.ErrNotFound)
	}
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if sig < 0 || sig > 64 || grace < 0 {
		return devops.Process{}, fmt.Errorf("%w: bad signal %d or grace %v", devops.ErrInvalid, sig, grace)
	}
	p, _ := m.procs.snapshot(e)
	if p.State.Terminal() {
		return p, fmt.Errorf("terminate %s: process %w (%s)", id, devops.ErrTerminal, p.State)
	}
	// Recorded first, so a process being delivered right now is terminated
	// as soon as its worker reports it started.
	m.procs.askKill(e, sig, grace)
	if p.State == devops.StatePending {
		p, _ = m.procs.snapshot(e)
		return p, nil
	}
	// A worker that just restarted may not be reachable at its new address
	// for a moment: give it a few seconds. Either way the request stands,
	// and the tracker delivers it when the process is attached again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		changed := m.registry.Changed()
		err := m.signalWorker(ctx, p, sig, grace)
		if err == nil {
			break
		}
		if !connectionFailed(ctx, err) || time.Now().After(deadline) {
			return p, fmt.Errorf("terminate %s on worker %s: %v (the request stands: it is sent when the worker answers): %w", id, p.WorkerName, err, devops.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-changed:
		case <-time.After(200 * time.Millisecond):
		}
		p, _ = m.procs.snapshot(e)
		if p.State.Terminal() {
			return p, nil
		}
	}
	p, _ = m.procs.snapshot(e)
	return p, nil
}

// connectionFailed reports whether a call to a worker failed for want of a
// connection rather than by the worker's answer: Unavailable, or Canceled
// while the caller's context is live -- the manager closed the connection
// under the call, as it does when the worker registers again.
func connectionFailed(ctx context.Context, err error) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return true
	case codes.Canceled:
		return ctx.Err() == nil
	}
	return false
}

// Event is one thing a watcher sees: a process record (a state change) or a
// chunk of its output.
type Event struct {
	Process *devops.Process
	ID      devops.ProcessID
	Chunk   *devops.Chunk
}

// Watch streams the state changes and the output of processes, from offset
// from, until every one of them has ended; the last event of each is its
// final record. With follow false it sends what is stored now and the
// current record. send is never called concurrently.
func (m *Manager) Watch(ctx context.Context, ids []devops.ProcessID, from int64, follow, states bool, send func(Event) error) error {
	entries := make([]*entry, len(ids))
	for i, id := range ids {
		e, ok := m.procs.get(id)
		if !ok {
			return fmt.Errorf("process %q: %w", id, devops.ErrNotFound)
		}
		entries[i] = e
	}
	if from < 0 {
		return fmt.Errorf("%w: negative offset %d", devops.ErrInvalid, from)
	}
	for _, e := range entries {
		// A follower of a live process may stand past the end (after a
		// manager restart it can be ahead of what was stored: the worker
		// sends it again); anyone else may not.
		if p, _ := m.procs.snapshot(e); from > p.OutputBytes && (p.State.Terminal() || !follow) {
			return fmt.Errorf("%w: offset %d is past the end of the output of %s (%d bytes)", devops.ErrOutOfRange, from, p.ID, p.OutputBytes)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex // serialises send
	locked := func(ev Event) error {
		mu.Lock()
		defer mu.Unlock()
		return send(ev)
	}
	errc := make(chan error, len(entries))
	for _, e := range entries {
		go func() { errc <- m.watchOne(ctx, e, from, follow, states, locked) }()
	}
	var first error
	for range entries {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

func (m *Manager) watchOne(ctx context.Context, e *entry, from int64, follow, states bool, send func(Event) error) error {
	p, changed := m.procs.snapshot(e)
	id := p.ID
	// A process that ended before the watch began is told last, after its
	// output, as any other: told first, its end came before its output
	// (fleet runs' children of a few milliseconds, one in ten: --group
	// printed their block empty and dropped what came after, -o json put
	// the end object first).
	if states && (!p.State.Terminal() || from >= p.OutputBytes) {
		if err := send(Event{ID: id, Process: &p}); err != nil {
			return err
		}
	}
	done := make(chan struct{})
	stateErr := make(chan error, 1)
	if states && follow {
		// State changes travel beside the output; the final record is sent
		// after the last byte, below.
		go func() {
			last, lastReason := p.State, p.Reason
			for {
				select {
				case <-done:
					stateErr <- nil
					return
				case <-changed:
				}
				var cur devops.Process
				cur, changed = m.procs.snapshot(e)
				// A new reason while it runs (the manager's disk full, and
				// fine again) is news too.
				if (cur.State != last || cur.Reason != lastReason) && !cur.State.Terminal() {
					last, lastReason = cur.State, cur.Reason
					if err := send(Event{ID: id, Process: &cur}); err != nil {
						stateErr <- err
						return
					}
				}
			}
		}()
	} else {
		stateErr <- nil
	}
	err := m.readOutput(ctx, e, from, follow, func(c devops.Chunk) error {
		return send(Event{ID: id, Chunk: &c})
	})
	close(done)
	if serr := <-stateErr; err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	final, _ := m.procs.snapshot(e)
	return send(Event{ID: id, Process: &final})
}

// readOutput sends a process's output from offset from: what left the
// in-memory tail comes from the store, the rest from the tail. With follow
// it waits for more until the output is closed.
func (m *Manager) readOutput(ctx context.Context, e *entry, from int64, follow bool, send func(devops.Chunk) error) error {
	id := e.p.ID // set once, never changed
	pos := from
	for {
		chunks, closed, behind, changed := e.out.read(pos)
		if behind {
			before := pos
			err := m.store.ReadOutput(ctx, id, pos, false, func(c devops.Chunk) error {
				pos = c.End()
				return send(c)
			})
			if err != nil {
				return fmt.Errorf("read stored output of %s: %w", id, err)
			}
			if pos == before {
				// The tail is ahead of what the store gave: the store
				// reports its state (an error, or that retention dropped
				// the output) before another try.
				if _, err := m.store.OutputEnd(ctx, id); err != nil {
					return fmt.Errorf("read stored output of %s: %w", id, err)
				}
				if closed {
					return nil // retention dropped them for good
				}
			}
			continue
		}
		for _, c := range chunks {
			if err := send(c); err != nil {
				return err
			}
			pos = c.End()
		}
		if len(chunks) > 0 {
			continue
		}
		if closed || !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

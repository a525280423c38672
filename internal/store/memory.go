package store

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/devops-platform/devops"
)

// Memory is a store that keeps everything in memory, with the same
// semantics as JetStream, for fast tests of the packages that use a store.
// The zero value is not usable; call NewMemory.
type Memory struct {
	// MaxProcessOutputBytes caps the output kept per process, as in Config.
	// Zero means DefaultMaxProcessOutputBytes. Set it before first use.
	MaxProcessOutputBytes int64

	mu        sync.Mutex // guards the maps and every memOutput in them
	workers   map[devops.WorkerID]devops.Worker
	processes map[devops.ProcessID]devops.Process
	outputs   map[devops.ProcessID]*memOutput
}

// memOutput is the output of one process.
type memOutput struct {
	// chunks only grows (DeleteOutput aside), and stored chunks are never
	// modified, so readers may use them after unlocking.
	chunks    []devops.Chunk
	end       int64
	closed    bool
	truncated bool
	// changed is closed and replaced whenever chunks or closed change, which
	// wakes every follower at once and, unlike sync.Cond, lets them also
	// wait for their context.
	changed chan struct{}
}

func (o *memOutput) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return &Memory{
		workers:   make(map[devops.WorkerID]devops.Worker),
		processes: make(map[devops.ProcessID]devops.Process),
		outputs:   make(map[devops.ProcessID]*memOutput),
	}
}

// Close does nothing; it makes Memory a drop-in for JetStream.
func (m *Memory) Close() error { return nil }

// PutWorker stores a copy of w, replacing the record with the same ID.
func (m *Memory) PutWorker(ctx context.Context, w devops.Worker) error {
	if _, err := key(string(w.ID)); err != nil {
		return fmt.Errorf("put worker %s: %w", w.ID, err)
	}
	w.Labels = maps.Clone(w.Labels)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.workers[w.ID] = w
	return nil
}

// DeleteWorker removes a worker's record; removing an unknown one is no error.
func (m *Memory) DeleteWorker(ctx context.Context, id devops.WorkerID) error {
	if _, err := key(string(id)); err != nil {
		return fmt.Errorf("delete worker %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.workers, id)
	return nil
}

// Workers returns all worker records sorted by name (then ID).
func (m *Memory) Workers(ctx context.Context) ([]devops.Worker, error) {
	m.mu.Lock()
	ws := make([]devops.Worker, 0, len(m.workers))
	for _, w := range m.workers {
		w.Labels = maps.Clone(w.Labels)
		ws = append(ws, w)
	}
	m.mu.Unlock()
	slices.SortFunc(ws, func(a, b devops.Worker) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(string(a.ID), string(b.ID)))
	})
	return ws, nil
}

// PutProcess stores a copy of p, replacing the record with the same ID.
func (m *Memory) PutProcess(ctx context.Context, p devops.Process) error {
	if _, err := key(string(p.ID)); err != nil {
		return fmt.Errorf("put process %s: %w", p.ID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.processes[p.ID] = cloneProcess(p)
	return nil
}

// Process returns the record of process id, or an error wrapping
// ErrNotFound.
func (m *Memory) Process(ctx context.Context, id devops.ProcessID) (devops.Process, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.processes[id]
	if !ok {
		return devops.Process{}, fmt.Errorf("get process %s: %w", id, devops.ErrNotFound)
	}
	return cloneProcess(p), nil
}

// Processes returns all process records sorted by ID.
func (m *Memory) Processes(ctx context.Context) ([]devops.Process, error) {
	m.mu.Lock()
	ps := make([]devops.Process, 0, len(m.processes))
	for _, p := range m.processes {
		ps = append(ps, cloneProcess(p))
	}
	m.mu.Unlock()
	slices.SortFunc(ps, func(a, b devops.Process) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return ps, nil
}

// cloneProcess copies the maps and slices of p so that the caller and the
// store never share them, as they would not through JetStream.
func cloneProcess(p devops.Process) devops.Process {
	p.Spec.Argv = slices.Clone(p.Spec.Argv)
	p.Spec.Env = maps.Clone(p.Spec.Env)
	p.Spec.SecretEnvKeys = slices.Clone(p.Spec.SecretEnvKeys)
	return p
}

// outputLocked returns the output of id, creating it empty.
func (m *Memory) outputLocked(id devops.ProcessID) *memOutput {
	o, ok := m.outputs[id]
	if !ok {
		o = &memOutput{changed: make(chan struct{})}
		m.outputs[id] = o
	}
	return o
}

// PrepareOutput has nothing to ready in memory.
func (m *Memory) PrepareOutput(context.Context, devops.ProcessID) error { return nil }

// AppendOutput stores a copy of chunk c of process id, with the rules of
// JetStream.AppendOutput.
func (m *Memory) AppendOutput(ctx context.Context, id devops.ProcessID, c devops.Chunk) error {
	if err := m.appendOutput(ctx, id, c); err != nil {
		return fmt.Errorf("append output %s: %w", id, err)
	}
	return nil
}

func (m *Memory) appendOutput(ctx context.Context, id devops.ProcessID, c devops.Chunk) error {
	if err := checkChunk(c); err != nil {
		return err
	}
	if _, err := key(string(id)); err != nil {
		return err
	}
	if len(c.Data) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	limit := cmp.Or(m.MaxProcessOutputBytes, DefaultMaxProcessOutputBytes)
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.outputLocked(id)
	if o.closed {
		return fmt.Errorf("%w: output closed", devops.ErrTerminal)
	}
	if o.truncated {
		return nil
	}
	c, cut, err := fitChunk(c, o.end, limit)
	if err != nil {
		return err
	}
	if len(c.Data) > 0 {
		c.Data = slices.Clone(c.Data)
		o.chunks = append(o.chunks, c)
		o.end = c.End()
		o.notifyLocked()
	}
	if cut {
		o.truncated = true
		return ErrOutputLimit
	}
	return nil
}

// SkipOutput records that the output of process id from its end up to
// offset to is lost; see JetStream.SkipOutput.
func (m *Memory) SkipOutput(ctx context.Context, id devops.ProcessID, to int64) error {
	if _, err := key(string(id)); err != nil {
		return fmt.Errorf("skip output %s: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("skip output %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.outputLocked(id)
	if o.closed {
		return fmt.Errorf("skip output %s: %w: output closed", id, devops.ErrTerminal)
	}
	if !o.truncated && to > o.end {
		o.end = to
	}
	return nil
}

// CloseOutput marks the output of process id complete. Closing twice is not
// an error.
func (m *Memory) CloseOutput(ctx context.Context, id devops.ProcessID) error {
	if _, err := key(string(id)); err != nil {
		return fmt.Errorf("close output %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.outputLocked(id)
	if !o.closed {
		o.closed = true
		o.notifyLocked()
	}
	return nil
}

// DeleteOutput drops the stored output of process id; it counts as closed
// afterwards and OutputEnd still reports where it ended.
func (m *Memory) DeleteOutput(ctx context.Context, id devops.ProcessID) error {
	if _, err := key(string(id)); err != nil {
		return fmt.Errorf("delete output %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.outputLocked(id)
	o.chunks = nil
	o.closed = true
	o.notifyLocked()
	return nil
}

// Forget deletes the records and output of processes, as JetStream.Forget
// does; Memory keeps no runs.
func (m *Memory) Forget(ctx context.Context, processes []devops.ProcessID, runs []devops.RunID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range processes {
		delete(m.processes, id)
		if o, ok := m.outputs[id]; ok {
			// A follower still on it sees it end where it was.
			o.closed = true
			o.notifyLocked()
			delete(m.outputs, id)
		}
	}
	return nil
}

// OutputEnd returns the offset just past the last stored chunk of process
// id, 0 when there is none.
func (m *Memory) OutputEnd(ctx context.Context, id devops.ProcessID) (int64, error) {
	info, err := m.OutputInfo(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("output end %s: %w", id, err)
	}
	return info.End, nil
}

// OutputInfo returns the end, and whether the output of process id was
// closed or truncated.
func (m *Memory) OutputInfo(ctx context.Context, id devops.ProcessID) (OutputInfo, error) {
	if _, err := key(string(id)); err != nil {
		return OutputInfo{}, fmt.Errorf("output info %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.outputs[id]
	if !ok {
		return OutputInfo{}, nil
	}
	return OutputInfo{End: o.end, Closed: o.closed, Truncated: o.truncated}, nil
}

// ReadOutput calls fn with the output of process id past offset from, with
// the semantics of JetStream.ReadOutput.
func (m *Memory) ReadOutput(ctx context.Context, id devops.ProcessID, from int64, follow bool, fn func(devops.Chunk) error) error {
	if from < 0 {
		return fmt.Errorf("read output %s: %w: negative offset %d", id, devops.ErrOutOfRange, from)
	}
	if _, err := key(string(id)); err != nil {
		return fmt.Errorf("read output %s: %w", id, err)
	}
	next := 0 // index of the first chunk not yet looked at
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m.mu.Lock()
		if _, ok := m.outputs[id]; !ok && !follow {
			m.mu.Unlock()
			return nil
		}
		o := m.outputLocked(id)
		next = min(next, len(o.chunks)) // DeleteOutput emptied it
		batch := o.chunks[next:]
		closed, changed := o.closed, o.changed
		m.mu.Unlock()

		for _, c := range batch {
			if c, ok := trimChunk(c, from); ok {
				if err := fn(c); err != nil {
					return err
				}
			}
		}
		next += len(batch)
		// batch was taken together with closed: when it was closed, the
		// batch held everything there will ever be.
		if closed || !follow {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

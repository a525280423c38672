// Package registry holds the manager's live view of its workers: who they
// are, whether they are up, and how many of their slots are in use. Each
// worker has one heartbeat timer: a worker not heard from within the timeout
// is marked DOWN. It imports only the domain and the scheduler's selector.
package registry

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/devops-platform/devops"
)

// Config configures a Registry.
type Config struct {
	// Timeout is how long a worker may go unheard before it is marked DOWN.
	Timeout time.Duration
	// OnChange, if not nil, is called (outside the registry's lock) with the
	// new record whenever a worker registers or changes state.
	OnChange func(w devops.Worker, old devops.WorkerState)
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Registry is the set of known workers. It is safe for concurrent use.
type Registry struct {
	cfg Config

	mu      sync.Mutex                 // protects the fields below
	workers map[devops.WorkerID]*entry // every known worker
	changed chan struct{}              // closed and replaced when a slot may have freed
	byName  map[string]devops.WorkerID // name to id, for lookups and conflicts
}

type entry struct {
	w       devops.Worker
	timer   *time.Timer // fires when the worker has been silent for Timeout
	history history     // the latest metrics samples (history.go)
}

// New returns an empty registry.
func New(cfg Config) *Registry {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Registry{
		cfg:     cfg,
		workers: make(map[devops.WorkerID]*entry),
		byName:  make(map[string]devops.WorkerID),
		changed: make(chan struct{}),
	}
}

// Load adds workers known from an earlier run, in state DOWN until they are
// heard from again.
func (r *Registry) Load(ws []devops.Worker) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range ws {
		w.State = devops.WorkerDown
		w.Running = 0
		r.workers[w.ID] = &entry{w: w}
		r.byName[w.Name] = w.ID
	}
}

// Register admits w, or updates a known worker with the same ID. A worker
// that claims the name of another worker that is up gets an error wrapping
// devops.ErrAlreadyExists; one that claims the name of a worker that is down
// replaces it. The worker stays in its current state until its first
// heartbeat.
func (r *Registry) Register(w devops.Worker) (devops.Worker, error) {
	r.mu.Lock()
	if id, ok := r.byName[w.Name]; ok && id != w.ID {
		other := r.workers[id]
		if other.w.State != devops.WorkerDown {
			r.mu.Unlock()
			return devops.Worker{}, fmt.Errorf("%w: worker name %q is in use by live worker %s", devops.ErrAlreadyExists, w.Name, id)
		}
		r.removeLocked(id)
	}
	e, ok := r.workers[w.ID]
	if !ok {
		e = &entry{}
		r.workers[w.ID] = e
		w.State = devops.WorkerDown
		w.RegisteredAt = r.cfg.Now()
	} else {
		delete(r.byName, e.w.Name)
		w.State = e.w.State
		w.Running = e.w.Running
		w.RegisteredAt = e.w.RegisteredAt
		w.Metrics = e.w.Metrics
	}
	r.byName[w.Name] = w.ID
	e.w = w
	r.mu.Unlock()
	r.notify(w, w.State)
	return w, nil
}

func (r *Registry) removeLocked(id devops.WorkerID) {
	if e, ok := r.workers[id]; ok {
		if e.timer != nil {
			e.timer.Stop()
		}
		delete(r.byName, e.w.Name)
		delete(r.workers, id)
	}
}

// Heartbeat records that the worker was heard from: it is UP (unless
// draining) and its timer restarts.
func (r *Registry) Heartbeat(id devops.WorkerID, draining bool) {
	r.mu.Lock()
	e, ok := r.workers[id]
	if !ok {
		r.mu.Unlock()
		return
	}
	e.w.LastSeen = r.cfg.Now()
	old := e.w.State
	e.w.State = devops.WorkerUp
	if draining {
		e.w.State = devops.WorkerDraining
	}
	if e.timer == nil {
		e.timer = time.AfterFunc(r.cfg.Timeout, func() { r.expire(id) })
	} else {
		e.timer.Reset(r.cfg.Timeout)
	}
	w := e.w
	if old != w.State {
		r.broadcastLocked()
	}
	r.mu.Unlock()
	if old != w.State {
		r.notify(w, old)
	}
}

func (r *Registry) expire(id devops.WorkerID) {
	r.MarkDown(id)
}

// MarkDown marks the worker DOWN, as when its connection failed.
func (r *Registry) MarkDown(id devops.WorkerID) {
	r.mu.Lock()
	e, ok := r.workers[id]
	if !ok || e.w.State == devops.WorkerDown {
		r.mu.Unlock()
		return
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	old := e.w.State
	e.w.State = devops.WorkerDown
	w := e.w
	r.broadcastLocked()
	r.mu.Unlock()
	r.notify(w, old)
}

// SetDraining marks an up worker DRAINING (no new work), or UP again.
func (r *Registry) SetDraining(id devops.WorkerID, draining bool) (devops.Worker, error) {
	r.mu.Lock()
	e, ok := r.workers[id]
	if !ok {
		r.mu.Unlock()
		return devops.Worker{}, fmt.Errorf("worker %s: %w", id, devops.ErrNotFound)
	}
	old := e.w.State
	switch {
	case draining && old == devops.WorkerUp:
		e.w.State = devops.WorkerDraining
	case !draining && old == devops.WorkerDraining:
		e.w.State = devops.WorkerUp
	}
	w := e.w
	if old != w.State {
		r.broadcastLocked()
	}
	r.mu.Unlock()
	if old != w.State {
		r.notify(w, old)
	}
	return w, nil
}

// Remove forgets a worker, as when it deregistered.
func (r *Registry) Remove(id devops.WorkerID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(id)
	r.broadcastLocked()
}

// SetMetrics keeps the worker's latest metrics sample, and the last
// HistoryLen in its history.
func (r *Registry) SetMetrics(id devops.WorkerID, m devops.Metrics) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.workers[id]; ok {
		e.w.Metrics = m
		e.history.add(m)
	}
}

// Acquire takes a slot on the worker that pick chooses from a snapshot of all
// workers, atomically with the choice. pick's error is returned as is.
func (r *Registry) Acquire(pick func([]devops.Worker) (devops.Worker, error)) (devops.Worker, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, err := pick(r.snapshotLocked())
	if err != nil {
		return devops.Worker{}, err
	}
	e, ok := r.workers[w.ID]
	if !ok {
		return devops.Worker{}, fmt.Errorf("acquire slot on %s: %w", w.Name, devops.ErrNotFound)
	}
	e.w.Running++
	return e.w, nil
}

// Hold counts a slot as taken on the worker without a choice, for processes
// found running after a restart.
func (r *Registry) Hold(id devops.WorkerID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.workers[id]; ok {
		e.w.Running++
	}
}

// Release frees a slot taken by Acquire or Hold.
func (r *Registry) Release(id devops.WorkerID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.workers[id]; ok && e.w.Running > 0 {
		e.w.Running--
		r.broadcastLocked()
	}
}

// Changed returns a channel that is closed the next time a slot frees or a
// worker changes state: waiters for capacity select on it, then look again.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

func (r *Registry) broadcastLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Snapshot returns every worker, sorted by name.
func (r *Registry) Snapshot() []devops.Worker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snapshotLocked()
}

func (r *Registry) snapshotLocked() []devops.Worker {
	ws := make([]devops.Worker, 0, len(r.workers))
	for _, e := range r.workers {
		w := e.w
		w.Labels = maps.Clone(w.Labels)
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b devops.Worker) int { return strings.Compare(a.Name, b.Name) })
	return ws
}

// Get finds a worker by id or by name; it returns an error wrapping
// devops.ErrNotFound when there is none.
func (r *Registry) Get(idOrName string) (devops.Worker, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.workers[devops.WorkerID(idOrName)]; ok {
		return e.w, nil
	}
	if id, ok := r.byName[idOrName]; ok {
		return r.workers[id].w, nil
	}
	return devops.Worker{}, fmt.Errorf("worker %q: %w", idOrName, devops.ErrNotFound)
}

// Stop stops every heartbeat timer.
func (r *Registry) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.workers {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
}

func (r *Registry) notify(w devops.Worker, old devops.WorkerState) {
	if r.cfg.OnChange != nil {
		r.cfg.OnChange(w, old)
	}
}

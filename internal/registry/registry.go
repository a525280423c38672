// Package registry holds the manager's live view of its workers: who they
// are, whether they are up, and how many of their slots are in use. A worker
// not heard from within the timeout is marked DOWN: the workers heard from
// wait in the order they were last heard from, all on one timer (see
// Registry.live). It imports only the domain and the scheduler's selector.
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
	// OnChange, if not nil, is told the new record whenever a worker
	// registers or changes state: after the change, in the order of the
	// changes, from a goroutine of the registry's (see Registry.untold).
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
	// live holds the workers that are UP or DRAINING, least recently heard
	// from first: the sentinel of a list through entry.prev and
	// entry.next. All share one timeout, so this is also the order of
	// their deadlines, and one timer (expiry) set for the first deadline
	// does what a timer per worker would. A heartbeat moves its worker to
	// the end of the list, which does not touch the timer: the first
	// deadline only moves later, so the timer may fire early, never late,
	// and when it fires it marks DOWN the workers whose deadline passed and
	// waits for the next first one. A timer per worker, reset at every
	// heartbeat, cost 2,000 timer updates a second at 10,000 workers.
	live    entry
	expiry  *time.Timer // runs expire; nil until the first heartbeat
	armed   bool        // expiry is set to fire
	stopped bool        // Stop was called: expiry stays off
	// untold are the changes OnChange has not been told yet, oldest
	// first. One goroutine at a time tells them (telling; told is closed
	// when it is done), so OnChange sees a worker's changes in the order
	// they were made (a heartbeat's UP and the timer's DOWN could reach a
	// listener called by each crossed), and whoever made a change does not
	// wait for it: the status stream of every worker beats the heart, and
	// a listener that persists the record and logs went 9 KiB deeper than
	// its parked handler, which kept a 16 KiB stack a worker.
	untold  []change
	telling bool
	told    chan struct{}
}

type entry struct {
	w devops.Worker
	// heard is when the worker was last heard from, on the monotonic
	// clock (time.Now, whatever Config.Now is): its deadline is heard +
	// Timeout.
	heard      time.Time
	prev, next *entry  // in Registry.live, nil when not in it
	history    history // the latest metrics samples (history.go)
	removed    bool    // no longer in Registry.workers (a Heart may still hold it)
	// draining as the worker last told it, in a heartbeat or through
	// SetDraining, and that telling's drain generation. Of two tellings the
	// higher generation wins, whichever arrives last: a report taken before
	// a drain was undone can arrive after the undo's answer.
	draining bool
	drainGen uint64
}

// New returns an empty registry.
func New(cfg Config) *Registry {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Registry{
		cfg:     cfg,
		workers: make(map[devops.WorkerID]*entry),
		byName:  make(map[string]devops.WorkerID),
		changed: make(chan struct{}),
	}
	r.live.prev, r.live.next = &r.live, &r.live
	return r
}

// Load adds workers known from an earlier run, in state DOWN until they are
// heard from again.
func (r *Registry) Load(ws []devops.Worker) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range ws {
		w.State = devops.WorkerDown
		w.Running = 0
		if old, ok := r.workers[w.ID]; ok {
			old.removed = true
			r.unlinkLocked(old)
		}
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
	// A worker that registers again may have restarted and counts its drain
	// generations from 0 again.
	e.draining, e.drainGen = false, 0
	r.notifyLocked(change{w: w, old: w.State})
	r.mu.Unlock()
	return w, nil
}

func (r *Registry) removeLocked(id devops.WorkerID) {
	if e, ok := r.workers[id]; ok {
		e.removed = true
		r.unlinkLocked(e)
		delete(r.byName, e.w.Name)
		delete(r.workers, id)
	}
}

// Heartbeat records that the worker was heard from: it is UP (unless
// draining) and its timer restarts. gen is the worker's drain generation
// when it took the report: a report older than the drain state already
// known (a lower gen) changes only the timer.
func (r *Registry) Heartbeat(id devops.WorkerID, draining bool, gen uint64) {
	r.mu.Lock()
	e, ok := r.workers[id]
	if !ok {
		r.mu.Unlock()
		return
	}
	r.beatLocked(e, draining, gen)
}

// Heart is one worker's heartbeat, for a caller that hears from the worker
// often (its status stream, 2,000 reports a second at 10,000 workers):
// Beat is Heartbeat without finding the worker among all the others. It is
// safe for concurrent use.
type Heart struct {
	r  *Registry
	id devops.WorkerID
	e  *entry // the worker's entry; under r.mu, replaced once it is removed
}

// Heart returns the heartbeat of a known worker; an error wrapping
// devops.ErrNotFound when there is none with that id.
func (r *Registry) Heart(id devops.WorkerID) (*Heart, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.workers[id]
	if !ok {
		return nil, fmt.Errorf("worker %s: %w", id, devops.ErrNotFound)
	}
	return &Heart{r: r, id: id, e: e}, nil
}

// Beat is Heartbeat for the heart's worker. A worker removed since is looked
// up again by its id: if it registered again, the beat counts for it; if
// not, the beat is ignored.
func (h *Heart) Beat(draining bool, gen uint64) {
	r := h.r
	r.mu.Lock()
	if h.e.removed {
		e, ok := r.workers[h.id]
		if !ok {
			r.mu.Unlock()
			return
		}
		h.e = e
	}
	r.beatLocked(h.e, draining, gen)
}

// beatLocked is a heartbeat of the worker whose entry is e. The caller
// holds r.mu; beatLocked releases it.
func (r *Registry) beatLocked(e *entry, draining bool, gen uint64) {
	e.w.LastSeen = r.cfg.Now()
	e.heard = time.Now()
	e.tellDraining(draining, gen)
	old := e.w.State
	e.w.State = devops.WorkerUp
	if e.draining {
		e.w.State = devops.WorkerDraining
	}
	// To the end of live: the latest deadline.
	r.unlinkLocked(e)
	e.prev, e.next = r.live.prev, &r.live
	e.prev.next, r.live.prev = e, e
	r.armLocked()
	if old == e.w.State {
		// The usual case: nothing to tell, and no copy of the record.
		r.mu.Unlock()
		return
	}
	r.broadcastLocked()
	r.notifyLocked(change{w: e.w, old: old})
	r.mu.Unlock()
}

// unlinkLocked takes e out of live, if it is there.
func (r *Registry) unlinkLocked(e *entry) {
	if e.next == nil {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

// armLocked sets expiry for the first deadline in live, unless it is set
// already (for that deadline or an earlier one) or live is empty.
func (r *Registry) armLocked() {
	first := r.live.next
	if r.armed || r.stopped || first == &r.live {
		return
	}
	d := time.Until(first.heard.Add(r.cfg.Timeout))
	if r.expiry == nil {
		r.expiry = time.AfterFunc(d, r.expire)
	} else {
		r.expiry.Reset(d)
	}
	r.armed = true
}

// expire runs when expiry fires: the workers whose deadline passed are
// marked DOWN, and expiry is set again for the first deadline still to come.
func (r *Registry) expire() {
	r.mu.Lock()
	r.armed = false
	now := time.Now()
	down := false
	for e := r.live.next; e != &r.live && !now.Before(e.heard.Add(r.cfg.Timeout)); e = r.live.next {
		r.notifyLocked(r.downLocked(e))
		down = true
	}
	if down {
		r.broadcastLocked()
	}
	r.armLocked()
	r.mu.Unlock()
}

// MarkDown marks the worker DOWN, as when its connection failed.
func (r *Registry) MarkDown(id devops.WorkerID) {
	r.mu.Lock()
	e, ok := r.workers[id]
	if !ok || e.w.State == devops.WorkerDown {
		r.mu.Unlock()
		return
	}
	r.notifyLocked(r.downLocked(e))
	r.broadcastLocked()
	r.mu.Unlock()
}

// change is a worker's new record and its state before, to notify.
type change struct {
	w   devops.Worker
	old devops.WorkerState
}

// downLocked marks e DOWN and takes it out of live.
func (r *Registry) downLocked(e *entry) change {
	r.unlinkLocked(e)
	c := change{old: e.w.State}
	e.w.State = devops.WorkerDown
	c.w = e.w
	return c
}

// tellDraining keeps draining, told with drain generation gen, unless what
// is known already came with a higher one.
func (e *entry) tellDraining(draining bool, gen uint64) {
	if gen < e.drainGen {
		return
	}
	e.draining, e.drainGen = draining, gen
}

// SetDraining marks an up worker DRAINING (no new work), or UP again, as
// the worker answered a drain request with drain generation gen.
func (r *Registry) SetDraining(id devops.WorkerID, draining bool, gen uint64) (devops.Worker, error) {
	r.mu.Lock()
	e, ok := r.workers[id]
	if !ok {
		r.mu.Unlock()
		return devops.Worker{}, fmt.Errorf("worker %s: %w", id, devops.ErrNotFound)
	}
	e.tellDraining(draining, gen)
	old := e.w.State
	switch {
	case e.draining && old == devops.WorkerUp:
		e.w.State = devops.WorkerDraining
	case !e.draining && old == devops.WorkerDraining:
		e.w.State = devops.WorkerUp
	}
	w := e.w
	if old != w.State {
		r.broadcastLocked()
		r.notifyLocked(change{w: w, old: old})
	}
	r.mu.Unlock()
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
	e, err := r.findLocked(idOrName)
	if err != nil {
		return devops.Worker{}, err
	}
	return e.w, nil
}

// findLocked returns the entry of a worker by id or name; an error
// wrapping devops.ErrNotFound when there is none.
func (r *Registry) findLocked(idOrName string) (*entry, error) {
	if e, ok := r.workers[devops.WorkerID(idOrName)]; ok {
		return e, nil
	}
	if id, ok := r.byName[idOrName]; ok {
		return r.workers[id], nil
	}
	return nil, fmt.Errorf("worker %q: %w", idOrName, devops.ErrNotFound)
}

// Stop stops the heartbeat timer: no worker is marked DOWN for its
// silence after it. It returns once OnChange has been told every change
// made before it.
func (r *Registry) Stop() {
	r.mu.Lock()
	r.stopped = true
	if r.expiry != nil {
		r.expiry.Stop()
	}
	r.armed = false
	// What changed before is told before Stop returns: the listener may
	// persist it, and whoever stops the registry closes the store next.
	for r.telling {
		told := r.told
		r.mu.Unlock()
		<-told
		r.mu.Lock()
	}
	r.mu.Unlock()
}

// notifyLocked queues c for OnChange, and starts a goroutine to tell it
// unless one is telling already. The caller holds r.mu.
func (r *Registry) notifyLocked(c change) {
	if r.cfg.OnChange == nil {
		return
	}
	r.untold = append(r.untold, c)
	if !r.telling {
		r.telling, r.told = true, make(chan struct{})
		go r.tell()
	}
}

// tell tells OnChange the untold changes, oldest first, until none is left.
func (r *Registry) tell() {
	r.mu.Lock()
	for len(r.untold) > 0 {
		batch := r.untold
		r.untold = nil
		r.mu.Unlock()
		for _, c := range batch {
			r.cfg.OnChange(c.w, c.old)
		}
		r.mu.Lock()
	}
	r.telling = false
	close(r.told)
	r.mu.Unlock()
}

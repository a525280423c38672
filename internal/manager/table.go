package manager

import (
	"context"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/devops-platform/devops"
)

// table is the manager's in-memory view of every process; the store holds
// the durable copy. Each entry carries a channel that is closed whenever its
// record changes, so watchers wait without polling.
type table struct {
	mu    sync.Mutex // protects every field below and every entry's fields
	byID  map[devops.ProcessID]*entry
	byKey map[string][]devops.ProcessID // idempotency key to the processes it created
	// order holds every id of byID, sorted once unsorted is false, for
	// listings a page at a time (page). Ids are UUIDv7s made as processes
	// are created, so an id added is nearly always the greatest: the ones
	// that are not (a restart loads the store's in its order) are sorted in
	// at the next listing, once, rather than each inserted in place.
	order    []devops.ProcessID
	unsorted bool
	// byState counts the processes in each state, for /metrics: counting
	// them at each scrape held up every submission while it went over the
	// whole table, a week of processes by default.
	byState map[devops.State]int
}

type entry struct {
	p       devops.Process
	changed chan struct{} // closed and replaced on every change of p
	// kill is closed when termination is asked for before the worker could be
	// told; killSig and killGrace say how.
	kill      chan struct{}
	killSig   syscall.Signal
	killGrace time.Duration
	killAsked bool
	// slot is true while the process holds a slot on its worker in the
	// registry's count.
	slot bool
	// pinned is true when the request named the worker (by name or by
	// selector): the scheduler must not move the process elsewhere.
	pinned bool
	// out is the latest output, for live followers; set once at creation.
	out *tail
	// cancelStream ends the tracker's current call to the worker, if any.
	cancelStream context.CancelFunc
}

func newTable() *table {
	return &table{byID: make(map[devops.ProcessID]*entry), byKey: make(map[string][]devops.ProcessID), byState: make(map[devops.State]int)}
}

func (t *table) add(p devops.Process) *entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addLocked(p)
}

func (t *table) addLocked(p devops.Process) *entry {
	e := &entry{p: p, changed: make(chan struct{}), kill: make(chan struct{}), out: newTail(p.OutputBytes, p.State.Terminal())}
	if old, again := t.byID[p.ID]; again {
		t.byState[old.p.State]--
	} else {
		if n := len(t.order); n > 0 && t.order[n-1] > p.ID {
			t.unsorted = true
		}
		t.order = append(t.order, p.ID)
	}
	t.byState[p.State]++
	t.byID[p.ID] = e
	if p.IdempotencyKey != "" {
		t.byKey[p.IdempotencyKey] = append(t.byKey[p.IdempotencyKey], p.ID)
	}
	return e
}

// byIdempotencyKey returns the processes a key created, if any.
func (t *table) byIdempotencyKey(key string) []devops.ProcessID {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.byKey[key])
}

func (t *table) get(id devops.ProcessID) (*entry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byID[id]
	return e, ok
}

// snapshot returns a copy of the entry's record and the channel that closes
// on its next change.
func (t *table) snapshot(e *entry) (devops.Process, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return e.p, e.changed
}

// update applies f to the entry's record and wakes its watchers. It refuses
// (returns false) to change a record that is already terminal.
func (t *table) update(e *entry, f func(p *devops.Process)) (devops.Process, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.p.State.Terminal() {
		return e.p, false
	}
	old := e.p.State
	f(&e.p)
	if e.p.State != old {
		e.p.StateChangedAt = time.Now()
		t.byState[old]--
		t.byState[e.p.State]++
	}
	close(e.changed)
	e.changed = make(chan struct{})
	return e.p, true
}

// addOutput counts output bytes without waking watchers: the output itself
// reaches them through the store.
func (t *table) addOutput(e *entry, end int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if end > e.p.OutputBytes {
		e.p.OutputBytes = end
	}
}

// askKill records a termination request; it reports false if one was already made.
func (t *table) askKill(e *entry, sig syscall.Signal, grace time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.killAsked {
		return false
	}
	e.killAsked, e.killSig, e.killGrace = true, sig, grace
	close(e.kill)
	return true
}

func (t *table) killRequest(e *entry) (bool, syscall.Signal, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return e.killAsked, e.killSig, e.killGrace
}

// live returns the entries that have not ended.
func (t *table) live() []*entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	var es []*entry
	for _, e := range t.byID {
		if !e.p.State.Terminal() {
			es = append(es, e)
		}
	}
	return es
}

// list returns the records that pass keep, sorted by id (creation order).
func (t *table) list(keep func(devops.Process) bool) []devops.Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ps []devops.Process
	for _, e := range t.byID {
		if keep(e.p) {
			ps = append(ps, e.p)
		}
	}
	slices.SortFunc(ps, func(a, b devops.Process) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return ps
}

// page returns, in id order, up to n records that pass keep and whose id
// comes after after (from the first if after is empty); backward, in
// reverse order, those whose id comes before it (from the last). Unlike
// list, it goes over no more of the table than it needs.
func (t *table) page(after devops.ProcessID, n int, backward bool, keep func(devops.Process) bool) []devops.Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.unsorted {
		slices.Sort(t.order)
		t.unsorted = false
	}
	ids := span(t.order, string(after), func(id devops.ProcessID) string { return string(id) }, backward)
	var ps []devops.Process
	for k := range ids {
		if len(ps) == n {
			break
		}
		id := ids[k]
		if backward {
			id = ids[len(ids)-1-k]
		}
		if e, ok := t.byID[id]; ok && keep(e.p) {
			ps = append(ps, e.p)
		}
	}
	return ps
}

func (t *table) setSlot(e *entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e.slot = true
}

func (t *table) hasSlot(e *entry) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return e.slot
}

// releaseSlot clears the entry's slot; it reports whether there was one to
// give back to the registry.
func (t *table) releaseSlot(e *entry) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	had := e.slot
	e.slot = false
	return had
}

func (t *table) setStreamCancel(e *entry, cancel context.CancelFunc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e.cancelStream = cancel
}

// cancelStreamsOn ends the trackers' calls to a worker that went away, so
// that its processes turn DISCONNECTED now rather than when TCP gives up.
func (t *table) cancelStreamsOn(id devops.WorkerID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.byID {
		if e.p.WorkerID == id && !e.p.State.Terminal() && e.cancelStream != nil {
			e.cancelStream()
		}
	}
}

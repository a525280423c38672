package manager

import (
	"context"
	"slices"
	"time"

	"github.com/devops-platform/devops"
)

// Retention. Without it a manager that runs for months keeps every process
// it ever ran: in its table and its store (a record and an output index
// file each; 8,000 `true` took its resident size from 55 to 88 MiB) and in
// every ListProcesses. Processes and fleet runs that ended more than
// Config.Retention ago are forgotten: records, output and all.

// forgetter is the store's side of retention.
type forgetter interface {
	// Forget deletes the records of processes and runs and the processes'
	// output; what is not there is no error.
	Forget(ctx context.Context, processes []devops.ProcessID, runs []devops.RunID) error
}

// retentionCheck is how often the manager looks for what to forget, at most.
const retentionCheck = time.Minute

// retain forgets, until ctx ends, what ended more than cfg.Retention ago:
// once at once (a manager started on an old data dir), then every
// retentionCheck (or a quarter of the retention, when shorter).
func (m *Manager) retain(ctx context.Context) {
	if m.cfg.Retention <= 0 {
		return
	}
	t := time.NewTicker(min(retentionCheck, m.cfg.Retention/4))
	defer t.Stop()
	for {
		m.forget(ctx, time.Now().Add(-m.cfg.Retention))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// forget removes the processes and fleet runs that ended before cutoff. A
// fleet run's children go with the run, not before it: run-status shows
// them as long as it shows the run.
func (m *Manager) forget(ctx context.Context, cutoff time.Time) {
	fs, ok := m.store.(forgetter)
	if !ok {
		return
	}
	runs, inRuns, children := m.fleet.endedBefore(cutoff)
	var procs []devops.ProcessID
	for _, id := range m.procs.endedBefore(cutoff) {
		if !inRuns[id] {
			procs = append(procs, id)
		}
	}
	// A run goes once every child of it has ended long enough too.
	var goneRuns []devops.RunID
	for _, id := range runs {
		all := true
		for _, c := range children[id] {
			if e, ok := m.procs.get(c); ok {
				if p, _ := m.procs.snapshot(e); !endedBy(p, cutoff) {
					all = false
					break
				}
			}
		}
		if all {
			goneRuns = append(goneRuns, id)
			procs = append(procs, children[id]...)
		}
	}
	if len(procs) == 0 && len(goneRuns) == 0 {
		return
	}
	if err := fs.Forget(ctx, procs, goneRuns); err != nil {
		// Kept in the table: the next look tries them all again.
		m.log.Error("forget processes past retention", "processes", len(procs), "runs", len(goneRuns), "err", err)
		return
	}
	m.procs.remove(procs)
	m.fleet.remove(goneRuns)
	gone := make(map[string]bool, len(procs)+len(goneRuns))
	for _, id := range procs {
		gone[string(id)] = true
	}
	for _, id := range goneRuns {
		gone[string(id)] = true
	}
	if err := m.inputs.prune(func(id string) bool { return !gone[id] }); err != nil {
		m.log.Warn("remove inputs past retention", "err", err)
	}
	m.log.Info("forgot processes past retention", "processes", len(procs), "runs", len(goneRuns), "retention", m.cfg.Retention)
}

// endedBy reports whether p ended before cutoff.
func endedBy(p devops.Process, cutoff time.Time) bool {
	return p.State.Terminal() && p.EndedAt.Before(cutoff)
}

// endedBefore returns the processes that ended before cutoff; unlike
// list it copies no record, as it goes over the whole table every minute.
// It looks at them a slice at a time, letting go of the table's lock in
// between: held over a week of processes (152 ms at 500,000 while a test
// suite ran beside it) it held up every submission and every change of
// state.
func (t *table) endedBefore(cutoff time.Time) []devops.ProcessID {
	t.mu.Lock()
	all := slices.Clone(t.order)
	t.mu.Unlock()
	var ids []devops.ProcessID
	for part := range slices.Chunk(all, 4096) {
		t.mu.Lock()
		for _, id := range part {
			if e, ok := t.byID[id]; ok && endedBy(e.p, cutoff) {
				ids = append(ids, id)
			}
		}
		t.mu.Unlock()
	}
	return ids
}

// remove forgets the processes ids. A caller still holding an entry (a
// follower) goes on with it.
func (t *table) remove(ids []devops.ProcessID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	for _, id := range ids {
		e, ok := t.byID[id]
		if !ok {
			continue
		}
		delete(t.byID, id)
		t.byState[e.p.State]--
		if k := e.p.IdempotencyKey; k != "" {
			// In place: byIdempotencyKey hands out copies only.
			if rest := slices.DeleteFunc(t.byKey[k], func(other devops.ProcessID) bool { return other == id }); len(rest) > 0 {
				t.byKey[k] = rest
			} else {
				delete(t.byKey, k)
			}
		}
	}
	t.order = slices.DeleteFunc(t.order, func(id devops.ProcessID) bool { _, ok := t.byID[id]; return !ok })
}

// endedBefore returns the runs that ended before cutoff, with their
// children, and every child of every run (those runs' and the others').
func (f *fleet) endedBefore(cutoff time.Time) (runs []devops.RunID, inRuns map[devops.ProcessID]bool, children map[devops.RunID][]devops.ProcessID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	inRuns = make(map[devops.ProcessID]bool)
	children = make(map[devops.RunID][]devops.ProcessID)
	for id, e := range f.byID {
		var ids []devops.ProcessID
		for _, t := range e.r.Tasks {
			if t.ProcessID != "" {
				ids = append(ids, t.ProcessID)
			}
			for _, a := range t.Previous {
				ids = append(ids, a.ProcessID)
			}
		}
		for _, c := range ids {
			inRuns[c] = true
		}
		if e.r.State.Terminal() && e.r.EndedAt.Before(cutoff) {
			runs = append(runs, id)
			children[id] = ids
		}
	}
	return runs, inRuns, children
}

// remove forgets the runs ids.
func (f *fleet) remove(ids []devops.RunID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		e, ok := f.byID[id]
		if !ok {
			continue
		}
		delete(f.byID, id)
		if k := e.r.IdempotencyKey; k != "" && f.byKey[k] == id {
			delete(f.byKey, k)
		}
	}
}

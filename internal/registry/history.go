package registry

import (
	"fmt"
	"slices"

	"github.com/devops-platform/devops"
)

// HistoryLen is how many metrics samples the registry keeps per worker: five
// minutes at the default interval of 5 s.
const HistoryLen = 60

// remember appends a sample to the entry's history, dropping the oldest
// beyond HistoryLen. The caller holds the registry's lock.
func (e *entry) remember(m devops.Metrics) {
	if len(e.history) >= HistoryLen {
		// Shift rather than ring: 60 small structs, and callers get them
		// in order without arithmetic.
		e.history = append(e.history[:0], e.history[len(e.history)-HistoryLen+1:]...)
	}
	e.history = append(e.history, m)
}

// History returns the worker's latest metrics samples, oldest first, at
// most HistoryLen; an error wrapping devops.ErrNotFound when the worker is
// unknown (by id or name).
func (r *Registry) History(idOrName string) ([]devops.Metrics, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.workers[devops.WorkerID(idOrName)]
	if !ok {
		id, found := r.byName[idOrName]
		if !found {
			return nil, fmt.Errorf("worker %q: %w", idOrName, devops.ErrNotFound)
		}
		e = r.workers[id]
	}
	return slices.Clone(e.history), nil
}

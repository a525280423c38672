package executor

import (
	"maps"
	"slices"
	"time"
)

// WithoutNamespaces makes e start processes through the init but outside
// namespaces, so tests reach the cgroup-only paths on a root machine. Its
// warm shims, started with namespaces, are replaced.
func WithoutNamespaces(e *Executor) {
	size := 0
	if e.pool != nil {
		size = e.pool.size
	}
	e.pool.close()
	e.pool = nil
	e.platform.namespaces = false
	e.startPool(size)
}

// WarmShims lists the pids of e's idle warm shims and of their inits.
func WarmShims(e *Executor) (shims, inits []int) {
	if e.pool == nil {
		return nil, nil
	}
	e.pool.mu.Lock()
	defer e.pool.mu.Unlock()
	for _, ws := range e.pool.idle {
		shims = append(shims, ws.pid)
		inits = append(inits, ws.initPid)
	}
	return shims, inits
}

// NoDelayedRefill drops the refills a take asks for after refillDelay: a
// shim taken counts as coming back for ever, so only the shims that do
// come back fill the pool again.
func NoDelayedRefill(e *Executor) {
	e.pool.later = func(time.Duration, func()) {}
}

// InitsStay says whether e's warm shims keep their init from one process
// to the next (initRounds): with namespaces and cgroups.
func InitsStay(e *Executor) bool { return e.platform.initsStay() }

// CgroupBases lists the directories of e's cgroup subtree, one per
// hierarchy; Close leaves them in place (see cgroups.close).
func CgroupBases(e *Executor) []string {
	if e.platform.cgroups == nil {
		return nil
	}
	return slices.Collect(maps.Values(e.platform.cgroups.base))
}

// Poll is poll: it waits until one of fds is ready.
var Poll = poll

// PollableFD is pollableFD.
var PollableFD = pollableFD

// Package scheduler picks the workers a command runs on. It holds pure
// functions over a snapshot of workers and label selectors; it keeps no state
// and imports only the domain.
package scheduler

import (
	"fmt"
	"slices"
	"strings"

	"github.com/devops-platform/devops"
)

// Pick returns the least loaded worker that is up, matches sel and has a free
// slot. When workers match but all are full it returns an error wrapping
// devops.ErrNoCapacity; when none is usable, one wrapping devops.ErrNoMatch
// that says why.
func Pick(workers []devops.Worker, sel Selector) (devops.Worker, error) {
	up, err := Match(workers, sel)
	if err != nil {
		return devops.Worker{}, err
	}
	free := slices.DeleteFunc(up, func(w devops.Worker) bool { return w.Running >= w.Capacity })
	if len(free) == 0 {
		return devops.Worker{}, fmt.Errorf("%w: all %d matching workers are full", devops.ErrNoCapacity, len(up))
	}
	return slices.MinFunc(free, compareLoad), nil
}

// compareLoad orders workers by the share of their slots in use, then by
// their load average per CPU, then by name so that ties are stable.
func compareLoad(a, b devops.Worker) int {
	ua := float64(a.Running) / float64(max(a.Capacity, 1))
	ub := float64(b.Running) / float64(max(b.Capacity, 1))
	if ua != ub {
		if ua < ub {
			return -1
		}
		return 1
	}
	la := a.Metrics.Load1 / float64(max(a.Fingerprint.CPUs, 1))
	lb := b.Metrics.Load1 / float64(max(b.Fingerprint.CPUs, 1))
	if la != lb {
		if la < lb {
			return -1
		}
		return 1
	}
	return strings.Compare(a.Name, b.Name)
}

// Match returns the workers that are up and match sel, sorted by name. When
// there are none it returns an error wrapping devops.ErrNoMatch that names
// why: nothing matches, or the matches are down or draining.
func Match(workers []devops.Worker, sel Selector) ([]devops.Worker, error) {
	var up, unusable []devops.Worker
	for _, w := range workers {
		if !sel.Matches(w.Labels) {
			continue
		}
		if w.State == devops.WorkerUp {
			up = append(up, w)
		} else {
			unusable = append(unusable, w)
		}
	}
	if len(up) > 0 {
		slices.SortFunc(up, func(a, b devops.Worker) int { return strings.Compare(a.Name, b.Name) })
		return up, nil
	}
	return nil, fmt.Errorf("%w: %s", devops.ErrNoMatch, explain(sel, len(workers), unusable))
}

func explain(sel Selector, total int, unusable []devops.Worker) string {
	what := "no worker"
	if !sel.Empty() {
		what = fmt.Sprintf("no worker matches %s", sel)
	} else if total == 0 {
		return "no worker is registered"
	}
	switch len(unusable) {
	case 0:
		return what
	case 1:
		w := unusable[0]
		if sel.Empty() {
			return fmt.Sprintf("the only worker %s is %s", w.Name, strings.ToLower(w.State.String()))
		}
		return fmt.Sprintf("the only match %s is %s", w.Name, strings.ToLower(w.State.String()))
	}
	names := make([]string, len(unusable))
	for i, w := range unusable {
		names[i] = fmt.Sprintf("%s (%s)", w.Name, strings.ToLower(w.State.String()))
	}
	return "no matching worker is up: " + strings.Join(names, ", ")
}

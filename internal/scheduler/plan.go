package scheduler

import (
	"fmt"
	"slices"
	"strings"

	"github.com/devops-platform/devops"
)

// Unfit says why a worker cannot run spec now, or returns "" when it can:
// it is down or draining, its slots are all taken, or it cannot enforce
// what the spec asks (limits need cgroups, a user needs run-as, an image
// needs Docker).
func Unfit(w devops.Worker, spec devops.Spec) string {
	switch w.State {
	case devops.WorkerUp:
	case devops.WorkerDraining:
		return "draining"
	default:
		return strings.ToLower(w.State.String())
	}
	if w.Capacity > 0 && w.Running >= w.Capacity {
		return fmt.Sprintf("full (%d/%d running)", w.Running, w.Capacity)
	}
	var missing []string
	l := spec.Limits
	if (l.MemoryBytes > 0 || l.CPUs > 0 || l.Pids > 0) && w.Fingerprint.Cgroups == "" {
		missing = append(missing, "cgroups (for --memory, --cpus, --pids)")
	}
	if spec.User != "" && !w.Fingerprint.RunAs {
		missing = append(missing, "run-as (for --user)")
	}
	if spec.Image != "" && !w.Fingerprint.Docker {
		missing = append(missing, "docker (for an image)")
	}
	if len(missing) > 0 {
		return "cannot enforce: no " + strings.Join(missing, ", no ")
	}
	return ""
}

// Plan splits workers into those that run spec and those that cannot, with
// why, both sorted by name. With names set, exactly those workers are
// targeted (each a name or an id; an unknown one is ErrNotFound); else every
// worker matching sel.
func Plan(workers []devops.Worker, sel Selector, names []string, spec devops.Spec) (fit []devops.Worker, unfit []devops.Exclusion, err error) {
	var targeted []devops.Worker
	if len(names) > 0 {
		seen := map[devops.WorkerID]bool{}
		for _, n := range names {
			i := slices.IndexFunc(workers, func(w devops.Worker) bool { return w.Name == n || string(w.ID) == n })
			if i < 0 {
				return nil, nil, fmt.Errorf("unknown worker %q: %w", n, devops.ErrNotFound)
			}
			if !seen[workers[i].ID] {
				seen[workers[i].ID] = true
				targeted = append(targeted, workers[i])
			}
		}
	} else {
		for _, w := range workers {
			if sel.Matches(w.Labels) {
				targeted = append(targeted, w)
			}
		}
	}
	slices.SortFunc(targeted, func(a, b devops.Worker) int { return strings.Compare(a.Name, b.Name) })
	for _, w := range targeted {
		if why := Unfit(w, spec); why != "" {
			unfit = append(unfit, devops.Exclusion{WorkerID: w.ID, WorkerName: w.Name, Reason: why})
			continue
		}
		fit = append(fit, w)
	}
	return fit, unfit, nil
}

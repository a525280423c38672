package manager

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/scheduler"
)

// A fleet run is one command on many workers, rolled out by a controller
// goroutine (drive) that starts one child process per targeted worker
// through the ordinary process machinery (Submit's tracker). The run record
// holds the targets as resolved at start and, per target, the id of its
// child once it started; the children's states live in the process table,
// so the controller derives everything else (window, budget, canary) from
// them each time a child ends, and picks up where it was after a manager
// restart.

// runStore is the optional part of the store that keeps fleet runs
// (store.JetStream has it). Without it runs live in memory only.
type runStore interface {
	PutRun(ctx context.Context, r devops.Run) error
	Runs(ctx context.Context) ([]devops.Run, error)
}

// fleet is the manager's table of fleet runs.
type fleet struct {
	mu    sync.Mutex // protects byID, byKey and every runEntry's fields
	byID  map[devops.RunID]*runEntry
	byKey map[string]devops.RunID // idempotency key to the run it started
}

type runEntry struct {
	r       devops.Run
	changed chan struct{} // closed and replaced on every change of r
	// wake (buffered, one slot) tells the controller to look again: a child
	// ended, the run was resumed or cancelled.
	wake chan struct{}
	// killSig and killGrace say how running children are terminated once
	// the run is cancelled or its budget ran out with --stop-on-error=kill.
	killSig   syscall.Signal
	killGrace time.Duration
	killed    bool // the running children were told to end
}

func newFleet() *fleet {
	return &fleet{byID: make(map[devops.RunID]*runEntry), byKey: make(map[string]devops.RunID)}
}

func (f *fleet) addLocked(r devops.Run) *runEntry {
	e := &runEntry{r: r, changed: make(chan struct{}), wake: make(chan struct{}, 1)}
	f.byID[r.ID] = e
	if r.IdempotencyKey != "" {
		f.byKey[r.IdempotencyKey] = r.ID
	}
	return e
}

func (f *fleet) get(id devops.RunID) (*runEntry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.byID[id]
	return e, ok
}

// snapshot returns a copy of the run record and the channel that closes on
// its next change.
func (f *fleet) snapshot(e *runEntry) (devops.Run, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return cloneRun(e.r), e.changed
}

// update applies fn to the run record and wakes its watchers; it leaves a
// terminal run alone and then reports false.
func (f *fleet) update(e *runEntry, fn func(r *devops.Run)) (devops.Run, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.r.State.Terminal() {
		return cloneRun(e.r), false
	}
	fn(&e.r)
	close(e.changed)
	e.changed = make(chan struct{})
	return cloneRun(e.r), true
}

func (e *runEntry) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func cloneRun(r devops.Run) devops.Run {
	r.Tasks = slices.Clone(r.Tasks)
	r.Excluded = slices.Clone(r.Excluded)
	r.Target.Workers = slices.Clone(r.Target.Workers)
	return r
}

// RunSubmission is one request to start a fleet run.
type RunSubmission struct {
	Spec            devops.Spec
	Target          devops.RunTarget
	Options         devops.RunOptions
	QueueTimeout    time.Duration
	DisconnectGrace time.Duration
	IdempotencyKey  string
}

func (s RunSubmission) validate() error {
	if err := s.Spec.Validate(); err != nil {
		return err
	}
	if err := s.Options.Validate(); err != nil {
		return err
	}
	if s.QueueTimeout < 0 || s.DisconnectGrace < 0 {
		return fmt.Errorf("%w: negative timeout", devops.ErrInvalid)
	}
	t := s.Target
	if t.Empty() {
		return fmt.Errorf("%w: a fleet run needs workers, a selector or all", devops.ErrInvalid)
	}
	if len(t.Workers) > 0 && (t.Selector != "" || t.All) {
		return fmt.Errorf("%w: a worker list cannot be combined with a selector or all", devops.ErrInvalid)
	}
	return nil
}

// PlanRun resolves a submission's target without starting anything: the
// returned run (with no ID) lists the workers that would run it, in start
// order, and those matched that cannot, with why. Errors: ErrInvalid for a
// bad spec, option or selector, ErrNotFound for an unknown worker name.
func (m *Manager) PlanRun(s RunSubmission) (devops.Run, error) {
	if err := s.validate(); err != nil {
		return devops.Run{}, err
	}
	sel, err := scheduler.ParseSelector(s.Target.Selector)
	if err != nil {
		return devops.Run{}, err
	}
	fit, unfit, err := scheduler.Plan(m.registry.Snapshot(), sel, s.Target.Workers, s.Spec)
	if err != nil {
		return devops.Run{}, err
	}
	fit, unfit = exclude(fit, unfit, s.Target.Exclude)
	r := devops.Run{
		Spec:            s.Spec,
		Target:          s.Target,
		Options:         s.Options,
		Excluded:        unfit,
		QueueTimeout:    s.QueueTimeout,
		DisconnectGrace: s.DisconnectGrace,
		IdempotencyKey:  s.IdempotencyKey,
	}
	for i, w := range fit {
		r.Tasks = append(r.Tasks, devops.RunTask{WorkerID: w.ID, WorkerName: w.Name, Canary: i < s.Options.Canary})
	}
	r.Summary = summarize(r)
	return r, nil
}

// excludedReason is why a worker a run left out with --exclude is not in it.
const excludedReason = "excluded (--exclude)"

// exclude moves the workers named, or given by id, in names from fit to
// unfit. A name that is no worker is ignored, as pdsh -x ignores it.
func exclude(fit []devops.Worker, unfit []devops.Exclusion, names []string) ([]devops.Worker, []devops.Exclusion) {
	if len(names) == 0 {
		return fit, unfit
	}
	kept := fit[:0:0]
	for _, w := range fit {
		if slices.Contains(names, w.Name) || slices.Contains(names, string(w.ID)) {
			unfit = append(unfit, devops.Exclusion{WorkerID: w.ID, WorkerName: w.Name, Reason: excludedReason})
			continue
		}
		kept = append(kept, w)
	}
	return kept, unfit
}

// emptyPlanError explains why a plan has no target: ErrNoMatch.
func emptyPlanError(r devops.Run) error {
	if len(r.Excluded) == 0 {
		if r.Target.Selector != "" {
			return fmt.Errorf("%w: no worker matches %s", devops.ErrNoMatch, r.Target.Selector)
		}
		return fmt.Errorf("%w: no worker is registered", devops.ErrNoMatch)
	}
	why := make([]string, len(r.Excluded))
	for i, x := range r.Excluded {
		why[i] = fmt.Sprintf("%s is %s", x.WorkerName, x.Reason)
	}
	if len(why) == 1 {
		return fmt.Errorf("%w: worker %s", devops.ErrNoMatch, why[0])
	}
	return fmt.Errorf("%w: no targeted worker can run it: %s", devops.ErrNoMatch, strings.Join(why, "; "))
}

// StartRun resolves the target and starts a fleet run. A retried submission
// with the same idempotency key returns the run the first one started. It
// fails at once with ErrNoMatch when no worker can run it, besides the
// errors of PlanRun.
func (m *Manager) StartRun(ctx context.Context, s RunSubmission) (devops.Run, error) {
	if s.IdempotencyKey != "" {
		m.fleet.mu.Lock()
		id, ok := m.fleet.byKey[s.IdempotencyKey]
		m.fleet.mu.Unlock()
		if ok {
			return m.FleetRun(id)
		}
	}
	r, err := m.PlanRun(s)
	if err != nil {
		return devops.Run{}, err
	}
	if len(r.Tasks) == 0 {
		return devops.Run{}, emptyPlanError(r)
	}
	r.ID = devops.RunID(devops.RunIDPrefix + newID())
	r.State = devops.RunRunning
	r.CreatedAt = time.Now()
	input, upload := r.Spec.Stdin, r.Spec.StdinUpload
	r.Spec.Stdin, r.Spec.StdinUpload, r.Spec.StdinBytes = nil, "", int64(len(input))
	// Each child's input is a link to the run's (startChild).
	switch {
	case upload != "":
		if r.Spec.StdinBytes, err = m.inputs.uploaded(upload); err != nil {
			return devops.Run{}, err
		}
		if err := m.inputs.linkUpload(upload, string(r.ID)); err != nil {
			return devops.Run{}, err
		}
	case len(input) > 0:
		if err := m.inputs.put(string(r.ID), input); err != nil {
			return devops.Run{}, err
		}
	}
	m.fleet.mu.Lock()
	if id, ok := m.fleet.byKey[s.IdempotencyKey]; ok && s.IdempotencyKey != "" {
		m.fleet.mu.Unlock()
		m.inputs.drop(string(r.ID)) // the same request's run has its own
		return m.FleetRun(id)
	}
	e := m.fleet.addLocked(r)
	m.fleet.mu.Unlock()
	m.persistRun(ctx, e)
	m.log.Info("fleet run started", "run_id", r.ID, "targets", len(r.Tasks), "excluded", len(r.Excluded))
	m.startDriving(e)
	return m.FleetRun(r.ID)
}

// FleetRun returns a fleet run with its children's current states and its
// summary; devops.ErrNotFound when unknown.
func (m *Manager) FleetRun(id devops.RunID) (devops.Run, error) {
	e, ok := m.fleet.get(id)
	if !ok {
		return devops.Run{}, fmt.Errorf("run %q: %w", id, devops.ErrNotFound)
	}
	r, _ := m.fleet.snapshot(e)
	return m.fillRun(r), nil
}

// fillRun copies the children's states into the run's tasks and counts
// them. The record of an ended run already holds its final states.
func (m *Manager) fillRun(r devops.Run) devops.Run {
	for i, t := range r.Tasks {
		if t.ProcessID == "" {
			continue
		}
		if e, ok := m.procs.get(t.ProcessID); ok {
			p, _ := m.procs.snapshot(e)
			r.Tasks[i].State = p.State
			if p.State.Terminal() {
				r.Tasks[i].ExitCode = p.ExitCode()
			}
		}
	}
	r.Summary = summarize(r)
	return r
}

// summarize counts a run's tasks by where they stand, from their latest
// attempts; a task about to run again counts as running, not failed.
func summarize(r devops.Run) devops.RunSummary {
	s := devops.RunSummary{Total: len(r.Tasks)}
	for _, t := range r.Tasks {
		switch {
		case t.Skipped:
			s.Skipped++
		case t.ProcessID == "", t.State == devops.StatePending, t.State == devops.StateUnknown:
			s.Pending++
		case t.State == devops.StateSucceeded:
			s.Succeeded++
		case r.Retrying(t):
			s.Running++
		case t.State.Terminal():
			s.Failed++
		default:
			s.Running++
		}
	}
	return s
}

// ResumeRun continues a run paused after its canary. A run that is not
// paused is left as it is; an ended one is devops.ErrTerminal.
func (m *Manager) ResumeRun(ctx context.Context, id devops.RunID) (devops.Run, error) {
	e, ok := m.fleet.get(id)
	if !ok {
		return devops.Run{}, fmt.Errorf("run %q: %w", id, devops.ErrNotFound)
	}
	if _, changed := m.fleet.update(e, func(r *devops.Run) { r.Resumed = true }); !changed {
		return m.FleetRun(id)
	}
	m.persistRun(ctx, e)
	e.poke()
	return m.FleetRun(id)
}

// CancelRun stops a fleet run as a whole: nothing new starts and its running
// children get sig (0: SIGTERM), then SIGKILL after grace (0: the spec's).
// The run ends CANCELLED once they have ended. An ended run is
// devops.ErrTerminal.
func (m *Manager) CancelRun(ctx context.Context, id devops.RunID, sig syscall.Signal, grace time.Duration) (devops.Run, error) {
	e, ok := m.fleet.get(id)
	if !ok {
		return devops.Run{}, fmt.Errorf("run %q: %w", id, devops.ErrNotFound)
	}
	if sig < 0 || sig > 64 || grace < 0 {
		return devops.Run{}, fmt.Errorf("%w: bad signal %d or grace %v", devops.ErrInvalid, sig, grace)
	}
	r, changed := m.fleet.update(e, func(r *devops.Run) {
		if !r.Cancelled {
			r.Cancelled = true
			r.Reason = "cancelled"
		}
	})
	if !changed {
		return m.fillRun(r), fmt.Errorf("cancel %s: run %w (%s)", id, devops.ErrTerminal, r.State)
	}
	m.persistRun(ctx, e)
	m.killChildren(ctx, e, sig, grace)
	e.poke()
	return m.FleetRun(id)
}

// killChildren terminates every started child of the run that has not ended.
func (m *Manager) killChildren(ctx context.Context, e *runEntry, sig syscall.Signal, grace time.Duration) {
	m.fleet.mu.Lock()
	e.killed = true
	r := cloneRun(e.r)
	m.fleet.mu.Unlock()
	if grace == 0 {
		grace = r.Spec.Grace
	}
	for _, t := range r.Tasks {
		if t.ProcessID == "" {
			continue
		}
		if _, err := m.Terminate(ctx, t.ProcessID, sig, grace); err != nil {
			m.log.Debug("terminate child of a run", "run_id", r.ID, "process_id", t.ProcessID, "err", err)
		}
	}
}

// persistRun writes the run's record, with its children's current states,
// to the store.
func (m *Manager) persistRun(ctx context.Context, e *runEntry) {
	rs, ok := m.store.(runStore)
	if !ok {
		return
	}
	r, _ := m.fleet.snapshot(e)
	if err := rs.PutRun(context.WithoutCancel(ctx), m.fillRun(r)); err != nil {
		m.log.Error("persist run", "run_id", r.ID, "err", err)
	}
}

// loadRuns restores the fleet runs from the store; call it after the
// processes were loaded. Run starts a controller for each that has not ended.
func (m *Manager) loadRuns(ctx context.Context) error {
	rs, ok := m.store.(runStore)
	if !ok {
		return nil
	}
	runs, err := rs.Runs(ctx)
	if err != nil {
		return fmt.Errorf("load runs: %w", err)
	}
	m.fleet.mu.Lock()
	defer m.fleet.mu.Unlock()
	for _, r := range runs {
		m.fleet.addLocked(r)
	}
	return nil
}

// driveAll starts a controller for every run that has not ended.
func (m *Manager) driveAll() {
	m.fleet.mu.Lock()
	var es []*runEntry
	for _, e := range m.fleet.byID {
		if !e.r.State.Terminal() {
			es = append(es, e)
		}
	}
	m.fleet.mu.Unlock()
	for _, e := range es {
		m.startDriving(e)
	}
}

// startDriving starts the run's controller; the manager owns it and waits
// for it at shutdown.
func (m *Manager) startDriving(e *runEntry) {
	m.fleet.mu.Lock()
	id := e.r.ID
	m.fleet.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.drive(m.runCtx, e)
		if r, err := m.FleetRun(id); err == nil && r.State.Terminal() && r.Spec.StdinBytes > 0 {
			m.inputs.release(string(r.ID)) // no child starts again
		}
	}()
}

// decision is what the controller does next, given where a run stands.
type decision struct {
	start  []int  // tasks to start now, by index
	retry  []int  // tasks whose child failed by itself, to run again now, by index
	stop   string // non-empty: start nothing more and skip the rest, for this reason
	kill   bool   // terminate the running children
	pause  bool   // wait for a resume
	end    bool   // every child has ended: the run ends
	state  devops.RunState
	reason string
}

// decide is the rollout policy, a pure function of a run whose tasks carry
// their children's states (see fillRun):
//
//   - a child that failed by itself (FAILED or TIMED_OUT) while its task has
//     attempts left (--retries) is not a failure yet: it is run again, on
//     the same worker, unless the run stops (below), and counts meanwhile
//     as running. Only a task's final failure counts against the budget
//     and the canary;
//   - the run is cancelled: start nothing, kill what runs;
//   - a canary child failed: start nothing more (kill what runs with
//     --stop-on-error=kill);
//   - more children failed than the error budget allows: likewise. The budget
//     is checked before every start, so what can still fail after it ran
//     out is only what was already running;
//   - the canary succeeded and the run pauses after it: wait for a resume;
//   - else start the next children, in order, while fewer than the window
//     are running (the canary's own window is the canary size).
//
// The run ends when nothing runs and nothing more will start.
func decide(r devops.Run) decision {
	var d decision
	total := len(r.Tasks)
	running, failed := 0, 0
	var next []int
	canary := min(r.Options.Canary, total)
	canaryDone, canaryFailed := true, ""
	var again []int
	for i, t := range r.Tasks {
		started := t.ProcessID != ""
		ended := started && t.State.Terminal()
		retry := ended && devops.RetryableState(t.State) && len(t.Previous) < r.Options.Retries
		switch {
		case t.Skipped:
		case !started:
			next = append(next, i)
		case !ended:
			running++
		case retry:
			again = append(again, i)
		case t.State != devops.StateSucceeded:
			failed++
		}
		if i < canary {
			if !ended || retry {
				canaryDone = false
			} else if t.State != devops.StateSucceeded && canaryFailed == "" {
				canaryFailed = t.WorkerName
			}
		}
	}
	budget, limited := r.Options.MaxErrors.Of(total)
	switch {
	case r.Cancelled:
		d.stop, d.kill, d.state = "run cancelled", true, devops.RunCancelled
	case canaryFailed != "":
		d.stop = fmt.Sprintf("canary failed on %s", canaryFailed)
		d.kill, d.state = r.Options.StopOnError == devops.StopKill, devops.RunFailed
	case limited && failed > budget:
		d.stop = fmt.Sprintf("error budget exceeded: %d failed, max-errors %s", failed, r.Options.MaxErrors)
		d.kill, d.state = r.Options.StopOnError == devops.StopKill, devops.RunFailed
	}
	if d.stop != "" {
		// What would have run again is a failure now.
		d.reason = d.stop
		d.end = running == 0
		return d
	}
	// A child run again takes the place its last attempt had in the window.
	d.retry = again
	running += len(again)
	if len(next) == 0 {
		if running == 0 {
			d.end, d.state = true, devops.RunSucceeded
			if failed > 0 {
				d.state, d.reason = devops.RunFailed, fmt.Sprintf("%d of %d failed", failed, total)
			}
		}
		return d
	}
	window, ok := r.Options.MaxConcurrency.Of(total)
	if !ok {
		window = total
	}
	window = max(window, 1)
	if canary > 0 {
		if !canaryDone {
			window = min(window, canary)
			next = slices.DeleteFunc(next, func(i int) bool { return i >= canary })
		} else if r.Options.PauseAfterCanary && !r.Resumed {
			d.pause = true
			return d
		}
	}
	for _, i := range next {
		if running+len(d.start) >= window {
			break
		}
		d.start = append(d.start, i)
	}
	return d
}

// drive rolls the run out: it starts children as decide says, waits for one
// to end (or a resume, or a cancel) and looks again, until the run ends or
// the manager stops.
func (m *Manager) drive(ctx context.Context, e *runEntry) {
	r, _ := m.fleet.snapshot(e)
	log := m.log.With("run_id", r.ID)
	// Children started before a restart: watch them again, and create those
	// whose record was not written before the manager stopped.
	for _, t := range r.Tasks {
		if t.ProcessID != "" {
			m.startChild(ctx, e, r, t)
		}
	}
	for {
		r, _ := m.fleet.snapshot(e)
		r = m.fillRun(r)
		d := decide(r)
		if d.kill {
			m.fleet.mu.Lock()
			killed := e.killed
			sig, grace := e.killSig, e.killGrace
			m.fleet.mu.Unlock()
			if !killed {
				if sig == 0 {
					sig = syscall.SIGTERM
				}
				log.Info("terminating the running children", "reason", d.reason)
				m.killChildren(ctx, e, sig, grace)
			}
		}
		if d.stop != "" || d.end || d.pause || len(d.start) > 0 || len(d.retry) > 0 || r.State == devops.RunPaused {
			var started, retried []devops.RunTask
			_, changed := m.fleet.update(e, func(x *devops.Run) {
				if d.stop != "" {
					for i := range x.Tasks {
						if x.Tasks[i].ProcessID == "" && !x.Tasks[i].Skipped {
							x.Tasks[i].Skipped, x.Tasks[i].Reason = true, d.stop
						}
					}
					if x.Reason == "" {
						x.Reason = d.reason // the first reason to stop is the one that counts
					}
				}
				for _, i := range d.retry {
					t := r.Tasks[i] // as decide saw it, with its child's final state
					if x.Cancelled {
						break // cancelled since decide looked
					}
					if x.Tasks[i].ProcessID != t.ProcessID {
						continue // already run again
					}
					x.Tasks[i].Previous = append(x.Tasks[i].Previous, devops.RunAttempt{ProcessID: t.ProcessID, State: t.State, ExitCode: t.ExitCode})
					x.Tasks[i].ProcessID = devops.ProcessID(newID())
					x.Tasks[i].State, x.Tasks[i].ExitCode = devops.StateUnknown, 0
					started = append(started, x.Tasks[i])
					retried = append(retried, t)
				}
				for _, i := range d.start {
					if x.Cancelled {
						break // cancelled since decide looked
					}
					x.Tasks[i].ProcessID = devops.ProcessID(newID())
					started = append(started, x.Tasks[i])
				}
				switch {
				case d.end:
					x.State, x.EndedAt = d.state, time.Now()
					if x.Reason == "" {
						x.Reason = d.reason
					}
					x.Tasks = m.fillRun(*x).Tasks
					x.Summary = summarize(*x)
				case d.pause:
					x.State = devops.RunPaused
					x.Reason = "paused after the canary; resume with devops run-resume " + string(x.ID)
				default:
					if x.State == devops.RunPaused {
						x.State, x.Reason = devops.RunRunning, ""
					}
				}
			})
			if changed {
				for _, t := range retried {
					log.Info("running a failed child again", "worker", t.WorkerName, "process_id", t.ProcessID,
						"state", t.State, "exit_code", t.ExitCode, "attempt", t.Attempt()+1, "attempts", r.Options.Retries+1)
				}
				// The run's record names each child before the child exists,
				// so a restart in between creates it rather than losing it;
				// a retry is recorded the same way, so a restart neither
				// loses nor repeats an attempt.
				m.persistRun(ctx, e)
				for _, t := range started {
					m.startChild(ctx, e, r, t)
				}
				if len(started) > 0 {
					// Wake the run's watchers again: the children they saw
					// named now exist.
					m.fleet.update(e, func(*devops.Run) {})
				}
			}
			if d.end {
				final, _ := m.fleet.snapshot(e)
				log.Info("fleet run ended", "state", final.State, "reason", final.Reason,
					"succeeded", final.Summary.Succeeded, "failed", final.Summary.Failed, "skipped", final.Summary.Skipped)
				return
			}
			if len(started) > 0 {
				continue // the window may have room for more
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		}
	}
}

// startChild creates the child process of a task unless it exists, and
// pokes the run's controller when it ends.
func (m *Manager) startChild(ctx context.Context, e *runEntry, r devops.Run, t devops.RunTask) {
	pe, ok := m.procs.get(t.ProcessID)
	if !ok {
		now := time.Now()
		pe = m.procs.add(devops.Process{
			ID:              t.ProcessID,
			WorkerID:        t.WorkerID,
			WorkerName:      t.WorkerName,
			Spec:            r.Spec,
			State:           devops.StatePending,
			CreatedAt:       now,
			StateChangedAt:  now,
			QueueTimeout:    r.QueueTimeout,
			DisconnectGrace: r.DisconnectGrace,
		})
		if r.Spec.StdinBytes > 0 {
			// Without it the child fails as it is sent (errNoInput).
			if err := m.inputs.link(string(r.ID), string(t.ProcessID)); err != nil {
				m.log.Error("give a fleet run's input to its child", "run_id", r.ID, "process_id", t.ProcessID, "err", err)
			}
		}
		m.persist(ctx, pe)
		m.fleet.mu.Lock()
		killed, sig, grace := e.killed, e.killSig, e.killGrace
		m.fleet.mu.Unlock()
		if killed {
			// The run was stopped while this child was being created.
			m.procs.askKill(pe, cmp.Or(sig, syscall.SIGTERM), grace)
		}
		m.startTracking(pe)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			p, changed := m.procs.snapshot(pe)
			if p.State.Terminal() {
				e.poke()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()
}

// RunEvent is one thing a run watcher sees: the run's record (on a change
// of the run; the last one is its final record), a child's record, or a
// chunk of a child's output.
type RunEvent struct {
	Run     *devops.Run
	Process *devops.Process
	ID      devops.ProcessID
	Chunk   *devops.Chunk
}

// WatchRun streams a run's record, its children's state changes and, with
// output, their output (each child from offsets[id]), until the run has
// ended and every child's output was sent; the last event is the run's
// final record. With follow false it sends what there is now. send is never
// called concurrently.
func (m *Manager) WatchRun(ctx context.Context, id devops.RunID, follow, output bool, offsets map[devops.ProcessID]int64, send func(RunEvent) error) error {
	e, ok := m.fleet.get(id)
	if !ok {
		return fmt.Errorf("run %q: %w", id, devops.ErrNotFound)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex // serialises send
	locked := func(ev RunEvent) error {
		mu.Lock()
		defer mu.Unlock()
		return send(ev)
	}
	sendRun := func() (devops.Run, <-chan struct{}, error) {
		r, changed := m.fleet.snapshot(e)
		r = m.fillRun(r)
		return r, changed, locked(RunEvent{Run: &r})
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	defer func() { cancel(); wg.Wait() }()
	watching := map[devops.ProcessID]bool{}
	watch := func(pid devops.ProcessID) {
		watching[pid] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := m.watchChild(ctx, pid, offsets[pid], follow, output, func(ev Event) error {
				return locked(RunEvent{Process: ev.Process, ID: ev.ID, Chunk: ev.Chunk})
			})
			if err != nil {
				select {
				case errc <- err:
				default:
				}
				cancel()
			}
		}()
	}
	for {
		r, changed, err := sendRun()
		if err != nil {
			return err
		}
		for _, t := range r.Tasks {
			// Every attempt of a task, the earlier ones first.
			for _, pid := range append(attemptIDs(t.Previous), t.ProcessID) {
				if pid == "" || watching[pid] {
					continue
				}
				if _, ok := m.procs.get(pid); ok {
					watch(pid)
				} // else it is being created: the run changes again once it is
			}
		}
		if !follow || r.State.Terminal() {
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case err := <-errc:
				return err
			}
			select {
			case err := <-errc:
				return err
			default:
			}
			_, _, err := sendRun()
			return err
		}
		select {
		case <-ctx.Done():
			select {
			case err := <-errc:
				return err
			default:
			}
			return ctx.Err()
		case err := <-errc:
			return err
		case <-changed:
		}
	}
}

func attemptIDs(as []devops.RunAttempt) []devops.ProcessID {
	ids := make([]devops.ProcessID, len(as))
	for i, a := range as {
		ids[i] = a.ProcessID
	}
	return ids
}

// watchChild follows one child of a run: its output from offset from (only
// with output) and its state changes, ending with its final record.
func (m *Manager) watchChild(ctx context.Context, id devops.ProcessID, from int64, follow, output bool, send func(Event) error) error {
	if output {
		return m.Watch(ctx, []devops.ProcessID{id}, from, follow, true, send)
	}
	e, ok := m.procs.get(id)
	if !ok {
		return fmt.Errorf("process %q: %w", id, devops.ErrNotFound)
	}
	var last devops.State
	for {
		p, changed := m.procs.snapshot(e)
		if p.State != last {
			last = p.State
			if err := send(Event{ID: id, Process: &p}); err != nil {
				return err
			}
		}
		if p.State.Terminal() || !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

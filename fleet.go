package devops

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// RunID names one fleet run. The manager assigns it: RunIDPrefix and a
// UUIDv7, so run ids sort by creation time and never look like a process id.
type RunID string

// RunIDPrefix starts every RunID.
const RunIDPrefix = "run-"

// IsRunID reports whether id names a fleet run rather than a process.
func IsRunID(id string) bool { return strings.HasPrefix(id, RunIDPrefix) }

// RunState is where a fleet run is in its life.
//
//	RUNNING ──(canary done, --pause-after-canary)──► PAUSED ──(resume)──► RUNNING
//	   │                                                │
//	   └──► SUCCEEDED | FAILED | CANCELLED ◄────────────┘ (kill)
//
// A run ends once every child it started has ended: SUCCEEDED when every
// target succeeded, FAILED otherwise (a child failed, the canary failed or
// the error budget ran out; Reason says which), CANCELLED when it was killed.
type RunState int

// The run states; their numbers match the API's RunState.
const (
	RunUnknown RunState = iota
	RunRunning
	RunPaused
	RunSucceeded
	RunFailed
	RunCancelled
)

var runStateNames = [...]string{"UNKNOWN", "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED"}

func (s RunState) String() string {
	if s < 0 || int(s) >= len(runStateNames) {
		return fmt.Sprintf("RunState(%d)", int(s))
	}
	return runStateNames[s]
}

// Terminal reports whether a run in this state has ended for good.
func (s RunState) Terminal() bool {
	return s == RunSucceeded || s == RunFailed || s == RunCancelled
}

// Limit is a count given either absolutely or as a share of the targets:
// "3" or "25%". The zero Limit is not set: no limit.
type Limit struct {
	Set     bool
	N       int  // the count, or the percentage when Percent
	Percent bool // N is a percentage of the targets
}

// ParseLimit reads "N" or "P%"; the empty string is no limit. Anything else
// is ErrInvalid.
func ParseLimit(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Limit{}, nil
	}
	l := Limit{Set: true}
	if strings.HasSuffix(s, "%") {
		l.Percent = true
		s = strings.TrimSuffix(s, "%")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || l.Percent && n > 100 {
		return Limit{}, fmt.Errorf("%w: limit %q: want a count N or a percentage P%%", ErrInvalid, s)
	}
	l.N = n
	return l, nil
}

func (l Limit) String() string {
	switch {
	case !l.Set:
		return "none"
	case l.Percent:
		return fmt.Sprintf("%d%%", l.N)
	}
	return strconv.Itoa(l.N)
}

// Of returns the count the limit allows out of total targets, and false
// when there is no limit. A percentage rounds down, so "10%" of 6 is 0.
func (l Limit) Of(total int) (int, bool) {
	if !l.Set {
		return 0, false
	}
	if l.Percent {
		return total * l.N / 100, true
	}
	return l.N, true
}

// StopOnError says what happens to the children still running when a fleet
// run's error budget is exceeded.
type StopOnError int

const (
	// StopWait lets them finish; nothing new starts.
	StopWait StopOnError = iota
	// StopKill terminates them with the spec's grace period.
	StopKill
)

func (s StopOnError) String() string {
	if s == StopKill {
		return "kill"
	}
	return "wait"
}

// ParseStopOnError reads "wait" or "kill"; anything else is ErrInvalid.
func ParseStopOnError(s string) (StopOnError, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "wait":
		return StopWait, nil
	case "kill":
		return StopKill, nil
	}
	return StopWait, fmt.Errorf("%w: stop-on-error %q: want wait or kill", ErrInvalid, s)
}

// RunOptions control how a fleet run rolls out.
type RunOptions struct {
	// MaxConcurrency is how many children run at once, a sliding window;
	// not set: all of them. A resolved 0 counts as 1.
	MaxConcurrency Limit
	// MaxErrors is the error budget: once more children than this failed, no
	// new child starts. Not set: no budget.
	MaxErrors   Limit
	StopOnError StopOnError
	// Canary children run first; the others start only if all of them succeed.
	Canary int
	// PauseAfterCanary waits for a resume once the canary succeeded.
	PauseAfterCanary bool
	// Retries is how many more times a child that failed by itself (see
	// RetryableState) is run again, each time as a new process on the same
	// worker, before its failure counts. 0: never.
	Retries int
}

// MaxRetries bounds RunOptions.Retries: every attempt stays in the run's
// record, which the store keeps as one value.
const MaxRetries = 100

// Validate reports ErrInvalid for options no run can follow.
func (o RunOptions) Validate() error {
	if o.Canary < 0 {
		return fmt.Errorf("%w: negative canary count", ErrInvalid)
	}
	if o.PauseAfterCanary && o.Canary == 0 {
		return fmt.Errorf("%w: pause after canary needs a canary", ErrInvalid)
	}
	if o.Retries < 0 || o.Retries > MaxRetries {
		return fmt.Errorf("%w: retries %d: want 0 to %d", ErrInvalid, o.Retries, MaxRetries)
	}
	return nil
}

// RetryableState reports whether a process that ended in state s failed by
// itself, the only end --retries runs again after: FAILED or TIMED_OUT.
// Never TERMINATED (killed on request, or its run was cancelled) nor LOST
// (it may still be running where nobody can see it: running it again could
// run it twice).
func RetryableState(s State) bool {
	return s == StateFailed || s == StateTimedOut
}

// RunTarget says which workers a fleet run targets: the named workers, the
// workers whose labels match Selector, or all of them.
type RunTarget struct {
	Workers  []string // names or ids
	Selector string
	All      bool
	Exclude  []string // names or ids left out of the others, as `pdsh -x`
}

// Empty reports whether the target names no worker at all.
func (t RunTarget) Empty() bool { return len(t.Workers) == 0 && t.Selector == "" && !t.All }

func (t RunTarget) String() string {
	except := ""
	if len(t.Exclude) > 0 {
		except = " except " + strings.Join(t.Exclude, ",")
	}
	switch {
	case len(t.Workers) > 0:
		return "workers " + strings.Join(t.Workers, ",") + except
	case t.Selector != "":
		return "selector " + t.Selector + except
	}
	return "all" + except
}

// RunTask is one targeted worker of a fleet run and the child process that
// runs there once it started. With RunOptions.Retries a task may run its
// command more than once, each attempt a new child process on the same
// worker: ProcessID is the latest attempt, Previous the earlier ones.
type RunTask struct {
	WorkerID   WorkerID
	WorkerName string
	ProcessID  ProcessID // empty until the child started
	// Previous are the task's earlier attempts, oldest first: children that
	// failed by themselves and were run again.
	Previous []RunAttempt
	Canary   bool
	// Skipped is true when the run ended before this child could start;
	// Reason says why.
	Skipped bool
	Reason  string
	// State and ExitCode are those of the child process when the manager
	// answered (StateUnknown when it has not started).
	State    State
	ExitCode int
}

// Attempt is the number of the task's latest attempt, from 1.
func (t RunTask) Attempt() int { return len(t.Previous) + 1 }

// RunAttempt is an earlier attempt of a run's task: a child that ended and
// was run again. Its record stays in the process table under ProcessID.
type RunAttempt struct {
	ProcessID ProcessID
	State     State
	ExitCode  int
}

// Exclusion is a worker a fleet run's target matched but that cannot run it.
type Exclusion struct {
	WorkerID   WorkerID
	WorkerName string
	Reason     string // "down", "draining", "full (8/8 running)", "no cgroups (--memory, --cpus, --pids)"...
}

// RunSummary counts the targets of a fleet run by where they stand.
type RunSummary struct {
	Total     int
	Succeeded int
	Failed    int // failed, terminated, timed out or lost, with no attempt left
	Running   int // started, not ended; or about to run again (see Retrying)
	Pending   int // not started yet
	Skipped   int // never started: the run stopped first
}

// Run is the manager's record of one fleet run: one command on many workers.
type Run struct {
	ID        RunID
	Spec      Spec
	Target    RunTarget
	Options   RunOptions
	State     RunState
	Reason    string      // why it stopped starting children, paused or ended; empty while a RUNNING run goes on
	Tasks     []RunTask   // the targets, as resolved at start, in start order
	Excluded  []Exclusion // matched but unable to run it
	Summary   RunSummary
	CreatedAt time.Time
	EndedAt   time.Time
	// Resumed is true once a run paused after its canary was resumed.
	Resumed bool
	// Cancelled is true once the run was killed as a whole.
	Cancelled       bool
	QueueTimeout    time.Duration
	DisconnectGrace time.Duration
	IdempotencyKey  string
}

// Retrying reports whether the run is about to start task t again: its
// latest child failed by itself, it has attempts left and the run goes on
// (not cancelled, not stopped by its budget or canary, not ended). Only a
// task's final failure counts as one.
func (r Run) Retrying(t RunTask) bool {
	return t.ProcessID != "" && RetryableState(t.State) && len(t.Previous) < r.Options.Retries &&
		r.State == RunRunning && !r.Cancelled && r.Reason == ""
}

// ExitCode is what a CLI should exit with for a run that ended: 0 only when
// every target succeeded, else the highest exit code of its children's
// latest attempts, and at least 1.
func (r Run) ExitCode() int {
	code := 0
	for _, t := range r.Tasks {
		code = max(code, t.ExitCode)
	}
	if code == 0 && (r.State != RunSucceeded || r.Summary.Succeeded != r.Summary.Total) {
		code = 1
	}
	return code
}

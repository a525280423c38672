// Package devops holds the vocabulary of DevOps Platform: processes, their
// states, workers and the errors every other package speaks. It imports only
// the standard library so that any package may import it without cycles.
package devops

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Version is the version of this build; `make build` sets it with -ldflags.
var Version = "dev"

// ProcessID names one process. The manager assigns it (a UUIDv7, so ids sort
// by creation time).
type ProcessID string

// WorkerID names one worker. A worker keeps it in its data dir across restarts.
type WorkerID string

// Limits caps the resources of one process. Zero means no limit asked.
type Limits struct {
	MemoryBytes    int64
	CPUs           float64
	Pids           int64
	MaxOutputBytes int64
}

// Spec says what to run and how.
type Spec struct {
	Argv    []string
	Env     map[string]string
	Dir     string        // empty: a fresh per-process directory on the worker
	Timeout time.Duration // zero: none
	Grace   time.Duration // between the signal and SIGKILL; zero: DefaultGrace
	Limits  Limits
	User    string
	KeepDir bool
	Image   string
	// SecretEnvKeys names the Env entries whose values never leave the worker
	// in status, logs or audit.
	SecretEnvKeys []string
	// Stdin is what the command reads as its standard input, then end of
	// file; empty: nothing (/dev/null). It travels with a request, never in
	// a record (a week of records sits in the manager's memory): the manager
	// keeps it in a file of its own until the worker has it, and StdinBytes
	// says how long it is.
	Stdin      []byte `json:"-"`
	StdinBytes int64  `json:",omitempty"`
	// StdinUpload names a larger standard input, sent to the manager ahead
	// of the request (UploadStdin), in place of Stdin; request only.
	StdinUpload string `json:"-"`
	// StdinFile is a file on the worker's machine that holds the standard
	// input, in place of Stdin: the executor moves it into place. Never
	// sent: the worker sets it for an input it was handed apart (PutStdin).
	StdinFile string `json:"-"`
}

// MaxStdin bounds Spec.Stdin. It is sent whole with the command, in one
// message to the manager and one to the worker, under gRPC's 8 MiB. A
// larger input is uploaded to the manager (StdinUpload) and handed to the
// worker apart, ahead of the command.
const MaxStdin = 4 << 20

// StdinChunk is how much of a larger standard input goes in one message,
// to the manager (UploadStdin) and on to the worker (PutStdin). 4 MiB was
// no faster (bench/FINDINGS.md, session 34).
const StdinChunk = 1 << 20

// MinMemory is the least memory limit a command may ask for. Under it not
// even `true` starts reliably (64 KiB killed it), and such a limit is a
// unit left out: `--memory 10` is ten bytes.
const MinMemory = 1 << 20

// DefaultGrace is how long a signalled process gets before SIGKILL.
const DefaultGrace = 10 * time.Second

// Validate reports ErrInvalid when the spec cannot be run.
func (s Spec) Validate() error {
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return fmt.Errorf("%w: empty command", ErrInvalid)
	}
	if s.Timeout < 0 || s.Grace < 0 {
		return fmt.Errorf("%w: negative duration", ErrInvalid)
	}
	if len(s.Stdin) > MaxStdin {
		return fmt.Errorf("%w: standard input of %d bytes is over the %d MiB sent with a command: upload it first", ErrInvalid, len(s.Stdin), MaxStdin>>20)
	}
	if len(s.Stdin) > 0 && s.StdinUpload != "" {
		return fmt.Errorf("%w: a standard input both sent and uploaded", ErrInvalid)
	}
	for k := range s.Env {
		if k == "" {
			return fmt.Errorf("%w: empty environment variable name", ErrInvalid)
		}
	}
	return nil
}

// State is where a process is in its life.
//
//	          +-----------+
//	          |  PENDING  |--(no slot before queue timeout)--> FAILED
//	          +-----------+
//	                | started on a worker
//	                v
//	          +-----------+  worker unreachable  +--------------+
//	          |  RUNNING  |--------------------->| DISCONNECTED |--(grace over)--> LOST
//	          +-----------+<---------------------+--------------+
//	                |          worker back
//	                v
//	SUCCEEDED (exit 0) | FAILED (exit != 0) | TERMINATED (killed by request)
//	| TIMED_OUT (killed by its timeout)
//
// Terminal states never change.
type State int

// The process states; their numbers match the API's ProcessState.
const (
	StateUnknown State = iota
	StatePending
	StateRunning
	StateSucceeded
	StateFailed
	StateTerminated
	StateTimedOut
	StateLost
	StateDisconnected
)

var stateNames = [...]string{"UNKNOWN", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "TERMINATED", "TIMED_OUT", "LOST", "DISCONNECTED"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("State(%d)", int(s))
	}
	return stateNames[s]
}

// ParseState reads a state name, in any case; ErrInvalid when unknown.
func ParseState(name string) (State, error) {
	for i, n := range stateNames {
		if i > 0 && strings.EqualFold(n, name) {
			return State(i), nil
		}
	}
	return StateUnknown, fmt.Errorf("%w: unknown state %q: want one of %s", ErrInvalid, name, strings.Join(stateNames[1:], ", "))
}

// Terminal reports whether a process in this state has ended for good.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateTerminated, StateTimedOut, StateLost:
		return true
	}
	return false
}

// ExitCode is what a CLI should exit with for a process that ended in this
// state: the remote code, 128+signal when killed, 124 on timeout (like
// coreutils timeout), 255 when lost or when it never ran (like ssh, whose
// own failures are 255, so that a script can tell them from the command's).
func (p Process) ExitCode() int {
	switch p.State {
	case StateSucceeded:
		return 0
	case StateTimedOut:
		return 124
	case StateLost, StateDisconnected, StatePending, StateRunning, StateUnknown:
		return 255
	}
	if p.Signal > 0 {
		return 128 + p.Signal
	}
	if p.State == StateFailed && p.Code == 0 {
		return 255 // failed before it ran: no worker, no slot, refused
	}
	return p.Code
}

// ExitStatus is how a process ended, as its worker saw it.
type ExitStatus struct {
	State      State
	Code       int
	Signal     int
	Reason     string
	EndedAt    time.Time
	PeakMemory int64
	CPUTime    time.Duration
}

// Process is the manager's record of one command on one worker.
type Process struct {
	ID             ProcessID
	WorkerID       WorkerID
	WorkerName     string
	Spec           Spec
	State          State
	Code           int // exit code when it exited by itself
	Signal         int // the signal that ended it, if one did
	Reason         string
	CreatedAt      time.Time
	StartedAt      time.Time
	EndedAt        time.Time
	StateChangedAt time.Time
	OutputBytes    int64
	// OutputLost counts output bytes the worker dropped before the manager
	// had them (its spool reached its bound while the manager was away);
	// their offsets are a gap in the output.
	OutputLost int64
	PeakMemory int64
	CPUTime    time.Duration
	// IdempotencyKey is the client's key of the request that created it.
	IdempotencyKey string
	// QueueTimeout is how long it may wait for a free slot; zero: the manager's default.
	QueueTimeout time.Duration
	// DisconnectGrace is how long it may stay DISCONNECTED before it is
	// LOST; zero: the manager's default.
	DisconnectGrace time.Duration
}

// Stream tells stdout from stderr.
type Stream int

// The output streams; their numbers match the API's Stream.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return fmt.Sprintf("Stream(%d)", int(s))
}

// Chunk is a run of output bytes of one stream. Offset counts the bytes of
// stdout and stderr together, so one number says where a reader stands.
type Chunk struct {
	Offset int64
	Stream Stream
	Data   []byte
}

// End is the offset just past the chunk.
func (c Chunk) End() int64 { return c.Offset + int64(len(c.Data)) }

// WorkerState is whether the manager can use a worker.
type WorkerState int

// The worker states; their numbers match the API's WorkerState.
const (
	WorkerUnknown WorkerState = iota
	WorkerUp
	WorkerDown
	WorkerDraining
)

func (s WorkerState) String() string {
	switch s {
	case WorkerUp:
		return "UP"
	case WorkerDown:
		return "DOWN"
	case WorkerDraining:
		return "DRAINING"
	}
	return "UNKNOWN"
}

// Fingerprint is what a worker runs on and what it can enforce.
type Fingerprint struct {
	OS          string
	Arch        string
	CPUs        int
	MemoryBytes uint64
	Cgroups     string // "v1", "v2" or "" when none
	Namespaces  bool
	RunAs       bool
	Docker      bool
}

// Metrics is one sample of a worker's host figures.
type Metrics struct {
	Time             time.Time
	CPUPercent       float64
	Load1            float64
	Load5            float64
	Load15           float64
	MemoryUsedBytes  uint64
	MemoryTotalBytes uint64
	DiskUsedBytes    uint64
	DiskFreeBytes    uint64
	Running          int
	FreeSlots        int
	Uptime           time.Duration
	Version          string
}

// Worker is the manager's record of one worker.
type Worker struct {
	ID           WorkerID
	Name         string
	Labels       map[string]string
	Address      string
	Capacity     int
	Running      int
	State        WorkerState
	RegisteredAt time.Time
	LastSeen     time.Time
	Fingerprint  Fingerprint
	Metrics      Metrics
	Version      string
}

// Sentinel errors. Wrap them with what was being done; the gRPC edge maps
// them to status codes with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrInvalid       = errors.New("invalid argument")
	ErrNoCapacity    = errors.New("no free slot")
	ErrNoMatch       = errors.New("no matching worker")
	ErrAlreadyExists = errors.New("already exists")
	ErrUnavailable   = errors.New("unavailable")
	ErrOutOfRange    = errors.New("out of range")
	ErrTerminal      = errors.New("already ended")
)

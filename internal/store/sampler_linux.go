package store

import (
	"strings"
	_ "unsafe" // go:linkname

	// The package whose variable natsStatFile is: linked here so that the
	// name below always resolves to it.
	_ "github.com/nats-io/nats-server/v2/server/pse"
)

// natsStatFile is the file nats-server's pse package reads its process's
// CPU time from: "/proc/<pid>/stat". Its package init reads it, then again
// every second from a timer, for as long as the process lives and the read
// succeeds.
//
// That runs in every process of the one devops binary, which links
// nats-server for the manager's store: in the shim and the init of every
// running command and of every idle warm shim too. It costs a sleeping
// command's two processes about 1.7 ms of CPU a second on the machine
// measured (and nothing with the read stopped), where an ssh session costs
// nothing. nats-server has no setting for it, and its unexported variable
// is the only way to stop the timer short of a fork or a second binary:
// TestNATSStatFileLinked fails if an upgrade renames it, instead of the
// name silently binding to a variable of its own.
//
//go:linkname natsStatFile github.com/nats-io/nats-server/v2/server/pse.procStatFile
var natsStatFile string

// StopNATSSampler stops that timer at its next tick: the read fails, and a
// failed read does not schedule another. It is for a process that serves
// no NATS, first thing in main.
//
// The timer's goroutine reads the variable with no synchronisation we can
// take part in, so this write races with it in the memory model's terms;
// in time it comes a second before the first read. And the new path has
// the old one's length (pid 0 in as many digits, which procfs has not), so
// only the string's pointer changes: a read overlapping the write would
// still see one whole path or the other.
func StopNATSSampler() {
	if p, ok := missingStatFile(natsStatFile); ok {
		natsStatFile = p
	}
}

// missingStatFile is "/proc/<pid>/stat" with the pid's digits all 0, or
// false when path is not such a path.
func missingStatFile(path string) (string, bool) {
	pid, ok := strings.CutPrefix(path, "/proc/")
	if ok {
		pid, ok = strings.CutSuffix(pid, "/stat")
	}
	if !ok || pid == "" {
		return "", false
	}
	return "/proc/" + strings.Repeat("0", len(pid)) + "/stat", true
}

package manager

import (
	"slices"
	"strings"
	"testing"

	"github.com/devops-platform/devops"
)

// tasks builds run tasks from a compact form: one letter per target,
// '.' not started, 'r' running, 's' succeeded, 'f' failed, 'k' skipped.
func tasks(form string) []devops.RunTask {
	ts := make([]devops.RunTask, len(form))
	for i, c := range form {
		ts[i].WorkerName = string(rune('a' + i))
		switch c {
		case 'r':
			ts[i].ProcessID, ts[i].State = "p", devops.StateRunning
		case 's':
			ts[i].ProcessID, ts[i].State = "p", devops.StateSucceeded
		case 'f':
			ts[i].ProcessID, ts[i].State = "p", devops.StateFailed
		case 'k':
			ts[i].Skipped = true
		}
	}
	return ts
}

func TestDecide(t *testing.T) {
	n := func(v int) devops.Limit { return devops.Limit{Set: true, N: v} }
	pct := func(v int) devops.Limit { return devops.Limit{Set: true, N: v, Percent: true} }
	tests := []struct {
		name      string
		form      string
		opts      devops.RunOptions
		resumed   bool
		cancelled bool
		start     []int
		stop      string // a prefix of the stop reason
		kill      bool
		pause     bool
		end       devops.RunState // RunUnknown: not ended
	}{
		{"all at once", "....", devops.RunOptions{}, false, false, []int{0, 1, 2, 3}, "", false, false, 0},
		{"window of 2", "....", devops.RunOptions{MaxConcurrency: n(2)}, false, false, []int{0, 1}, "", false, false, 0},
		{"window slides", "sr..", devops.RunOptions{MaxConcurrency: n(2)}, false, false, []int{2}, "", false, false, 0},
		{"window full", "rr..", devops.RunOptions{MaxConcurrency: n(2)}, false, false, nil, "", false, false, 0},
		{"percent window", "........", devops.RunOptions{MaxConcurrency: pct(25)}, false, false, []int{0, 1}, "", false, false, 0},
		{"tiny percent is 1", "...", devops.RunOptions{MaxConcurrency: pct(10)}, false, false, []int{0}, "", false, false, 0},
		{"within budget", "fr..", devops.RunOptions{MaxConcurrency: n(2), MaxErrors: n(1)}, false, false, []int{2}, "", false, false, 0},
		{"budget exceeded, wait", "ffr.", devops.RunOptions{MaxConcurrency: n(3), MaxErrors: n(1)}, false, false, nil, "error budget exceeded: 2 failed", false, false, 0},
		{"budget exceeded, kill", "ffr.", devops.RunOptions{MaxConcurrency: n(3), MaxErrors: n(1), StopOnError: devops.StopKill}, false, false, nil, "error budget exceeded", true, false, 0},
		{"budget exceeded, ended", "ffsk", devops.RunOptions{MaxErrors: n(1)}, false, false, nil, "error budget exceeded", false, false, devops.RunFailed},
		{"zero budget", "f...", devops.RunOptions{MaxErrors: n(0)}, false, false, nil, "error budget exceeded: 1 failed", false, false, devops.RunFailed},
		{"canary first", "....", devops.RunOptions{Canary: 1}, false, false, []int{0}, "", false, false, 0},
		{"canary running", "r...", devops.RunOptions{Canary: 1}, false, false, nil, "", false, false, 0},
		{"canary failed", "f...", devops.RunOptions{Canary: 1}, false, false, nil, "canary failed on a", false, false, devops.RunFailed},
		{"canary passed", "s...", devops.RunOptions{Canary: 1}, false, false, []int{1, 2, 3}, "", false, false, 0},
		{"canary pause", "s...", devops.RunOptions{Canary: 1, PauseAfterCanary: true}, false, false, nil, "", false, true, 0},
		{"canary resumed", "s...", devops.RunOptions{Canary: 1, PauseAfterCanary: true}, true, false, []int{1, 2, 3}, "", false, false, 0},
		{"cancelled", "rr..", devops.RunOptions{}, false, true, nil, "run cancelled", true, false, 0},
		{"cancelled, ended", "sfkk", devops.RunOptions{}, false, true, nil, "run cancelled", true, false, devops.RunCancelled},
		{"all succeeded", "ssss", devops.RunOptions{}, false, false, nil, "", false, false, devops.RunSucceeded},
		{"some failed", "sfss", devops.RunOptions{}, false, false, nil, "", false, false, devops.RunFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := devops.Run{Tasks: tasks(tt.form), Options: tt.opts, Resumed: tt.resumed, Cancelled: tt.cancelled}
			d := decide(r)
			if !slices.Equal(d.start, tt.start) || !strings.HasPrefix(d.stop, tt.stop) || (tt.stop == "") != (d.stop == "") ||
				d.kill != tt.kill || d.pause != tt.pause || d.end != (tt.end != devops.RunUnknown) || d.end && d.state != tt.end {
				t.Errorf("decide(%q, %+v) = %+v, want start %v stop %q kill %t pause %t end %v", tt.form, tt.opts, d, tt.start, tt.stop, tt.kill, tt.pause, tt.end)
			}
		})
	}
}

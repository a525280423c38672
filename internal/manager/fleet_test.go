package manager

import (
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/devops-platform/devops"
)

// tasks builds run tasks from a compact form: one letter per target,
// '.' not started, 'r' running, 's' succeeded, 'f' failed, 't' timed out,
// 'x' terminated, 'l' lost, 'k' skipped. An upper-case letter is the same
// on the task's second attempt: its first one failed and was run again.
func tasks(form string) []devops.RunTask {
	ts := make([]devops.RunTask, len(form))
	for i, c := range form {
		ts[i].WorkerName = string(rune('a' + i))
		if unicode.IsUpper(c) {
			ts[i].Previous = []devops.RunAttempt{{ProcessID: "p0", State: devops.StateFailed, ExitCode: 1}}
			c = unicode.ToLower(c)
		}
		switch c {
		case 'r':
			ts[i].ProcessID, ts[i].State = "p", devops.StateRunning
		case 's':
			ts[i].ProcessID, ts[i].State = "p", devops.StateSucceeded
		case 'f':
			ts[i].ProcessID, ts[i].State = "p", devops.StateFailed
		case 't':
			ts[i].ProcessID, ts[i].State = "p", devops.StateTimedOut
		case 'x':
			ts[i].ProcessID, ts[i].State = "p", devops.StateTerminated
		case 'l':
			ts[i].ProcessID, ts[i].State = "p", devops.StateLost
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
			if !slices.Equal(d.start, tt.start) || len(d.retry) > 0 || !strings.HasPrefix(d.stop, tt.stop) || (tt.stop == "") != (d.stop == "") ||
				d.kill != tt.kill || d.pause != tt.pause || d.end != (tt.end != devops.RunUnknown) || d.end && d.state != tt.end {
				t.Errorf("decide(%q, %+v) = %+v, want start %v stop %q kill %t pause %t end %v", tt.form, tt.opts, d, tt.start, tt.stop, tt.kill, tt.pause, tt.end)
			}
		})
	}
}

// TestDecideRetries: with --retries a child that failed by itself runs
// again on its worker, and only a task's final failure counts against the
// error budget and the canary.
func TestDecideRetries(t *testing.T) {
	n := func(v int) devops.Limit { return devops.Limit{Set: true, N: v} }
	tests := []struct {
		name      string
		form      string
		opts      devops.RunOptions
		cancelled bool
		start     []int
		retry     []int
		stop      string // a prefix of the stop reason
		kill      bool
		pause     bool
		end       devops.RunState // RunUnknown: not ended
	}{
		{name: "failed, runs again", form: "fss", opts: devops.RunOptions{Retries: 1}, retry: []int{0}},
		{name: "timed out, runs again", form: "tss", opts: devops.RunOptions{Retries: 1}, retry: []int{0}},
		{name: "terminated is final", form: "xss", opts: devops.RunOptions{Retries: 1}, end: devops.RunFailed},
		{name: "lost is final", form: "lss", opts: devops.RunOptions{Retries: 1}, end: devops.RunFailed},
		{name: "no retries asked", form: "fss", opts: devops.RunOptions{}, end: devops.RunFailed},
		{name: "retries used up", form: "Fss", opts: devops.RunOptions{Retries: 1}, end: devops.RunFailed},
		{name: "a retry left", form: "Fss", opts: devops.RunOptions{Retries: 2}, retry: []int{0}},
		{name: "second attempt running", form: "Rss", opts: devops.RunOptions{Retries: 1}},
		{name: "second attempt succeeded", form: "Sss", opts: devops.RunOptions{Retries: 1}, end: devops.RunSucceeded},
		{name: "retry keeps its window slot", form: "f...", opts: devops.RunOptions{Retries: 1, MaxConcurrency: n(1)}, retry: []int{0}},
		{name: "retry first, then the window", form: "fs..", opts: devops.RunOptions{Retries: 1, MaxConcurrency: n(2)}, retry: []int{0}, start: []int{2}},
		{name: "window full with a retry", form: "fr..", opts: devops.RunOptions{Retries: 1, MaxConcurrency: n(2)}, retry: []int{0}},
		{name: "retried failures are not budget failures", form: "ffr.", opts: devops.RunOptions{Retries: 1, MaxConcurrency: n(3), MaxErrors: n(0)}, retry: []int{0, 1}},
		{name: "final failures exceed the budget", form: "FFr.", opts: devops.RunOptions{Retries: 1, MaxConcurrency: n(3), MaxErrors: n(1)},
			stop: "error budget exceeded: 2 failed, max-errors 1"},
		{name: "budget exceeded: no more retries", form: "FFf.", opts: devops.RunOptions{Retries: 1, MaxErrors: n(1), StopOnError: devops.StopKill},
			stop: "error budget exceeded: 2 failed", kill: true, end: devops.RunFailed},
		{name: "canary failed, runs again", form: "f...", opts: devops.RunOptions{Retries: 1, Canary: 1}, retry: []int{0}},
		{name: "canary on its second attempt", form: "R...", opts: devops.RunOptions{Retries: 1, Canary: 1}},
		{name: "canary failed every attempt", form: "F...", opts: devops.RunOptions{Retries: 1, Canary: 1}, stop: "canary failed on a", end: devops.RunFailed},
		{name: "canary timed out every attempt", form: "T...", opts: devops.RunOptions{Retries: 1, Canary: 1}, stop: "canary failed on a", end: devops.RunFailed},
		{name: "canary passed on its second attempt", form: "S...", opts: devops.RunOptions{Retries: 1, Canary: 1}, start: []int{1, 2, 3}},
		{name: "canary passed on retry, pause", form: "S...", opts: devops.RunOptions{Retries: 1, Canary: 1, PauseAfterCanary: true}, pause: true},
		{name: "one canary runs again, the other runs", form: "fr..", opts: devops.RunOptions{Retries: 1, Canary: 2}, retry: []int{0}},
		{name: "cancelled: no retry", form: "fr..", opts: devops.RunOptions{Retries: 1}, cancelled: true, stop: "run cancelled", kill: true},
		{name: "cancelled: no retry, ended", form: "fsk", opts: devops.RunOptions{Retries: 1}, cancelled: true, stop: "run cancelled", kill: true, end: devops.RunCancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := devops.Run{Tasks: tasks(tt.form), Options: tt.opts, Cancelled: tt.cancelled}
			d := decide(r)
			if !slices.Equal(d.start, tt.start) || !slices.Equal(d.retry, tt.retry) || !strings.HasPrefix(d.stop, tt.stop) || (tt.stop == "") != (d.stop == "") ||
				d.kill != tt.kill || d.pause != tt.pause || d.end != (tt.end != devops.RunUnknown) || d.end && d.state != tt.end {
				t.Errorf("decide(%q, %+v) = %+v, want start %v retry %v stop %q kill %t pause %t end %v",
					tt.form, tt.opts, d, tt.start, tt.retry, tt.stop, tt.kill, tt.pause, tt.end)
			}
		})
	}
}

// TestSummarizeRetrying: a task about to run again counts as running until
// the run stops or ends; then its failure is final.
func TestSummarizeRetrying(t *testing.T) {
	tests := []struct {
		name  string
		form  string
		state devops.RunState
		why   string
		want  devops.RunSummary
	}{
		{"runs again", "fsF", devops.RunRunning, "", devops.RunSummary{Total: 3, Succeeded: 1, Running: 1, Failed: 1}},
		{"stopping", "fsF", devops.RunRunning, "error budget exceeded", devops.RunSummary{Total: 3, Succeeded: 1, Failed: 2}},
		{"ended", "fsF", devops.RunFailed, "2 of 3 failed", devops.RunSummary{Total: 3, Succeeded: 1, Failed: 2}},
		{"killed is final", "xs.", devops.RunRunning, "", devops.RunSummary{Total: 3, Succeeded: 1, Failed: 1, Pending: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := devops.Run{Tasks: tasks(tt.form), Options: devops.RunOptions{Retries: 1}, State: tt.state, Reason: tt.why}
			if got := summarize(r); got != tt.want {
				t.Errorf("summarize(%q, %s, %q) = %+v, want %+v", tt.form, tt.state, tt.why, got, tt.want)
			}
		})
	}
}

package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/devops-platform/devops"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"512", 512, true}, {"64K", 64 << 10, true}, {"256M", 256 << 20, true},
		{"1G", 1 << 30, true}, {"2Gi", 2 << 30, true}, {"1.5G", 3 << 29, true}, {"10MB", 10 << 20, true},
		{"1T", 1 << 40, true}, {"lots", 0, false}, {"-1M", 0, false}, {"5X", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d (ok=%v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// runMain runs the command line in this process, with nothing to reach.
func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(t.Context(), args, Env{Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

// TestWorkerFlagsRefused: a worker refuses settings that were taken for
// something else (--capacity -1 for 64) or that no command could run under
// (--max-memory 10, ten bytes), before it starts.
func TestWorkerFlagsRefused(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--capacity", "-1"}, "--capacity -1: invalid argument: at least 1"},
		{[]string{"--max-memory", "10"}, "--max-memory 10: invalid argument: 10 bytes, under the least a command may ask for, 1M"},
	} {
		args := append([]string{"worker", "--insecure", "--manager", "127.0.0.1:1", "--data-dir", t.TempDir(), "--http", "-", "--listen", "127.0.0.1:0"}, tt.args...)
		if code, _, stderr := runMain(t, args...); code != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("worker %v = %d, %q; want refused with %q", tt.args, code, stderr, tt.want)
		}
	}
}

// TestHelpShowsTheFlagsThatApply: the manager's help leaves out the
// client's flags, which mean nothing to it; a client command keeps them.
func TestHelpShowsTheFlagsThatApply(t *testing.T) {
	help := func(cmd string) string {
		code, stdout, stderr := runMain(t, cmd, "--help")
		if code != 0 {
			t.Fatalf("%s --help = %d: %s", cmd, code, stderr)
		}
		return stdout + stderr
	}
	m := help("manager")
	for _, gone := range []string{"--token-file", "--ca ", "--manager "} {
		if strings.Contains(m, gone) {
			t.Errorf("manager --help lists %s:\n%s", gone, m)
		}
	}
	if !strings.Contains(m, "--insecure") || !strings.Contains(m, "--log-level") {
		t.Errorf("manager --help lost a flag it takes:\n%s", m)
	}
	if w := help("worker"); strings.Contains(w, "--token-file") || !strings.Contains(w, "--ca ") {
		t.Errorf("worker --help: want --ca and no --token-file:\n%s", w)
	}
	if r := help("run"); !strings.Contains(r, "--token-file") || !strings.Contains(r, "--ca ") {
		t.Errorf("run --help lost the client's flags:\n%s", r)
	}
}

func TestParseLabels(t *testing.T) {
	got, err := parseLabels("zone=a, env=prod")
	if err != nil || len(got) != 2 || got["zone"] != "a" || got["env"] != "prod" {
		t.Errorf("parseLabels = %v, %v", got, err)
	}
	for _, bad := range []string{"zone", "zo ne=a", "zone=a b"} {
		if _, err := parseLabels(bad); err == nil {
			t.Errorf("parseLabels(%q) succeeded, want an error", bad)
		}
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		p    devops.Process
		want int
	}{
		{devops.Process{State: devops.StateSucceeded}, 0},
		{devops.Process{State: devops.StateFailed, Code: 3}, 3},
		{devops.Process{State: devops.StateFailed, Signal: 9}, 137},
		{devops.Process{State: devops.StateTerminated, Signal: 15}, 143},
		{devops.Process{State: devops.StateTimedOut, Signal: 15}, 124},
		{devops.Process{State: devops.StateLost}, 255},
		{devops.Process{State: devops.StateFailed, Reason: "no free slot"}, 255},
	}
	for _, tt := range tests {
		if got := tt.p.ExitCode(); got != tt.want {
			t.Errorf("ExitCode(%s code=%d signal=%d) = %d, want %d", tt.p.State, tt.p.Code, tt.p.Signal, got, tt.want)
		}
	}
}

// TestListLimitsAreChecked: -n is checked before the manager is asked
// (here none listens): a negative one listed everything before.
func TestListLimitsAreChecked(t *testing.T) {
	for _, args := range [][]string{{"ps", "-n", "-1"}, {"runs", "-n", "-1"}, {"audit", "-n", "-1"}, {"audit", "-n", "20000"}} {
		code, _, stderr := runMain(t, append(args, "--manager", "127.0.0.1:1", "--insecure")...)
		if code != 1 || !strings.Contains(stderr, "--limit: invalid argument") {
			t.Errorf("devops %v = %d %q, want 1 and a --limit error", args, code, stderr)
		}
	}
}

// TestIDsOfTheOtherKindAreNamed: status of a run id, or run-status of a
// process id, says which command it wants (it said "not found").
func TestIDsOfTheOtherKindAreNamed(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "run-01a24e12-9efa-74a8-83cb-0f759ee86423"}, "is a fleet run: see devops run-status run-01a24e12"},
		{[]string{"run-status", "01a24e12-9ee7-746a-bfc7-9c225efbbce9"}, "is not a fleet run (run-…): see devops status 01a24e12"},
	} {
		code, _, stderr := runMain(t, append(tt.args, "--manager", "127.0.0.1:1", "--insecure")...)
		if code != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("devops %v = %d %q, want 1 and %q", tt.args, code, stderr, tt.want)
		}
	}
}

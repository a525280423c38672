package cli_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/cli"
	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/testcluster"
	"github.com/devops-platform/devops/internal/worker"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

func TestRunStreamsOutputByteExact(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Logs: os.Getenv("LOGS") != ""})
	dir := t.TempDir()
	// 10 MB of random bytes, interleaved between stdout and stderr.
	parts := map[string][]byte{}
	for _, name := range []string{"o1", "e1", "o2", "e2"} {
		b := make([]byte, 2500*1000)
		rand.Read(b)
		parts[name] = b
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := c.CLI(t.Context(), "run", "--dir", dir, "--", "sh", "-c", "cat o1; cat e1 >&2; cat o2; cat e2 >&2")
	if r.Code != 0 {
		t.Fatalf("run exited %d: %s", r.Code, tail(r.Stderr))
	}
	wantOut := append(append([]byte{}, parts["o1"]...), parts["o2"]...)
	wantErr := append(append([]byte{}, parts["e1"]...), parts["e2"]...)
	if !bytes.Equal([]byte(r.Stdout), wantOut) {
		t.Errorf("stdout: got %d bytes, want %d, equal=%v", len(r.Stdout), len(wantOut), false)
	}
	if !bytes.Equal([]byte(r.Stderr), wantErr) {
		t.Errorf("stderr: got %d bytes, want %d", len(r.Stderr), len(wantErr))
	}
	// The stored copy is exact too.
	ps, err := c.Client.Processes(t.Context(), devops.StateSucceeded, "")
	if err != nil || len(ps) != 1 {
		t.Fatalf("Processes = %v, %v; want one", ps, err)
	}
	if ps[0].OutputBytes != 10_000_000 {
		t.Errorf("OutputBytes = %d, want 10000000", ps[0].OutputBytes)
	}
	logs := c.CLI(t.Context(), "logs", string(ps[0].ID))
	if !bytes.Equal([]byte(logs.Stdout), wantOut) || !bytes.Equal([]byte(logs.Stderr), wantErr) {
		t.Errorf("logs: got %d/%d bytes, want %d/%d", len(logs.Stdout), len(logs.Stderr), len(wantOut), len(wantErr))
	}
}

func TestRunExitCodes(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	tests := []struct {
		name    string
		args    []string
		want    int
		wantErr string
	}{
		{"success", []string{"--", "true"}, 0, ""},
		{"exit code", []string{"--", "sh", "-c", "echo oops >&2; exit 3"}, 3, "oops"},
		{"killed by a signal", []string{"--", "sh", "-c", "kill -KILL $$"}, 128 + 9, "signal 9"},
		{"timeout", []string{"--timeout", "300ms", "--grace", "200ms", "--", "sleep", "30"}, 124, "TIMED_OUT"},
		{"timeout, SIGTERM ignored", []string{"--timeout", "300ms", "--grace", "200ms", "--", "sh", "-c", "trap '' TERM; sleep 30"}, 124, "TIMED_OUT"},
		{"command not found", []string{"--", "no-such-command-here"}, 127, "command not found"},
		// devops's own failures are 255, as ssh's are: a script tells them
		// from the command's own codes.
		{"unknown worker", []string{"--worker", "nosuch", "--", "true"}, 255, `unknown worker "nosuch"`},
		{"no matching worker", []string{"--selector", "zone=z", "--", "true"}, 255, "no worker matches zone=z"},
		{"refused by every worker", []string{"--user", "nosuchuser", "--", "true"}, 255, "no worker took the command"},
		{"a bad flag", []string{"--memory", "lots", "--", "true"}, 255, "lots"},
		{"too many retries", []string{"--retries", "101", "--", "true"}, 255, "--retries: invalid argument: 101: want 0 to 100"},
		{"no command", []string{}, 255, "no command to run: devops run [flags] -- CMD [ARGS...]"},
		{"no command after --", []string{"--all", "--"}, 255, "no command to run"},
		{"a fleet's output flag without a target", []string{"-o", "json", "--", "true"}, 255, "-o json makes a fleet run: name its workers with --worker, --workers, --selector or --all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.CLI(t.Context(), append([]string{"run"}, tt.args...)...)
			if r.Code != tt.want {
				t.Errorf("run %v exited %d, want %d; stderr: %s", tt.args, r.Code, tt.want, r.Stderr)
			}
			if !strings.Contains(r.Stderr, tt.wantErr) {
				t.Errorf("run %v stderr = %q, want it to contain %q", tt.args, r.Stderr, tt.wantErr)
			}
		})
	}
}

func TestRunFansOutWithPrefixes(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 3, Labels: func(i int) map[string]string {
		return map[string]string{"zone": string(rune('a' + i)), "role": "web"}
	}})
	// Each worker's process has its HOME under that worker's data dir.
	script := `echo "hello"; printf 'partial'; case $HOME in */w2/*) exit 5;; */w3/*) exit 7;; esac`
	r := c.CLI(t.Context(), "run", "--all", "--", "sh", "-c", script)
	if r.Code != 7 {
		t.Errorf("fan-out exit code = %d, want the highest, 7; stderr: %s", r.Code, r.Stderr)
	}
	for _, w := range []string{"w1", "w2", "w3"} {
		for _, line := range []string{w + ": hello\n", w + ": partial\n"} {
			if !strings.Contains(r.Stdout, line) {
				t.Errorf("stdout lacks %q:\n%s", line, r.Stdout)
			}
		}
	}
	if n := strings.Count(r.Stdout, "\n"); n != 6 {
		t.Errorf("stdout has %d lines, want 6:\n%s", n, r.Stdout)
	}

	r = c.CLI(t.Context(), "run", "--selector", "zone in (a,c),role=web", "--", "echo", "hi")
	if r.Code != 0 || r.Stdout != "w1: hi\nw3: hi\n" && r.Stdout != "w3: hi\nw1: hi\n" {
		t.Errorf("selector run = %d %q, want w1 and w3 only", r.Code, r.Stdout)
	}

	// --no-prefix, as pdsh -N: the lines alone, for a pipe.
	r = c.CLI(t.Context(), "run", "--all", "--no-prefix", "--", "sh", "-c", "echo v1; printf v2")
	if r.Code != 0 || strings.Count(r.Stdout, "v1\n") != 3 || strings.Count(r.Stdout, "v2\n") != 3 || len(r.Stdout) != 18 {
		t.Errorf("run --all --no-prefix = %d %q, want each worker's two lines without its name", r.Code, r.Stdout)
	}
	if r = c.CLI(t.Context(), "run", "--all", "--no-prefix", "-o", "json", "--", "true"); r.Code != 255 || !strings.Contains(r.Stderr, "--no-prefix is for text lines") {
		t.Errorf("run --no-prefix -o json = %d %q, want refused", r.Code, r.Stderr)
	}
}

// survivors counts the sleep processes whose argument is marker.
func survivors(t *testing.T, marker string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Equal(cmdline, []byte("sleep\x00"+marker+"\x00")) {
			n++
		}
	}
	return n
}

func TestKillLeavesNoChildBehind(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	marker := fmt.Sprintf("1000.%d", time.Now().UnixNano()%100000)
	r := c.CLI(t.Context(), "run", "--detach", "--", "sh", "-c", fmt.Sprintf("sleep %s & setsid sleep %s & sleep %s", marker, marker, marker))
	if r.Code != 0 {
		t.Fatalf("run --detach exited %d: %s", r.Code, r.Stderr)
	}
	id := strings.TrimSpace(r.Stdout)
	testcluster.Eventually(t, 5*time.Second, "three sleeps running", func() bool { return survivors(t, marker) == 3 })
	if r := c.CLI(t.Context(), "kill", "--grace", "1s", id); r.Code != 0 {
		t.Fatalf("kill exited %d: %s", r.Code, r.Stderr)
	}
	r = c.CLI(t.Context(), "logs", "-f", id)
	if r.Code != 128+15 {
		t.Errorf("logs -f of the killed process exited %d, want 143", r.Code)
	}
	if n := survivors(t, marker); n != 0 {
		t.Errorf("%d processes survived the kill", n)
	}
	p, err := c.Client.Status(t.Context(), devops.ProcessID(id))
	if err != nil || p.State != devops.StateTerminated || p.Signal != 15 {
		t.Errorf("status = %+v, %v; want TERMINATED by signal 15", p, err)
	}
}

// TestKillSendsTheNamedSignal: the signal a user names is the one the
// command gets, sent by its Linux number whatever the client's OS, and is
// named back in kill's answer and in status.
func TestKillSendsTheNamedSignal(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	r := c.CLI(t.Context(), "run", "--detach", "--", "sh", "-c", `trap 'echo got USR1; exit 3' USR1; echo ready; while :; do sleep 0.05; done`)
	if r.Code != 0 {
		t.Fatalf("run --detach exited %d: %s", r.Code, r.Stderr)
	}
	id := strings.TrimSpace(r.Stdout)
	testcluster.Eventually(t, 5*time.Second, "the trap set", func() bool {
		return strings.Contains(c.CLI(t.Context(), "logs", id).Stdout, "ready")
	})
	k := c.CLI(t.Context(), "kill", "--signal", "usr1", "--grace", "10s", id)
	if k.Code != 0 || !strings.Contains(k.Stdout, id+": SIGUSR1 sent") {
		t.Fatalf("kill --signal usr1 = %d, %q, %q; want SIGUSR1 sent", k.Code, k.Stdout, k.Stderr)
	}
	if f := c.CLI(t.Context(), "logs", "-f", id); f.Code != 3 || !strings.Contains(f.Stdout, "got USR1") {
		t.Errorf("logs -f = %d, %q; want the trap's line and exit 3", f.Code, f.Stdout)
	}

	r = c.CLI(t.Context(), "run", "--detach", "--", "sleep", "30")
	id = strings.TrimSpace(r.Stdout)
	if k := c.CLI(t.Context(), "kill", "-s", "9", id); k.Code != 0 || !strings.Contains(k.Stdout, "SIGKILL sent") {
		t.Fatalf("kill -s 9 = %d, %q, %q", k.Code, k.Stdout, k.Stderr)
	}
	c.CLI(t.Context(), "logs", "-f", id)
	if st := c.CLI(t.Context(), "status", id); !strings.Contains(st.Stdout, "9 (SIGKILL)") {
		t.Errorf("status of a killed process = %q; want its signal named", st.Stdout)
	}
	if k := c.CLI(t.Context(), "kill", "-s", "NOPE", id); k.Code == 0 || !strings.Contains(k.Stderr, `unknown signal "NOPE"`) {
		t.Errorf("kill -s NOPE = %d, %q", k.Code, k.Stderr)
	}
}

func TestCtrlCTerminatesTheRemoteProcess(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	interrupt := make(chan os.Signal, 1)
	var out testcluster.SyncBuffer
	done := make(chan int)
	go func() {
		done <- c.CLIWith(t.Context(), &out, &out, interrupt, "run", "--", "sh", "-c", "echo started; sleep 30")
	}()
	testcluster.Eventually(t, 5*time.Second, "output started", func() bool { return strings.Contains(out.String(), "started") })
	interrupt <- os.Interrupt
	if code := exitOf(t, done, 15*time.Second, "run did not return after Ctrl-C"); code != 128+15 {
		t.Errorf("run exited %d after Ctrl-C, want 143; output: %s", code, out.String())
	}
}

// TestKillReachesEverySignal: a command in its own PID namespace gets any
// signal, not only the nine its init forwarded before session 33: SIGPIPE
// ended nothing, and SIGSTOP stopped the init alone.
func TestKillReachesEverySignal(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()
	start := func(marker string) string {
		t.Helper()
		r := c.CLI(ctx, "run", "--detach", "--", "sh", "-c", "echo "+marker+"; while :; do sleep 0.05; done")
		if r.Code != 0 {
			t.Fatalf("run --detach exited %d: %s", r.Code, r.Stderr)
		}
		id := strings.TrimSpace(r.Stdout)
		testcluster.Eventually(t, 20*time.Second, "the command started", func() bool {
			return strings.Contains(c.CLI(ctx, "logs", id).Stdout, marker)
		})
		return id
	}
	// Markers of this run alone: pgrep below must not find another test
	// binary's command.
	unique := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	id := start("pipe-me-" + unique)
	if k := c.CLI(ctx, "kill", "-s", "PIPE", "--grace", "60s", id); k.Code != 0 || !strings.Contains(k.Stdout, "SIGPIPE sent") {
		t.Fatalf("kill -s PIPE = %d, %q, %q", k.Code, k.Stdout, k.Stderr)
	}
	// Well before the grace's SIGKILL.
	if f := c.CLI(ctx, "logs", "-f", id); f.Code != 128+13 {
		t.Errorf("logs -f after SIGPIPE = %d, want 141", f.Code)
	}

	// STOP stops the command itself, and CONT lets it go on.
	id = start("stop-me-" + unique)
	stopped := func() bool {
		out, err := exec.Command("pgrep", "-f", "echo stop-me-"+unique).Output()
		pids := strings.Fields(string(out))
		if err != nil || len(pids) == 0 {
			return false
		}
		all := true
		for _, pid := range pids {
			b, _ := os.ReadFile("/proc/" + pid + "/stat")
			// The state follows the command name in parentheses.
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			all = all && len(f) > 0 && f[0] == "T"
		}
		return all
	}
	if k := c.CLI(ctx, "kill", "-s", "STOP", id); k.Code != 0 {
		t.Fatalf("kill -s STOP = %d, %q", k.Code, k.Stderr)
	}
	testcluster.Eventually(t, 20*time.Second, "the command stopped", stopped)
	if k := c.CLI(ctx, "kill", "-s", "CONT", id); k.Code != 0 {
		t.Fatalf("kill -s CONT = %d, %q", k.Code, k.Stderr)
	}
	testcluster.Eventually(t, 20*time.Second, "the command going on", func() bool { return !stopped() })
	if p, err := c.Client.Status(ctx, devops.ProcessID(id)); err != nil || p.State != devops.StateRunning {
		t.Errorf("after STOP and CONT the command is %v (%v), want RUNNING", p.State, err)
	}
}

// closedPipe is a standard output whose reader went away after the first
// write (`devops run … | head -1`): what a write to it returns then, once
// SIGPIPE no longer kills the CLI.
type closedPipe struct {
	mu     sync.Mutex
	closed bool
	err    syscall.Errno // what a write fails with then; 0: EPIPE
}

func (p *closedPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		err := p.err
		if err == 0 {
			err = syscall.EPIPE
		}
		return 0, &fs.PathError{Op: "write", Path: "/dev/stdout", Err: err}
	}
	p.closed = true
	return len(b), nil
}

// TestClosedOutputEndsTheCommand: when nobody reads run's output any more
// the command ends with SIGPIPE, as over ssh, and run exits 141; before, the
// CLI died and the command ran on for good. A fleet run is cancelled.
func TestClosedOutputEndsTheCommand(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2})
	ctx := t.Context()
	loop := []string{"sh", "-c", "while true; do echo y; sleep 0.05; done"}
	for _, target := range [][]string{{"--worker", "w1"}, {"--all"}} {
		var errb testcluster.SyncBuffer
		// --worker alone is a single run, --all a fleet run.
		code := c.CLIEnv(ctx, cli.Env{Stdout: &closedPipe{}, Stderr: &errb}, append(append([]string{"run"}, target...), append([]string{"--"}, loop...)...)...)
		if code != 141 {
			t.Errorf("run %v | head -1 exited %d, want 141; stderr: %s", target, code, errb.String())
		}
	}
	testcluster.Eventually(t, 15*time.Second, "every command ended", func() bool {
		ps, err := c.Client.Processes(ctx, devops.StateUnknown, "")
		if err != nil || len(ps) != 3 {
			return false
		}
		for _, p := range ps {
			if !p.State.Terminal() {
				return false
			}
		}
		return true
	})
	ps, _ := c.Client.Processes(ctx, devops.StateUnknown, "")
	for _, p := range ps {
		if p.State != devops.StateTerminated || p.Signal != int(syscall.SIGPIPE) {
			t.Errorf("process on %s ended %s, signal %d; want TERMINATED by SIGPIPE", p.WorkerName, p.State, p.Signal)
		}
	}
	// The run ends CANCELLED once its children have: a moment after them.
	testcluster.Eventually(t, 20*time.Second, "the fleet run CANCELLED", func() bool {
		rs, err := c.Client.FleetRuns(ctx)
		return err == nil && len(rs) == 1 && rs[0].State == devops.RunCancelled
	})

	// A command that ended before its output was closed is no news: run
	// exits 141 and says nothing, as ssh does.
	var errb testcluster.SyncBuffer
	if code := c.CLIEnv(ctx, cli.Env{Stdout: &closedPipe{}, Stderr: &errb}, "run", "--", "seq", "200000"); code != 141 || errb.String() != "" {
		t.Errorf("run -- seq 200000 | head -1 = %d, stderr %q; want 141 and nothing", code, errb.String())
	}

	// Output that cannot be printed otherwise (> /dev/full) ends the
	// command too, and run says why and exits 255; before, it exited and
	// left the command running.
	var full testcluster.SyncBuffer
	if code := c.CLIEnv(ctx, cli.Env{Stdout: &closedPipe{err: syscall.ENOSPC}, Stderr: &full}, append([]string{"run", "--"}, loop...)...); code != 255 ||
		!strings.Contains(full.String(), "cannot print the output (write /dev/stdout: no space left on device): ended the command with SIGPIPE") {
		t.Errorf("run > /dev/full = %d, stderr %q", code, full.String())
	}
	testcluster.Eventually(t, 15*time.Second, "the command ended", func() bool {
		ps, err := c.Client.Processes(ctx, devops.StateUnknown, "")
		return err == nil && len(ps) == 5 && ps[4].State == devops.StateTerminated && ps[4].Signal == int(syscall.SIGPIPE)
	})
}

func TestLogsReattachFromAnyOffset(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	script := `for i in 1 2 3 4 5 6 7 8 9 10; do echo "line $i"; sleep 0.05; done`
	r := c.CLI(t.Context(), "run", "--detach", "--", "sh", "-c", script)
	id := strings.TrimSpace(r.Stdout)
	var want strings.Builder
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	// A follower attached while it runs sees every byte once.
	f := c.CLI(t.Context(), "logs", "-f", id)
	if f.Code != 0 || f.Stdout != want.String() {
		t.Fatalf("logs -f = %d %q, want %q", f.Code, f.Stdout, want.String())
	}
	for _, from := range []int{0, 1, 7, 20, len(want.String())} {
		r := c.CLI(t.Context(), "logs", "--from", fmt.Sprint(from), id)
		if r.Code != 0 || r.Stdout != want.String()[from:] {
			t.Errorf("logs --from %d = %d %q, want %q", from, r.Code, r.Stdout, want.String()[from:])
		}
	}
}

func TestManagerRestartKeepsRecordsAndFollowers(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	done := c.CLI(t.Context(), "run", "--detach", "--", "sh", "-c", "echo kept")
	doneID := strings.TrimSpace(done.Stdout)
	testcluster.Eventually(t, 5*time.Second, "first process done", func() bool {
		p, err := c.Client.Status(t.Context(), devops.ProcessID(doneID))
		return err == nil && p.State.Terminal()
	})

	script := `i=1; while [ $i -le 40 ]; do echo "n $i"; i=$((i+1)); sleep 0.05; done`
	// stderr apart: it tells of the wait for the manager.
	out, errOut, code := startCLI(t, c, "run", "--", "sh", "-c", script)
	testcluster.Eventually(t, 5*time.Second, "output started", func() bool { return strings.Contains(out.String(), "n 3\n") })
	c.StopManager()
	c.StartManager()
	if got := exitOf(t, code, 30*time.Second, "run did not finish after the manager restarted"); got != 0 {
		t.Errorf("run across a manager restart exited %d: %s", got, out.String())
	}
	var want strings.Builder
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&want, "n %d\n", i)
	}
	if out.String() != want.String() {
		t.Errorf("output across the restart:\n%s\nwant:\n%s", out.String(), want.String())
	}
	// It said why it waited, and when that was over.
	e := errOut.String()
	if !strings.Contains(e, "devops: manager unreachable (") || !strings.Contains(e, "trying again for up to 1m0s") ||
		!strings.Contains(e, "devops: manager reachable again\n") {
		t.Errorf("stderr across the restart does not tell of the wait and its end:\n%s", e)
	}
	r := c.CLI(t.Context(), "logs", doneID)
	if r.Code != 0 || r.Stdout != "kept\n" {
		t.Errorf("logs after restart = %d %q, want kept", r.Code, r.Stdout)
	}
	p, err := c.Client.Status(t.Context(), devops.ProcessID(doneID))
	if err != nil || p.State != devops.StateSucceeded {
		t.Errorf("status after restart = %+v, %v", p, err)
	}
}

func TestBadInputGetsAProperStatus(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()
	run := func(r client.RunRequest) error {
		return c.Client.Run(ctx, r, func(client.Event) error { return nil })
	}
	tests := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"empty command", func() error { return run(client.RunRequest{}) }, codes.InvalidArgument},
		{"unknown worker", func() error {
			return run(client.RunRequest{Spec: devops.Spec{Argv: []string{"true"}}, Target: client.Target{Worker: "nope"}})
		}, codes.NotFound},
		{"malformed selector", func() error {
			return run(client.RunRequest{Spec: devops.Spec{Argv: []string{"true"}}, Target: client.Target{Selector: "zone in a"}})
		}, codes.InvalidArgument},
		{"no match", func() error {
			return run(client.RunRequest{Spec: devops.Spec{Argv: []string{"true"}}, Target: client.Target{Selector: "env=prod"}})
		}, codes.FailedPrecondition},
		{"unknown process", func() error { _, err := c.Client.Status(ctx, "nope"); return err }, codes.NotFound},
		{"kill unknown process", func() error { _, err := c.Client.Terminate(ctx, "nope", 0, 0); return err }, codes.NotFound},
		{"offset past the end", func() error {
			ps, err := c.Client.Submit(ctx, client.RunRequest{Spec: devops.Spec{Argv: []string{"echo", "x"}}})
			if err != nil {
				return err
			}
			return c.Client.Logs(ctx, ps[0].ID, 1<<20, false, func(client.Event) error { return nil })
		}, codes.OutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != tt.code {
				t.Errorf("got %v, want code %v", err, tt.code)
			}
			if err != nil && strings.Contains(status.Convert(err).Message(), "\n") {
				t.Errorf("message spans lines: %q", status.Convert(err).Message())
			}
		})
	}

	// The CLI prints the one-line message and exits non-zero.
	r := c.CLI(ctx, "run", "--selector", "env=prod", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "no worker matches env=prod") {
		t.Errorf("run on no match = %d %q", r.Code, r.Stderr)
	}
	r = c.CLI(ctx, "status", "nope")
	if r.Code == 0 || !strings.Contains(r.Stderr, `process "nope": not found`) {
		t.Errorf("status nope = %d %q", r.Code, r.Stderr)
	}

	// A second live worker claiming a name in use is refused.
	w, err := worker.New(worker.Config{Manager: c.Addr(), Name: testcluster.WorkerName(0), Listen: "127.0.0.1:0", HTTP: "-", DataDir: t.TempDir(), InitPath: os.Args[0],
		Security: worker.SecurityConfig{JoinToken: c.JoinToken()}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.Run(runCtx); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("duplicate worker Run = %v, want a name-in-use error", err)
	}
}

// TestNoWorkerTakesIt: a command every worker refuses (its user exists on
// none) fails saying why once, with every worker that refused it.
func TestNoWorkerTakesIt(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2})
	r := c.CLI(t.Context(), "run", "--user", "no-such-user-here", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, `FAILED: no worker took the command: invalid argument: user "no-such-user-here"`) ||
		!strings.Contains(r.Stderr, "w1") || !strings.Contains(r.Stderr, "w2") || strings.Count(r.Stderr, "no-such-user-here") != 2 {
		t.Errorf("run as an unknown user = %d, stderr:\n%s", r.Code, r.Stderr)
	}
}

// TestCtrlCStopsEveryCommand: Ctrl-C stops a command that follows or
// watches (they ignored it: the CLI takes SIGINT, and only run looked at
// it), exit 130, and what it followed goes on.
func TestCtrlCStopsEveryCommand(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()
	id := strings.TrimSpace(c.CLI(ctx, "run", "--detach", "--", "sleep", "60").Stdout)
	runID := strings.TrimSpace(c.CLI(ctx, "run", "--detach", "--all", "--", "sleep", "60").Stdout)
	testcluster.Eventually(t, 10*time.Second, "the process running", func() bool {
		p, err := c.Client.Status(ctx, devops.ProcessID(id))
		return err == nil && p.State == devops.StateRunning
	})
	for _, args := range [][]string{{"logs", "-f", id}, {"logs", "-f", runID}, {"workers", "--watch"}} {
		interrupt := make(chan os.Signal, 1)
		interrupt <- os.Interrupt // pressed as it starts
		var errb testcluster.SyncBuffer
		code := make(chan int, 1)
		go func() {
			code <- c.CLIEnv(ctx, cli.Env{Stdout: io.Discard, Stderr: &errb, Interrupt: interrupt}, args...)
		}()
		if got := exitOf(t, code, 10*time.Second, fmt.Sprintf("devops %v did not stop at Ctrl-C", args)); got != 130 {
			t.Errorf("devops %v at Ctrl-C = %d %q, want 130", args, got, errb.String())
		}
	}
	if p, err := c.Client.Status(ctx, devops.ProcessID(id)); err != nil || p.State != devops.StateRunning {
		t.Errorf("the followed process after Ctrl-C: %v, %v; want it RUNNING", p.State, err)
	}
}

// TestWatchOutlivesAManagerRestart: workers --watch says the manager is
// unreachable and goes on once it is back; it ended with exit 255.
func TestWatchOutlivesAManagerRestart(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	interrupt := make(chan os.Signal, 1)
	var out, errb testcluster.SyncBuffer
	code := make(chan int, 1)
	go func() {
		code <- c.CLIEnv(t.Context(), cli.Env{Stdout: &out, Stderr: &errb, Interrupt: interrupt}, "workers", "--watch", "--interval", "50ms")
	}()
	tables := func() int { return strings.Count(out.String(), "NAME ") }
	testcluster.Eventually(t, 10*time.Second, "a first table", func() bool { return tables() > 0 })
	c.StopManager()
	testcluster.Eventually(t, 10*time.Second, "the watch to say the manager is unreachable", func() bool {
		return strings.Contains(errb.String(), "manager unreachable")
	})
	before := tables()
	c.StartManager()
	testcluster.Eventually(t, 10*time.Second, "a table from the restarted manager", func() bool { return tables() > before })
	interrupt <- os.Interrupt
	if got := exitOf(t, code, 10*time.Second, "workers --watch did not stop at Ctrl-C"); got != 130 {
		t.Errorf("workers --watch = %d, want 130 at Ctrl-C; stderr %q", got, errb.String())
	}
}

// TestNoManagerFailsLikeSSH: run against an address where no manager
// answers says so at once and exits 255 after the first-contact window (it
// waited a minute, silently, before).
func TestNoManagerFailsLikeSSH(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connection refused
	var out, errb bytes.Buffer
	start := time.Now()
	code := cli.Main(t.Context(), []string{"run", "--manager", addr, "--insecure", "--", "true"}, cli.Env{Stdout: &out, Stderr: &errb})
	took := time.Since(start)
	if code != 255 || took > 15*time.Second {
		t.Errorf("run with no manager = %d after %v, want 255 within the 5s window; stderr %q", code, took, errb.String())
	}
	if e := errb.String(); !strings.Contains(e, "trying again for up to 5s") || !strings.Contains(e, "no answer for 5s") {
		t.Errorf("stderr does not tell of the wait and why it ended:\n%s", e)
	}
}

// A manager whose address takes the connection and never answers (a host
// that hangs, a proxy with nothing behind it; a firewall that drops the
// packets is the same wait) fails the command within the 5 s of its first
// contact, not grpc's 20 s connect timeout.
func TestSilentManagerFailsWithinFirstContact(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn // accepted, and never a byte said
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	var out, errb bytes.Buffer
	start := time.Now()
	code := cli.Main(t.Context(), []string{"run", "--manager", l.Addr().String(), "--insecure", "--", "true"}, cli.Env{Stdout: &out, Stderr: &errb})
	took := time.Since(start)
	if code != 255 || took > 10*time.Second {
		t.Errorf("run with a silent manager = %d after %v, want 255 within the 5s window; stderr %q", code, took, errb.String())
	}
	if e := errb.String(); !strings.Contains(e, "no answer for 5s") {
		t.Errorf("stderr does not say why it ended:\n%s", e)
	}
}

func TestRestartedWorkerKeepsItsIdentity(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	before, _ := c.Client.Workers(t.Context())
	c.StopWorker(0)
	testcluster.Eventually(t, 5*time.Second, "worker down", func() bool {
		ws, _ := c.Client.Workers(t.Context())
		return len(ws) == 1 && ws[0].State == devops.WorkerDown
	})
	r := c.CLI(t.Context(), "run", "--worker", "w1", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "w1 is DOWN") {
		t.Errorf("run on a down worker = %d %q", r.Code, r.Stderr)
	}
	c.StartWorker(0)
	c.WaitWorkers(1)
	after, _ := c.Client.Workers(t.Context())
	if len(after) != 1 || after[0].ID != before[0].ID {
		t.Errorf("workers after restart = %+v, want the same single id %s", after, before[0].ID)
	}
}

func TestFullWorkersQueueThenFail(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Capacity: 1})
	r := c.CLI(t.Context(), "run", "--detach", "--", "sleep", "30")
	first := strings.TrimSpace(r.Stdout)
	testcluster.Eventually(t, 5*time.Second, "first running", func() bool {
		p, _ := c.Client.Status(t.Context(), devops.ProcessID(first))
		return p.State == devops.StateRunning
	})
	// Waits as PENDING for the queue timeout, then fails saying so.
	r = c.CLI(t.Context(), "run", "--queue-timeout", "300ms", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "free slot") {
		t.Errorf("queued run = %d %q, want a no-free-slot failure", r.Code, r.Stderr)
	}
	// Waits, saying so, and runs as soon as the slot frees.
	var out, errOut testcluster.SyncBuffer
	done := make(chan int)
	go func() { done <- c.CLIWith(t.Context(), &out, &errOut, nil, "run", "--", "echo", "second") }()
	testcluster.Eventually(t, 5*time.Second, "second pending", func() bool {
		ps, _ := c.Client.Processes(t.Context(), devops.StatePending, "")
		return len(ps) == 1
	})
	if _, err := c.Client.Terminate(t.Context(), devops.ProcessID(first), syscall.SIGKILL, 0); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 0 || out.String() != "second\n" {
		t.Errorf("queued run = %d %q, want 0 second", code, out.String())
	}
	// It said why it waited, and when it ran (it had not run before: no "again").
	if e := errOut.String(); !strings.Contains(e, ": PENDING: waiting: no free slot: all 1 matching workers are full\n") ||
		!strings.Contains(e, ": RUNNING\n") {
		t.Errorf("queued run's stderr does not tell of its wait and its start:\n%s", e)
	}
}

func TestPsAndWorkersList(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2, Labels: func(i int) map[string]string {
		return map[string]string{"zone": string(rune('a' + i))}
	}})
	c.CLI(t.Context(), "run", "--worker", "w2", "--", "true")
	r := c.CLI(t.Context(), "ps", "--worker", "w2", "--state", "succeeded")
	if r.Code != 0 || strings.Count(r.Stdout, "\n") != 2 || !strings.Contains(r.Stdout, "SUCCEEDED") {
		t.Errorf("ps = %d\n%s", r.Code, r.Stdout)
	}
	r = c.CLI(t.Context(), "ps", "--worker", "w1")
	if strings.Count(r.Stdout, "\n") != 1 {
		t.Errorf("ps --worker w1 lists processes of others:\n%s", r.Stdout)
	}
	r = c.CLI(t.Context(), "workers")
	for _, want := range []string{"w1", "w2", "zone=a", "zone=b", "UP", "0/8"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("workers lacks %q:\n%s", want, r.Stdout)
		}
	}
	r = c.CLI(t.Context(), "ps", "--state", "bogus")
	if r.Code == 0 {
		t.Errorf("ps --state bogus exited 0")
	}
}

func tail(s string) string {
	if len(s) > 500 {
		return s[len(s)-500:]
	}
	return s
}

// TestRunAsAnotherUser: --user works on a worker whose data dir it made
// itself. It made it 0700, so no other user could reach the command's
// directory, and every --user command failed with "permission denied".
func TestRunAsAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run as another user")
	}
	// Under a directory other users may pass through, as /var/lib is.
	base, err := os.MkdirTemp("/var/tmp", "devops-runas-")
	if err != nil {
		t.Skipf("no /var/tmp: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	c := testcluster.Start(t, testcluster.Options{Worker: func(i int, cfg *worker.Config) {
		cfg.DataDir = filepath.Join(base, cfg.Name) // made by the worker
	}})
	r := c.CLI(t.Context(), "run", "--user", "nobody", "--", "sh", "-c", "id -u; echo $USER $LOGNAME; touch $HOME/f && echo wrote")
	if r.Code != 0 || r.Stdout != "65534\nnobody nobody\nwrote\n" {
		t.Errorf("run --user nobody = %d %q %q, want 65534, its name and wrote", r.Code, r.Stdout, r.Stderr)
	}
	// Without --user, as the worker: USER is the worker's (root here).
	if r := c.CLI(t.Context(), "run", "--", "sh", "-c", "echo $USER $LOGNAME"); r.Stdout != "root root\n" {
		t.Errorf("run without --user: USER and LOGNAME = %q, want root", r.Stdout)
	}
}

// TestLogsTail: --tail N prints the last N lines, reading back from the end
// (past its first window too), and -f then follows.
func TestLogsTail(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()
	r := c.CLI(ctx, "run", "--detach", "--", "seq", "1", "200000") // 1.3 MB
	id := strings.TrimSpace(r.Stdout)
	c.CLI(ctx, "logs", "-f", id)
	if got := c.CLI(ctx, "logs", "--tail", "3", id); got.Code != 0 || got.Stdout != "199998\n199999\n200000\n" {
		t.Errorf("logs --tail 3 = %d %q %q", got.Code, got.Stdout, got.Stderr)
	}
	if got := c.CLI(ctx, "logs", "-n", "100000", id); strings.Count(got.Stdout, "\n") != 100000 || !strings.HasPrefix(got.Stdout, "100001\n") {
		t.Errorf("logs -n 100000 printed %d lines from %q", strings.Count(got.Stdout, "\n"), got.Stdout[:min(20, len(got.Stdout))])
	}
	if got := c.CLI(ctx, "logs", "-n", "300000", id); strings.Count(got.Stdout, "\n") != 200000 {
		t.Errorf("logs -n 300000 printed %d lines, want all 200000", strings.Count(got.Stdout, "\n"))
	}

	// stdout and stderr are two pipes, read apart: "err" comes after "5"
	// only once "5" is in the output, hence the file "one". Without it, on
	// a loaded machine, "err" came first and was not among the last two.
	r = c.CLI(ctx, "run", "--detach", "--", "sh", "-c",
		"seq 1 5; while [ ! -e one ]; do sleep 0.02; done; echo err >&2; while [ ! -e go ]; do sleep 0.02; done; echo late; exit 4")
	id = strings.TrimSpace(r.Stdout)
	// The command waits in its own directory, its HOME, for the files.
	dir := filepath.Join(c.WorkerDir(0), "processes", id)
	// Deadlines, not waits: two race-detector suites at once on two cores
	// took over 5 s here.
	testcluster.Eventually(t, 20*time.Second, "the first lines", func() bool {
		return strings.Contains(c.CLI(ctx, "logs", id).Stdout, "5\n")
	})
	if err := os.WriteFile(filepath.Join(dir, "one"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 20*time.Second, "the line on stderr", func() bool {
		return strings.Contains(c.CLI(ctx, "logs", id).Stderr, "err")
	})
	var out, errb testcluster.SyncBuffer
	done := make(chan int)
	go func() { done <- c.CLIWith(ctx, &out, &errb, nil, "logs", "-f", "--tail", "2", id) }()
	testcluster.Eventually(t, 20*time.Second, "the tail", func() bool { return strings.Contains(errb.String(), "err") })
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, done, 10*time.Second, "logs -f --tail did not end"); code != 4 || out.String() != "5\nlate\n" || errb.String() != "err\n" {
		t.Errorf("logs -f --tail 2 = %d, stdout %q, stderr %q; want 4, 5 and late, err", code, out.String(), errb.String())
	}

	if got := c.CLI(ctx, "logs", "--tail", "2", "--from", "3", id); got.Code == 0 {
		t.Errorf("logs --tail --from = %d, want refused", got.Code)
	}
}

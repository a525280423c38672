package executor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
)

// helperEnv selects a helper the test binary runs instead of the tests.
const helperEnv = "DEVOPS_EXECUTOR_TEST_HELPER"

func TestMain(m *testing.M) {
	// The executor re-executes this binary as its init, like cmd/devops.
	if len(os.Args) > 1 && os.Args[1] == "__init" {
		os.Exit(executor.RunInit(os.Args[2:]))
	}
	switch os.Getenv(helperEnv) {
	case "memhog":
		memHog()
	case "warmpool":
		warmPool()
	}
	os.Exit(m.Run())
}

// memHog allocates and touches memory until it is killed.
func memHog() {
	var hold [][]byte
	for range 4096 { // 4 GiB at most: it must not outlive a broken limit
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		hold = append(hold, b)
	}
	fmt.Println("allocated", len(hold), "MiB")
	os.Exit(0)
}

// warmPool is a worker for TestPoolEndsWithWorker: an executor with warm
// shims in the directory $DEVOPS_TEST_ROOT; it prints the pids of the shims
// and inits once they are ready and waits to be killed.
func warmPool() {
	e, err := executor.New(executor.Config{
		Root:       os.Getenv("DEVOPS_TEST_ROOT"),
		CgroupRoot: fmt.Sprintf("devops-test-%d-warmpool", os.Getpid()),
		InitPath:   os.Args[0],
		NoDocker:   true,
		WarmShims:  2,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Killed, it cannot remove its cgroup subtree: the test does.
	bases := strings.Join(executor.CgroupBases(e), "\n")
	if err := os.WriteFile(os.Getenv("DEVOPS_TEST_BASES"), []byte(bases), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if shims, inits := executor.WarmShims(e); len(shims) == 2 {
			fmt.Println(shims[0], shims[1], inits[0], inits[1])
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "no warm shims after 30s")
			os.Exit(1)
		}
	}
	if os.Getenv("DEVOPS_TEST_RUN") != "" {
		// A process on the oldest shim, which ends after the worker died.
		shims, _ := executor.WarmShims(e)
		dir := filepath.Join(os.Getenv("DEVOPS_TEST_ROOT"), "state")
		if _, err := e.StartSupervised(context.Background(), "runs-on", devops.Spec{Argv: []string{"sleep", "1"}}, dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(shims[0], dir)
	}
	for {
		time.Sleep(time.Hour)
	}
}

// syncBuffer is a writer tests can read while a process still writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newExecutor makes an executor with its own root and cgroup subtree.
func newExecutor(tb testing.TB, root string, max devops.Limits) *executor.Executor {
	tb.Helper()
	return newExecutorConfig(tb, executor.Config{Root: root, MaxLimits: max})
}

// newExecutorConfig makes an executor of cfg with its own root (unless cfg
// names one) and cgroup subtree; Close is a cleanup of the test.
func newExecutorConfig(tb testing.TB, cfg executor.Config) *executor.Executor {
	tb.Helper()
	if cfg.Root == "" {
		cfg.Root = tb.TempDir()
	}
	init, err := filepath.Abs(os.Args[0])
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.CgroupRoot = fmt.Sprintf("devops-test-%d-%s", os.Getpid(), strings.ReplaceAll(tb.Name(), "/", "_"))
	cfg.InitPath = init
	e, err := executor.New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		removeCgroupBases(tb, executor.CgroupBases(e))
	})
	return e
}

// removeCgroupBases removes a test executor's cgroup subtrees. A worker
// leaves its subtree for the next one; a test's is its own, and would pile
// up on the machine run after run. A shim that outlived the executor may
// still be removing its process's cgroup in it: this waits a little for
// that, and reports a subtree it could not remove.
func removeCgroupBases(tb testing.TB, dirs []string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, dir := range dirs {
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				tb.Errorf("remove the test's cgroup subtree: %v", err)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// result is the outcome of one process run to its end.
type result struct {
	status         devops.ExitStatus
	stdout, stderr string
}

// run starts spec and waits for its end.
func run(tb testing.TB, e *executor.Executor, id string, spec devops.Spec) result {
	tb.Helper()
	var stdout, stderr syncBuffer
	p, err := e.Start(tb.Context(), devops.ProcessID(id), spec, &stdout, &stderr)
	if err != nil {
		tb.Fatalf("Start(%q): %v", spec.Argv, err)
	}
	st := p.Wait()
	return result{status: st, stdout: stdout.String(), stderr: stderr.String()}
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		tb.Skip("needs root on Linux (namespaces, cgroups, run-as)")
	}
}

func requireCgroups(tb testing.TB, e *executor.Executor) {
	tb.Helper()
	if e.Fingerprint().Cgroups == "" {
		tb.Skip("needs a writable cgroup hierarchy")
	}
}

func TestExit(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	notExec := filepath.Join(t.TempDir(), "notexec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		argv       []string
		dir        string
		state      devops.State
		code       int
		signal     int
		reason     string
		stdout     string
		stderr     string
		stderrPart string
	}{
		{name: "success", argv: []string{"true"}, state: devops.StateSucceeded},
		{name: "exit code", argv: []string{"sh", "-c", "exit 3"}, state: devops.StateFailed, code: 3},
		{name: "streams apart", argv: []string{"sh", "-c", `printf 'out\000put\n'; printf 'err\n' >&2; printf 'more'`},
			state: devops.StateSucceeded, stdout: "out\x00put\nmore", stderr: "err\n"},
		{name: "killed itself", argv: []string{"sh", "-c", "kill -9 $$"}, state: devops.StateFailed, signal: 9},
		{name: "not found", argv: []string{"no-such-command-xyz"}, state: devops.StateFailed, code: 127,
			reason: "command not found", stderr: "devops: no-such-command-xyz: command not found\n"},
		{name: "not found by path", argv: []string{"/no/such/file"}, state: devops.StateFailed, code: 127,
			stderrPart: "devops: /no/such/file: "},
		{name: "not executable", argv: []string{"./notexec"}, dir: filepath.Dir(notExec), state: devops.StateFailed, code: 126,
			stderrPart: "devops: ./notexec: permission denied"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, e, fmt.Sprintf("exit-%d", i), devops.Spec{Argv: tt.argv, Dir: tt.dir})
			st := r.status
			if st.State != tt.state || st.Code != tt.code || st.Signal != tt.signal {
				t.Errorf("%q ended %v code %d signal %d, want %v code %d signal %d (reason %q, stderr %q)",
					tt.argv, st.State, st.Code, st.Signal, tt.state, tt.code, tt.signal, st.Reason, r.stderr)
			}
			if tt.reason != "" && st.Reason != tt.reason {
				t.Errorf("%q reason = %q, want %q", tt.argv, st.Reason, tt.reason)
			}
			if tt.stdout != "" && r.stdout != tt.stdout {
				t.Errorf("%q stdout = %q, want %q", tt.argv, r.stdout, tt.stdout)
			}
			if tt.stderr != "" && r.stderr != tt.stderr {
				t.Errorf("%q stderr = %q, want %q", tt.argv, r.stderr, tt.stderr)
			}
			if !strings.Contains(r.stderr, tt.stderrPart) {
				t.Errorf("%q stderr = %q, want it to contain %q", tt.argv, r.stderr, tt.stderrPart)
			}
			if st.EndedAt.IsZero() {
				t.Errorf("%q EndedAt is zero", tt.argv)
			}
		})
	}
}

func TestStartInvalid(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	tests := []struct {
		name string
		id   string
		spec devops.Spec
	}{
		{"empty argv", "a", devops.Spec{}},
		{"bad id", "../x", devops.Spec{Argv: []string{"true"}}},
		{"negative limit", "b", devops.Spec{Argv: []string{"true"}, Limits: devops.Limits{Pids: -1}}},
		{"unknown user", "c", devops.Spec{Argv: []string{"true"}, User: "no-such-user-xyz"}},
		{"relative dir", "d", devops.Spec{Argv: []string{"true"}, Dir: "rel"}},
		{"missing dir", "e", devops.Spec{Argv: []string{"true"}, Dir: "/no/such/dir"}},
		{"image", "f", devops.Spec{Argv: []string{"true"}, Image: "alpine"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.Start(t.Context(), devops.ProcessID(tt.id), tt.spec, nil, nil)
			if !errors.Is(err, devops.ErrInvalid) {
				t.Errorf("Start(%+v) = %v, want ErrInvalid", tt.spec, err)
			}
		})
	}
}

func TestCleanEnv(t *testing.T) {
	t.Setenv("DEVOPS_TEST_SECRET", "hunter2")
	e := newExecutor(t, "", devops.Limits{})
	r := run(t, e, "env-1", devops.Spec{Argv: []string{"env"}, Env: map[string]string{"FOO": "bar"}})
	if r.status.State != devops.StateSucceeded {
		t.Fatalf("env ended %+v, stderr %q", r.status, r.stderr)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	if strings.Contains(r.stdout, "hunter2") {
		t.Errorf("env shows the worker's secret:\n%s", r.stdout)
	}
	want := []string{"PATH", "HOME", "USER", "LOGNAME", "DEVOPS_PROCESS_ID", "FOO"}
	if len(got) != len(want) {
		t.Errorf("env = %v, want only %v", got, want)
	}
	self, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if got["DEVOPS_PROCESS_ID"] != "env-1" || got["FOO"] != "bar" || got["PATH"] != "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ||
		got["USER"] != self.Username || got["LOGNAME"] != self.Username {
		t.Errorf("env = %v", got)
	}
	// The spec may name the user otherwise.
	r = run(t, e, "env-2", devops.Spec{Argv: []string{"sh", "-c", "echo $USER $LOGNAME"}, Env: map[string]string{"USER": "deploy"}})
	if r.stdout != "deploy "+self.Username+"\n" {
		t.Errorf("USER set by the spec: %q", r.stdout)
	}
}

func TestWorkDir(t *testing.T) {
	root := t.TempDir()
	e := newExecutor(t, root, devops.Limits{})
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			id := fmt.Sprintf("dir-%v", keep)
			dir := filepath.Join(root, id)
			r := run(t, e, id, devops.Spec{Argv: []string{"sh", "-c", "pwd; echo $HOME; echo hi > f"}, KeepDir: keep})
			if want := dir + "\n" + dir + "\n"; r.stdout != want {
				t.Errorf("pwd, HOME = %q, want %q (stderr %q)", r.stdout, want, r.stderr)
			}
			_, err := os.Stat(filepath.Join(dir, "f"))
			if keep && err != nil {
				t.Errorf("KeepDir: %v", err)
			}
			if !keep && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("directory left behind: %v", err)
			}
		})
	}
	t.Run("spec dir", func(t *testing.T) {
		other := t.TempDir()
		r := run(t, e, "dir-spec", devops.Spec{Argv: []string{"sh", "-c", "pwd; echo $HOME"}, Dir: other})
		if want := other + "\n" + filepath.Join(root, "dir-spec") + "\n"; r.stdout != want {
			t.Errorf("pwd, HOME = %q, want %q", r.stdout, want)
		}
	})
}

func TestOutputLimit(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	r := run(t, e, "out-1", devops.Spec{
		// More than an output pipe holds (256 KiB), so head ends only once
		// the stdout reader has taken most of it, long past the limit: the
		// later stderr line can never come first (with 100 KB it could).
		Argv:   []string{"sh", "-c", "yes | head -c 1000000; echo done >&2"},
		Limits: devops.Limits{MaxOutputBytes: 1000},
	})
	if len(r.stdout) != 1000 {
		t.Errorf("stdout has %d bytes, want 1000", len(r.stdout))
	}
	if want := "\n[devops: output truncated at 1000 bytes]\n"; r.stderr != want {
		t.Errorf("stderr = %q, want %q", r.stderr, want)
	}
	if r.status.State != devops.StateSucceeded || r.status.Reason != executor.ReasonOutputTruncated {
		t.Errorf("status = %+v, want SUCCEEDED with reason %q", r.status, executor.ReasonOutputTruncated)
	}
}

func TestTimeout(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	tests := []struct {
		name   string
		argv   []string
		signal int
	}{
		{"sigterm", []string{"sleep", "600"}, 15},
		{"ignores sigterm", []string{"sh", "-c", `trap "" TERM; sleep 600`}, 9},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			// Long enough for sh to set its trap even on a loaded machine.
			r := run(t, e, fmt.Sprintf("timeout-%d", i), devops.Spec{Argv: tt.argv, Timeout: time.Second, Grace: 300 * time.Millisecond})
			if r.status.State != devops.StateTimedOut || r.status.Signal != tt.signal {
				t.Errorf("%q ended %+v, want TIMED_OUT signal %d", tt.argv, r.status, tt.signal)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// sleepers returns the pids of processes whose command line is argv.
func sleepers(argv ...string) []int {
	want := strings.Join(argv, "\x00") + "\x00"
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		var pid int
		if _, err := fmt.Sscan(ent.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err == nil && string(b) == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestNoSurvivors(t *testing.T) {
	modes := []struct {
		name          string
		noNamespaces  bool
		needsCgroups  bool
		needsRootMode bool
	}{
		{name: "default"},
		{name: "cgroup only", noNamespaces: true, needsCgroups: true, needsRootMode: true},
	}
	for mi, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			if m.needsRootMode {
				requireRoot(t)
			}
			e := newExecutor(t, "", devops.Limits{})
			if m.needsCgroups {
				requireCgroups(t, e)
			}
			if m.noNamespaces {
				executor.WithoutNamespaces(e)
			}
			t.Run("terminate", func(t *testing.T) {
				arg := fmt.Sprintf("600.%d1", mi)
				var out syncBuffer
				p, err := e.Start(t.Context(), devops.ProcessID(fmt.Sprintf("surv-%d-t", mi)), devops.Spec{
					Argv: []string{"sh", "-c", fmt.Sprintf("sleep %s & setsid sleep %s & wait", arg, arg)},
				}, &out, &out)
				if err != nil {
					t.Fatal(err)
				}
				waitFor(t, "both sleeps", 10*time.Second, func() bool { return len(sleepers("sleep", arg)) == 2 })
				p.Terminate(syscall.SIGTERM, 2*time.Second)
				st := p.Wait()
				if st.State != devops.StateTerminated || st.Signal != 15 {
					t.Errorf("ended %+v, want TERMINATED signal 15", st)
				}
				if left := sleepers("sleep", arg); len(left) != 0 {
					t.Errorf("survivors after Terminate: %v", left)
				}
			})
			t.Run("exit", func(t *testing.T) {
				arg := fmt.Sprintf("600.%d2", mi)
				var out syncBuffer
				p, err := e.Start(t.Context(), devops.ProcessID(fmt.Sprintf("surv-%d-e", mi)), devops.Spec{
					// The orphan holds stdout open: Wait must not hang on it.
					Argv: []string{"sh", "-c", fmt.Sprintf("setsid sleep %s & sleep %s & while [ $(ps -e -o args | grep -c '^sleep %s$') -lt 2 ]; do sleep 0.01; done; echo started", arg, arg, arg)},
				}, &out, &out)
				if err != nil {
					t.Fatal(err)
				}
				st := p.Wait()
				if st.State != devops.StateSucceeded || out.String() != "started\n" {
					t.Errorf("ended %+v with output %q, want SUCCEEDED, started", st, out.String())
				}
				if left := sleepers("sleep", arg); len(left) != 0 {
					t.Errorf("survivors after exit: %v", left)
				}
			})
			t.Run("terminate twice and wait twice", func(t *testing.T) {
				p, err := e.Start(t.Context(), devops.ProcessID(fmt.Sprintf("surv-%d-w", mi)), devops.Spec{
					Argv: []string{"sleep", "600"},
				}, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				sts := make([]devops.ExitStatus, 3)
				for i := range sts {
					wg.Go(func() { sts[i] = p.Wait() })
				}
				p.Terminate(syscall.SIGKILL, 0)
				p.Terminate(syscall.SIGTERM, time.Second)
				wg.Wait()
				p.Terminate(syscall.SIGTERM, time.Second) // after the end: nothing
				for _, st := range sts {
					if st != sts[0] || st.State != devops.StateTerminated || st.Signal != 9 {
						t.Errorf("Wait = %+v, want TERMINATED signal 9 for all (%+v)", st, sts)
					}
				}
			})
		})
	}
}

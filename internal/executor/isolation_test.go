package executor_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devops-platform/devops"
)

func TestFingerprint(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	fp := e.Fingerprint()
	if fp.OS != runtime.GOOS || fp.Arch != runtime.GOARCH || fp.CPUs < 1 || fp.MemoryBytes == 0 {
		t.Errorf("Fingerprint() = %+v", fp)
	}
	t.Logf("fingerprint: %+v", fp)
	if runtime.GOOS == "linux" && os.Geteuid() == 0 && (!fp.Namespaces || !fp.RunAs) {
		t.Errorf("Fingerprint() = %+v, want namespaces and run-as as root", fp)
	}
}

func TestMemoryLimit(t *testing.T) {
	requireRoot(t)
	e := newExecutor(t, "", devops.Limits{})
	requireCgroups(t, e)
	self, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, e, "oom-1", devops.Spec{
		Argv: []string{self},
		// The test binary's directory is under /tmp: Dir binds it into the
		// private /tmp.
		Dir:     filepath.Dir(self),
		Env:     map[string]string{helperEnv: "memhog"},
		Timeout: 30 * time.Second,
		Limits:  devops.Limits{MemoryBytes: 64 << 20},
	})
	st := r.status
	if st.State != devops.StateFailed || st.Signal != 9 || st.Reason != "OOM_KILLED" {
		t.Errorf("memory hog ended %+v (stdout %q, stderr %q), want FAILED signal 9 OOM_KILLED", st, r.stdout, r.stderr)
	}
	if st.PeakMemory < 32<<20 || st.PeakMemory > 80<<20 {
		t.Errorf("PeakMemory = %d, want about 64 MiB", st.PeakMemory)
	}
}

func TestPidsLimit(t *testing.T) {
	requireRoot(t)
	e := newExecutor(t, "", devops.Limits{})
	requireCgroups(t, e)
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash")
	}
	const arg = "10.456"
	var out syncBuffer
	p, err := e.Start(t.Context(), "pids-1", devops.Spec{
		// bash, unlike dash, goes on after a failed fork: the bomb keeps
		// pressing on the limit until the timeout.
		Argv:    []string{"bash", "-c", "while :; do sleep " + arg + " & done"},
		Timeout: 30 * time.Second, // ended below once it pressed on the limit
		Grace:   time.Second,
		Limits:  devops.Limits{Pids: 20},
	}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan devops.ExitStatus)
	go func() { done <- p.Wait() }()
	most, stopped := 0, false
	for {
		select {
		case st := <-done:
			// bash is one of the 20.
			if most > 19 {
				t.Errorf("the tree reached %d sleeps, want at most 19", most)
			}
			if most < 10 {
				t.Errorf("at most %d sleeps seen running, want the bomb to reach the limit", most)
			}
			if !strings.Contains(strings.ToLower(out.String()), "fork") {
				t.Errorf("output %q does not tell of a failed fork", out.String())
			}
			t.Logf("ended %+v after at most %d sleeps", st, most)
			return
		default:
		}
		most = max(most, len(sleepers("sleep", arg)))
		if !stopped && most >= 15 && strings.Contains(strings.ToLower(out.String()), "fork") {
			// Pressed on the limit and refused: seen enough, however slow
			// the machine was to get there.
			p.Terminate(syscall.SIGKILL, 0)
			stopped = true
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCPULimit(t *testing.T) {
	requireRoot(t)
	e := newExecutor(t, "", devops.Limits{})
	requireCgroups(t, e)
	r := run(t, e, "cpu-1", devops.Spec{
		Argv:    []string{"sh", "-c", "while :; do :; done"},
		Timeout: 2 * time.Second,
		Grace:   time.Second,
		Limits:  devops.Limits{CPUs: 0.5},
	})
	if r.status.State != devops.StateTimedOut {
		t.Errorf("busy loop ended %+v, want TIMED_OUT", r.status)
	}
	if cpu := r.status.CPUTime; cpu < 300*time.Millisecond || cpu > 1300*time.Millisecond {
		t.Errorf("CPU time %v over 2s at 0.5 CPU, want about 1s", cpu)
	}
}

func TestMaxLimits(t *testing.T) {
	requireRoot(t)
	e := newExecutor(t, "", devops.Limits{MaxOutputBytes: 10})
	r := run(t, e, "max-1", devops.Spec{Argv: []string{"echo", "hello world, longer than ten"}})
	if r.stdout != "hello worl" || r.status.Reason != "output truncated" {
		t.Errorf("capped output = %q, %+v; want 10 bytes, output truncated", r.stdout, r.status)
	}
}

func TestPIDNamespace(t *testing.T) {
	requireRoot(t)
	e := newExecutor(t, "", devops.Limits{})
	r := run(t, e, "pidns-0123456789ab", devops.Spec{Argv: []string{"sh", "-c", "echo $PPID; hostname; ps -e -o pid= | wc -l; ls /proc | grep -c '^[0-9]'"}})
	lines := strings.Fields(r.stdout)
	if len(lines) != 4 {
		t.Fatalf("output %q (stderr %q)", r.stdout, r.stderr)
	}
	if lines[0] != "1" {
		t.Errorf("parent pid = %s, want 1", lines[0])
	}
	if lines[1] != "0123456789ab" {
		t.Errorf("hostname = %s, want 0123456789ab", lines[1])
	}
	// init, sh, and the pipeline in flight: a handful, never the host's.
	for _, n := range lines[2:] {
		var k int
		fmt.Sscan(n, &k)
		if k < 2 || k > 5 {
			t.Errorf("process count %d, want only its own tree (output %q)", k, r.stdout)
		}
	}
}

func TestPrivateTmp(t *testing.T) {
	requireRoot(t)
	e := newExecutor(t, "", devops.Limits{})
	mark := fmt.Sprintf("/tmp/devops-mark-%d", os.Getpid())
	var out syncBuffer
	a, err := e.Start(t.Context(), "tmp-a", devops.Spec{
		Argv: []string{"sh", "-c", "echo x > " + mark + " && echo ready && exec sleep 600"},
	}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Wait()
	defer a.Terminate(syscall.SIGKILL, 0)
	waitFor(t, "the mark written", 10*time.Second, func() bool { return out.String() == "ready\n" })
	r := run(t, e, "tmp-b", devops.Spec{Argv: []string{"sh", "-c", "test -e " + mark + " && echo visible || echo invisible"}})
	if r.stdout != "invisible\n" {
		t.Errorf("another process sees %s: %q", mark, r.stdout)
	}
	if _, err := os.Stat(mark); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the host sees %s: %v", mark, err)
	}
}

func TestRunAs(t *testing.T) {
	requireRoot(t)
	// Not under /tmp, so the processes share the view of Root; searchable
	// by the users the processes run as.
	root, err := os.MkdirTemp("/var/tmp", "devops-executor-test-")
	if err != nil {
		t.Skipf("no /var/tmp: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o711); err != nil {
		t.Fatal(err)
	}
	e := newExecutor(t, root, devops.Limits{})

	r := run(t, e, "user-1", devops.Spec{Argv: []string{"sh", "-c", "id -u; id -g; stat -c %u $HOME; touch $HOME/f && echo ok"}, User: "nobody"})
	if r.stdout != "65534\n65534\n65534\nok\n" {
		t.Errorf("as nobody: %q (stderr %q, %+v)", r.stdout, r.stderr, r.status)
	}
	r = run(t, e, "user-2", devops.Spec{Argv: []string{"sh", "-c", "id -u; id -g"}, User: "65533:65534"})
	if r.stdout != "65533\n65534\n" {
		t.Errorf("as 65533:65534: %q (stderr %q, %+v)", r.stdout, r.stderr, r.status)
	}

	var out syncBuffer
	a, err := e.Start(t.Context(), "user-a", devops.Spec{Argv: []string{"sh", "-c", "echo $HOME; exec sleep 600"}, User: "nobody"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Wait()
	defer a.Terminate(syscall.SIGKILL, 0)
	waitFor(t, "HOME printed", 10*time.Second, func() bool { return strings.HasSuffix(out.String(), "\n") })
	home := strings.TrimSpace(out.String())
	r = run(t, e, "user-b", devops.Spec{Argv: []string{"ls", home}, User: "65533"})
	if r.status.State != devops.StateFailed || !strings.Contains(r.stderr, "ermission denied") {
		t.Errorf("another user lists %s: %+v stdout %q stderr %q", home, r.status, r.stdout, r.stderr)
	}
}

func TestRunAsNotRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root: switching users is allowed")
	}
	e := newExecutor(t, "", devops.Limits{})
	_, err := e.Start(t.Context(), "x", devops.Spec{Argv: []string{"true"}, User: "nobody"}, nil, nil)
	if !errors.Is(err, devops.ErrInvalid) {
		t.Errorf("Start as nobody without root = %v, want ErrInvalid", err)
	}
}

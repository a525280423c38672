package executor_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
)

// readFrames decodes an output file into its stdout and stderr text.
func readFrames(tb testing.TB, dir string) (stdout, stderr string) {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(dir, executor.OutputFile))
	if err != nil {
		tb.Fatal(err)
	}
	var out [3]strings.Builder
	for len(b) >= executor.FrameHeader {
		n := int(binary.BigEndian.Uint32(b[1:executor.FrameHeader]))
		if len(b) < executor.FrameHeader+n {
			tb.Fatalf("partial frame in a finished output")
		}
		out[b[0]].Write(b[executor.FrameHeader : executor.FrameHeader+n])
		b = b[executor.FrameHeader+n:]
	}
	if len(b) != 0 {
		tb.Fatalf("%d stray bytes at the end of the output", len(b))
	}
	return out[devops.Stdout].String(), out[devops.Stderr].String()
}

// waitEnd fails the test when p does not end within d.
func waitEnd(tb testing.TB, p *executor.Process, d time.Duration) devops.ExitStatus {
	tb.Helper()
	select {
	case <-p.Done():
		return p.Wait()
	case <-time.After(d):
		tb.Fatalf("process did not end within %v", d)
		return devops.ExitStatus{}
	}
}

func TestSupervisedOutputAndExit(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	dir := filepath.Join(t.TempDir(), "p1")
	p, err := e.StartSupervised(t.Context(), "p1", devops.Spec{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	st := waitEnd(t, p, 10*time.Second)
	if st.State != devops.StateFailed || st.Code != 3 || st.EndedAt.IsZero() {
		t.Errorf("status = %+v, want FAILED 3", st)
	}
	if o, e := readFrames(t, dir); o != "out\n" || e != "err\n" {
		t.Errorf("output = %q, %q", o, e)
	}
	// A later worker finds it ended, with the same status.
	q, err := e.Adopt("p1", dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Wait(); got.State != st.State || got.Code != st.Code || !got.EndedAt.Equal(st.EndedAt) {
		t.Errorf("adopted status = %+v, want %+v", got, st)
	}
}

func TestSupervisedTruncates(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	dir := filepath.Join(t.TempDir(), "p")
	spec := devops.Spec{Argv: []string{"sh", "-c", "echo 0123456789"}, Limits: devops.Limits{MaxOutputBytes: 4}}
	p, err := e.StartSupervised(t.Context(), "p", spec, dir)
	if err != nil {
		t.Fatal(err)
	}
	st := waitEnd(t, p, 10*time.Second)
	o, _ := readFrames(t, dir)
	if o != "0123" || !strings.Contains(st.Reason, executor.ReasonOutputTruncated) {
		t.Errorf("output %q, reason %q", o, st.Reason)
	}
}

func TestSupervisedInvalid(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	_, err := e.StartSupervised(t.Context(), "p", devops.Spec{Argv: []string{"true"}, Image: "x"}, filepath.Join(t.TempDir(), "p"))
	if !errors.Is(err, devops.ErrInvalid) {
		t.Errorf("StartSupervised with an image = %v, want ErrInvalid", err)
	}
}

// TestAdoptRunning starts a process, forgets the handle as a dying worker
// would, adopts it and terminates it through the new handle.
func TestAdoptRunning(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	dir := filepath.Join(t.TempDir(), "p")
	p, err := e.StartSupervised(t.Context(), "p", devops.Spec{Argv: []string{"sh", "-c", "echo up; exec sleep 60"}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	q, err := e.Adopt("p", dir)
	if err != nil {
		t.Fatal(err)
	}
	if q.Pid() != p.Pid() || q.StartedAt().IsZero() {
		t.Errorf("adopted pid %d, want %d", q.Pid(), p.Pid())
	}
	select {
	case <-q.Done():
		t.Fatalf("adopted process ended: %+v", q.Wait())
	default:
	}
	// Once it runs: a signal before the init forwards signals is lost (as
	// with Start).
	deadline := time.Now().Add(10 * time.Second)
	for o, _ := readFrames(t, dir); o != "up\n"; o, _ = readFrames(t, dir) {
		if time.Now().After(deadline) {
			t.Fatalf("output = %q, want up", o)
		}
		time.Sleep(5 * time.Millisecond)
	}
	q.Terminate(syscall.SIGTERM, 5*time.Second)
	st := waitEnd(t, q, 10*time.Second)
	if st.State != devops.StateTerminated || st.Signal != int(syscall.SIGTERM) {
		t.Errorf("status = %+v, want TERMINATED by SIGTERM", st)
	}
	if got := waitEnd(t, p, 5*time.Second); got.State != devops.StateTerminated {
		t.Errorf("first handle saw %+v", got)
	}
}

// TestSupervisedTimeout: the shim enforces the timeout by itself.
func TestSupervisedTimeout(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	dir := filepath.Join(t.TempDir(), "p")
	p, err := e.StartSupervised(t.Context(), "p", devops.Spec{Argv: []string{"sleep", "60"}, Timeout: 200 * time.Millisecond, Grace: time.Second}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateTimedOut {
		t.Errorf("status = %+v, want TIMED_OUT", st)
	}
}

// TestAdoptLeftover: a directory whose shim is gone without a status is not
// found, and what it ran is killed.
func TestAdoptLeftover(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	dir := filepath.Join(t.TempDir(), "p")
	if _, err := e.Adopt("p", dir); !errors.Is(err, devops.ErrNotFound) {
		t.Errorf("Adopt of nothing = %v, want ErrNotFound", err)
	}
	p, err := e.StartSupervised(t.Context(), "p", devops.Spec{Argv: []string{"sleep", "60"}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	// Kill the shim alone, as if it crashed; its command goes on for now.
	b, err := os.ReadFile(filepath.Join(dir, "shim.json"))
	if err != nil {
		t.Fatal(err)
	}
	var shimPid int
	if i := strings.Index(string(b), `"pid":`); i >= 0 {
		for _, c := range string(b[i+6:]) {
			if c < '0' || c > '9' {
				break
			}
			shimPid = shimPid*10 + int(c-'0')
		}
	}
	if shimPid == 0 {
		t.Fatalf("no shim pid in %s", b)
	}
	syscall.Kill(shimPid, syscall.SIGKILL)
	if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateFailed {
		t.Errorf("status after the shim died = %+v, want FAILED", st)
	}
	if _, err := e.Adopt("p", dir); !errors.Is(err, devops.ErrNotFound) {
		t.Errorf("Adopt with a dead shim = %v, want ErrNotFound", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(p.Pid()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(p.Pid()) {
		t.Errorf("the leftover command %d still runs", p.Pid())
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}

// A shim writes the status before it removes the process's cgroup and
// directory; one killed in between leaves them, and Adopt removes them.
func TestAdoptEndedLeftover(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	dir := filepath.Join(t.TempDir(), "p")
	p, err := e.StartSupervised(t.Context(), "p", devops.Spec{Argv: []string{"true"}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateSucceeded {
		t.Fatalf("status = %+v", st)
	}
	var state struct {
		Pid    int               `json:"pid"`
		Home   string            `json:"home"`
		Cgroup map[string]string `json:"cgroup"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "shim.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &state); err != nil || state.Home == "" {
		t.Fatalf("shim.json %s: %v", b, err)
	}
	waitFor(t, "the shim's exit", 10*time.Second, func() bool { return !alive(state.Pid) })
	// What the shim would have left had it died between the two.
	left := []string{state.Home}
	for _, d := range state.Cgroup {
		left = append(left, d)
	}
	for _, d := range left {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a, err := e.Adopt("p", dir)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if st := a.Wait(); st.State != devops.StateSucceeded {
		t.Errorf("adopted status = %+v, want SUCCEEDED", st)
	}
	for _, d := range left {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Adopt: %v, want it removed", d, err)
		}
	}
}

// TestStopDuringColdStart: a stop that comes right as a cold init starts
// (a timeout of 1 µs) ends the process as stopped by the signal: not lost
// (the kernel drops what a namespace's init does not catch, so before the
// init's runtime installed its handlers the stop waits for them; sent
// anyway, only the grace's SIGKILL, a minute here, would end it), and not
// the exit code 2 Go's runtime gives a PID 1 that cannot die of a signal.
func TestStopDuringColdStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the init is PID 1 of the process's namespaces")
	}
	e := newExecutorConfig(t, executor.Config{})
	for i := range 3 {
		p, _ := startSupervised(t, e, fmt.Sprintf("early-stop-%d", i), devops.Spec{Argv: []string{"sleep", "60"}, Timeout: time.Microsecond, Grace: time.Minute})
		st := waitEnd(t, p, 20*time.Second)
		if st.State != devops.StateTimedOut || st.Signal != int(syscall.SIGTERM) || st.Code != 0 {
			t.Errorf("status = %+v, want TIMED_OUT by SIGTERM with code 0", st)
		}
	}
}

// TestStopDuringWarmStart: a stop that reaches a warm shim's init right as
// it gets its command is not lost: the command gets the signal once it
// runs (or never runs), long before the grace's SIGKILL.
func TestStopDuringWarmStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the init is PID 1 of the process's namespaces")
	}
	e := newExecutorConfig(t, executor.Config{WarmShims: 1})
	for i := range 3 {
		waitWarm(t, e, 1)
		p, _ := startSupervised(t, e, fmt.Sprintf("warm-stop-%d", i), devops.Spec{Argv: []string{"sleep", "60"}, Timeout: time.Millisecond, Grace: time.Minute})
		if !p.Pooled() {
			t.Errorf("start %d did not take a warm shim", i)
		}
		st := waitEnd(t, p, 20*time.Second)
		if st.State != devops.StateTimedOut || st.Signal != int(syscall.SIGTERM) || st.Code != 0 {
			t.Errorf("status = %+v, want TIMED_OUT by SIGTERM with code 0", st)
		}
	}
}

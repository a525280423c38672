//go:build linux

// Containers run under shims too (StartSupervised), which need Linux.

package executor_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
)

// testImage is the image scripts/docker-base.sh builds locally from
// Debian's busybox-static: these machines have no registry.
const testImage = "devops-base:busybox"

// requireImage skips the test unless e reaches a Docker engine that holds
// testImage (built here when missing), and returns a client of that engine.
func requireImage(tb testing.TB, e *executor.Executor) *client.Client {
	tb.Helper()
	if !e.Fingerprint().Docker {
		tb.Skip("needs a Docker engine (none answered)")
	}
	c, err := client.New(client.FromEnv)
	if err != nil {
		tb.Skipf("needs a Docker client: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.ImageInspect(ctx, testImage); err != nil {
		out, berr := exec.Command("bash", "../../scripts/docker-base.sh", testImage).CombinedOutput()
		if berr != nil {
			tb.Skipf("needs image %s, which could not be built (%v): %s", testImage, berr, out)
		}
	}
	return c
}

// uniqueID names a process, and so its container, apart from those of
// other test binaries sharing the engine.
func uniqueID(tb testing.TB, name string) devops.ProcessID {
	return devops.ProcessID(fmt.Sprintf("t%d-%s", os.Getpid(), name))
}

// waitRemoved fails the test unless the container of id is gone within d.
func waitRemoved(tb testing.TB, c *client.Client, id devops.ProcessID, d time.Duration) {
	tb.Helper()
	waitFor(tb, "container of "+string(id)+" removed", d, func() bool {
		_, err := c.ContainerInspect(context.Background(), "devops-"+string(id), client.ContainerInspectOptions{})
		return cerrdefs.IsNotFound(err)
	})
}

func TestContainerOutputAndExit(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	c := requireImage(t, e)
	t.Setenv("DEVOPS_TEST_SECRET", "hunter2") // the worker's: must not leak
	tests := []struct {
		name           string
		spec           devops.Spec
		state          devops.State
		code, signal   int
		stdout, stderr string
	}{
		{name: "streams apart", spec: devops.Spec{Argv: []string{"sh", "-c", `printf 'out\000put\n'; printf 'err\n' >&2; printf 'more'; exit 3`}},
			state: devops.StateFailed, code: 3, stdout: "out\x00put\nmore", stderr: "err\n"},
		{name: "env", spec: devops.Spec{Argv: []string{"sh", "-c", `echo "$A $DEVOPS_TEST_SECRET"; test "$DEVOPS_PROCESS_ID" != ""`}, Env: map[string]string{"A": "a b"}},
			state: devops.StateSucceeded, stdout: "a b \n"},
		{name: "dir", spec: devops.Spec{Argv: []string{"pwd"}, Dir: "/var/tmp/x"}, state: devops.StateSucceeded, stdout: "/var/tmp/x\n"},
		{name: "user", spec: devops.Spec{Argv: []string{"id", "-u"}, User: "nobody"}, state: devops.StateSucceeded, stdout: "65534\n"},
		{name: "killed itself", spec: devops.Spec{Argv: []string{"sh", "-c", "kill -9 $$"}}, state: devops.StateFailed, code: 137},
		{name: "not found", spec: devops.Spec{Argv: []string{"no-such-command-xyz"}}, state: devops.StateFailed, code: 127},
		{name: "stdin", spec: devops.Spec{Argv: []string{"sh", "-c", `read a; echo "got $a"; cat`}, Stdin: []byte("first\nthe rest")},
			state: devops.StateSucceeded, stdout: "got first\nthe rest"},
		{name: "no stdin", spec: devops.Spec{Argv: []string{"sh", "-c", "cat; echo end"}}, state: devops.StateSucceeded, stdout: "end\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := uniqueID(t, strings.ReplaceAll(tt.name, " ", "-"))
			tt.spec.Image = testImage
			r := run(t, e, string(id), tt.spec)
			st := r.status
			if st.State != tt.state || st.Code != tt.code || st.Signal != tt.signal {
				t.Errorf("%q ended %v code %d signal %d, want %v code %d signal %d (reason %q, stderr %q)",
					tt.spec.Argv, st.State, st.Code, st.Signal, tt.state, tt.code, tt.signal, st.Reason, r.stderr)
			}
			if tt.stdout != "" && r.stdout != tt.stdout {
				t.Errorf("%q stdout = %q, want %q", tt.spec.Argv, r.stdout, tt.stdout)
			}
			if tt.stderr != "" && r.stderr != tt.stderr {
				t.Errorf("%q stderr = %q, want %q", tt.spec.Argv, r.stderr, tt.stderr)
			}
			waitRemoved(t, c, id, 10*time.Second)
		})
	}
}

// TestContainerSupervised runs a container under a shim: the output file
// holds the same frames as for a process, and Terminate stops it.
func TestContainerSupervised(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	c := requireImage(t, e)
	id := uniqueID(t, "supervised")
	dir := filepath.Join(t.TempDir(), string(id))
	p, err := e.StartSupervised(t.Context(), id, devops.Spec{Image: testImage, Argv: []string{"sh", "-c", "echo up; echo warn >&2; exec sleep 60"}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "output", 10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, executor.OutputFile))
		return strings.Contains(string(b), "up") && strings.Contains(string(b), "warn")
	})
	p.Terminate(syscall.SIGTERM, 10*time.Second)
	st := waitEnd(t, p, 20*time.Second)
	if st.State != devops.StateTerminated || st.Signal != int(syscall.SIGTERM) {
		t.Errorf("ended %v signal %d, want TERMINATED signal %d (reason %q)", st.State, st.Signal, syscall.SIGTERM, st.Reason)
	}
	if o, e := readFrames(t, dir); o != "up\n" || e != "warn\n" {
		t.Errorf("output %q / %q, want %q / %q", o, e, "up\n", "warn\n")
	}
	if _, err := os.Stat(filepath.Join(dir, executor.ExitFile)); err != nil {
		t.Errorf("no exit status file: %v", err)
	}
	waitRemoved(t, c, id, 10*time.Second)
}

// TestContainerStdinSupervised: a container under a shim reads its input
// from the process's directory, then end of file.
func TestContainerStdinSupervised(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	c := requireImage(t, e)
	id := uniqueID(t, "stdin")
	dir := filepath.Join(t.TempDir(), string(id))
	input := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB: past a pipe's buffer
	p, err := e.StartSupervised(t.Context(), id, devops.Spec{Image: testImage, Argv: []string{"wc", "-c"}, Stdin: []byte(input)}, dir)
	if err != nil {
		t.Fatal(err)
	}
	st := waitEnd(t, p, 20*time.Second)
	if o, e := readFrames(t, dir); st.State != devops.StateSucceeded || strings.TrimSpace(o) != fmt.Sprint(len(input)) {
		t.Errorf("ended %v (%s), output %q / %q; want %d", st.State, st.Reason, o, e, len(input))
	}
	waitRemoved(t, c, id, 10*time.Second)
}

func TestContainerTimeout(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	c := requireImage(t, e)
	id := uniqueID(t, "timeout")
	r := run(t, e, string(id), devops.Spec{Image: testImage, Argv: []string{"sh", "-c", "trap '' TERM; sleep 30"},
		Timeout: 300 * time.Millisecond, Grace: 200 * time.Millisecond})
	if st := r.status; st.State != devops.StateTimedOut || st.Signal != int(syscall.SIGKILL) {
		t.Errorf("ended %v signal %d, want TIMED_OUT by SIGKILL (reason %q)", st.State, st.Signal, st.Reason)
	}
	waitRemoved(t, c, id, 10*time.Second)
}

// TestContainerLimits checks the limits reach the container, and that the
// memory limit ends a hog OOM_KILLED.
func TestContainerLimits(t *testing.T) {
	e := newExecutor(t, "", devops.Limits{})
	c := requireImage(t, e)
	id := uniqueID(t, "limits")
	lim := devops.Limits{MemoryBytes: 64 << 20, CPUs: 0.5, Pids: 50}
	p, err := e.Start(t.Context(), id, devops.Spec{Image: testImage, Argv: []string{"sleep", "60"}, Limits: lim}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.ContainerInspect(t.Context(), "devops-"+string(id), client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := info.Container.HostConfig
	if hc.Memory != lim.MemoryBytes || hc.MemorySwap != lim.MemoryBytes || hc.NanoCPUs != 500_000_000 || hc.PidsLimit == nil || *hc.PidsLimit != 50 {
		t.Errorf("HostConfig Memory %d MemorySwap %d NanoCPUs %d PidsLimit %v, want %d, %d, 5e8, 50",
			hc.Memory, hc.MemorySwap, hc.NanoCPUs, hc.PidsLimit, lim.MemoryBytes, lim.MemoryBytes)
	}
	if got := info.Container.Config.Labels[executor.LabelProcessID]; got != string(id) {
		t.Errorf("label %s = %q, want %q", executor.LabelProcessID, got, id)
	}
	p.Terminate(syscall.SIGKILL, 0)
	if st := waitEnd(t, p, 20*time.Second); st.State != devops.StateTerminated {
		t.Errorf("ended %v, want TERMINATED", st.State)
	}
	waitRemoved(t, c, id, 10*time.Second)

	oom := uniqueID(t, "oom")
	r := run(t, e, string(oom), devops.Spec{Image: testImage, Argv: []string{"sh", "-c", "head -c 500m /dev/zero | tail"},
		Limits: devops.Limits{MemoryBytes: 16 << 20}})
	if st := r.status; st.State != devops.StateFailed || st.Reason != executor.ReasonOOMKilled {
		t.Errorf("memory hog ended %v code %d signal %d reason %q, want FAILED %s", st.State, st.Code, st.Signal, st.Reason, executor.ReasonOOMKilled)
	}
	waitRemoved(t, c, oom, 10*time.Second)
}

func TestContainerRefused(t *testing.T) {
	e := newExecutorConfig(t, executor.Config{NoDocker: true})
	if e.Fingerprint().Docker {
		t.Error("Fingerprint().Docker = true without an engine")
	}
	_, err := e.Start(t.Context(), "p", devops.Spec{Image: testImage, Argv: []string{"true"}}, nil, nil)
	if !errors.Is(err, devops.ErrInvalid) || !strings.Contains(err.Error(), "docker") {
		t.Errorf("Start with an image and no engine = %v, want ErrInvalid naming docker", err)
	}

	e2 := newExecutor(t, "", devops.Limits{})
	requireImage(t, e2)
	_, err = e2.Start(t.Context(), uniqueID(t, "noimage"), devops.Spec{Image: "devops-no-such-image:never", Argv: []string{"true"}}, nil, nil)
	if !errors.Is(err, devops.ErrInvalid) || !strings.Contains(err.Error(), "not on this worker") {
		t.Errorf("Start with a missing image = %v, want ErrInvalid saying it is not on this worker", err)
	}
}

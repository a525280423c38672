package cli_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/cli"
	"github.com/devops-platform/devops/internal/testcluster"
)

// TestRunSendsStdin: `devops run -i` gives the command the CLI's standard
// input, byte for byte, then end of file, as `ssh host cmd < file` does;
// records keep only its length; without -i the command reads nothing.
func TestRunSendsStdin(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()

	script := "echo from the script\nexit 4\n"
	r := c.CLIStdin(ctx, strings.NewReader(script), "run", "-i", "--", "sh")
	if r.Code != 4 || r.Stdout != "from the script\n" {
		t.Errorf("run -i -- sh < script = %d %q (stderr %q), want 4 and the script's output", r.Code, r.Stdout, r.Stderr)
	}
	// The audit log tells which script ran, without its text.
	sum := fmt.Sprintf("%d bytes, sha256 %x", len(script), sha256.Sum256([]byte(script)))
	if r := c.CLI(ctx, "audit", "-o", "json"); !strings.Contains(r.Stdout, sum) || strings.Contains(r.Stdout, "from the script") {
		t.Errorf("audit after run -i does not describe the input as %q, or holds its text:\n%s", sum, r.Stdout)
	}

	data := make([]byte, devops.MaxStdin) // the most it sends
	rand.Read(data)
	r = c.CLIStdin(ctx, bytes.NewReader(data), "run", "--stdin", "--", "cat")
	if r.Code != 0 || r.Stdout != string(data) {
		t.Errorf("run --stdin -- cat of 4 MiB = %d, %d bytes back (stderr %q), want the same bytes", r.Code, len(r.Stdout), r.Stderr)
	}

	r = c.CLIStdin(ctx, strings.NewReader("not for it\n"), "run", "--", "sh", "-c", "cat; echo end")
	if r.Code != 0 || r.Stdout != "end\n" {
		t.Errorf("run without -i = %d %q, want only end", r.Code, r.Stdout)
	}

	r = c.CLIStdin(ctx, strings.NewReader("12345"), "run", "-i", "--detach", "--", "cat")
	id := devops.ProcessID(strings.TrimSpace(r.Stdout))
	testcluster.Eventually(t, 10*time.Second, "the detached cat ended", func() bool {
		p, err := c.Client.Status(ctx, id)
		return err == nil && p.State.Terminal()
	})
	if r := c.CLI(ctx, "logs", string(id)); r.Stdout != "12345" {
		t.Errorf("logs of the detached cat = %q, want 12345", r.Stdout)
	}
	if r := c.CLI(ctx, "status", string(id)); !strings.Contains(r.Stdout, "Stdin:") || !strings.Contains(r.Stdout, "5 bytes") {
		t.Errorf("status does not show the input's length:\n%s", r.Stdout)
	}
	if p, _ := c.Client.Status(ctx, id); p.Spec.StdinBytes != 5 || p.Spec.Stdin != nil {
		t.Errorf("record's spec: %d bytes of input, data %q; want 5 and no data", p.Spec.StdinBytes, p.Spec.Stdin)
	}

	big := bytes.NewReader(make([]byte, devops.MaxStdin+1))
	r = c.CLIStdin(ctx, big, "run", "-i", "--", "cat")
	if r.Code == 0 || !strings.Contains(r.Stderr, "over 4 MiB") {
		t.Errorf("run -i with 4 MiB + 1 = %d %q, want a refusal", r.Code, r.Stderr)
	}
}

// TestCtrlCWhileReadingStdin: Ctrl-C stops run -i while it still reads its
// input (a terminal's, say), and nothing runs.
func TestCtrlCWhileReadingStdin(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()
	in, out := io.Pipe() // never closed: a terminal nobody types into
	defer out.Close()
	interrupt := make(chan os.Signal, 1)
	interrupt <- os.Interrupt
	var stderr bytes.Buffer
	code := c.CLIEnv(ctx, cli.Env{Stdout: io.Discard, Stderr: &stderr, Stdin: in, Interrupt: interrupt}, "run", "-i", "--", "cat")
	if code != 130 || !strings.Contains(stderr.String(), "nothing ran") {
		t.Errorf("run -i interrupted while reading = %d %q, want 130 and nothing ran", code, stderr.String())
	}
	if ps, err := c.Client.Processes(ctx, 0, ""); err != nil || len(ps) != 0 {
		t.Errorf("processes after the interrupted read: %v, %v; want none", ps, err)
	}
}

// TestFleetRunSendsStdin: every child of a fleet run reads the same input,
// a retry too (the manager starts it, long after the CLI sent it).
func TestFleetRunSendsStdin(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 3})
	ctx := t.Context()
	r := c.CLIStdin(ctx, strings.NewReader("hello\n"), "run", "--all", "-i", "--", "sh", "-c", `read x; echo "got $x"`)
	if r.Code != 0 {
		t.Errorf("fleet run -i = %d, stderr %q", r.Code, r.Stderr)
	}
	for _, w := range []string{"w1", "w2", "w3"} {
		if !strings.Contains(r.Stdout, w+": got hello\n") {
			t.Errorf("fleet run output lacks %s's line:\n%s", w, r.Stdout)
		}
	}

	dir := t.TempDir()
	script := `read x; if [ -e once ]; then echo "again $x"; else touch once; exit 3; fi`
	r = c.CLIStdin(ctx, strings.NewReader("with input\n"), "run", "--workers", "w1", "--retries", "1", "--dir", dir, "-i", "--", "sh", "-c", script)
	if r.Code != 0 || !strings.Contains(r.Stdout, "w1: again with input\n") {
		t.Errorf("retried child = %d %q (stderr %q), want its second attempt to read the input", r.Code, r.Stdout, r.Stderr)
	}
}

// TestQueuedCommandOutlivesAManagerRestart: a command queued for a slot
// waits through a restart of the manager (which loads its workers DOWN
// until they come back: it failed at once, "the only worker w1 is down"),
// keeps its input, and runs once the slot frees.
func TestQueuedCommandOutlivesAManagerRestart(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Capacity: 1})
	ctx := t.Context()
	r := c.CLI(ctx, "run", "--detach", "--", "sleep", "30")
	first := devops.ProcessID(strings.TrimSpace(r.Stdout))
	testcluster.Eventually(t, 10*time.Second, "first running", func() bool {
		p, _ := c.Client.Status(ctx, first)
		return p.State == devops.StateRunning
	})
	r = c.CLIStdin(ctx, strings.NewReader("queued input"), "run", "-i", "--detach", "--queue-timeout", "1m", "--", "cat")
	queued := devops.ProcessID(strings.TrimSpace(r.Stdout))
	if p, err := c.Client.Status(ctx, queued); err != nil || p.State != devops.StatePending {
		t.Fatalf("second process = %+v, %v; want PENDING", p, err)
	}
	c.StopManager()
	c.StartManager()
	if _, err := c.Client.Terminate(ctx, first, syscall.SIGKILL, 0); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 20*time.Second, "the queued cat ended", func() bool {
		p, err := c.Client.Status(ctx, queued)
		return err == nil && p.State.Terminal()
	})
	if r := c.CLI(ctx, "logs", string(queued)); r.Stdout != "queued input" {
		p, _ := c.Client.Status(ctx, queued)
		t.Errorf("logs of the queued cat = %q, want its input; it ended %v: %s", r.Stdout, p.State, p.Reason)
	}
	// Retention removes it (TestForgetPastRetention), not the run.
	if _, err := os.Stat(filepath.Join(c.ManagerDir(), "input", string(queued))); err != nil {
		t.Errorf("the input's file is gone before retention: %v", err)
	}
}

// TestFleetRunInputOutlivesAManagerRestart: children a fleet run starts
// after a restart of the manager (one at a time here) still read its
// input: the run's file is kept, and theirs are linked to it then.
func TestFleetRunInputOutlivesAManagerRestart(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 3})
	ctx := t.Context()
	r := c.CLIStdin(ctx, strings.NewReader("kept\n"), "run", "--all", "--max-concurrency", "1", "--detach", "-i", "--",
		"sh", "-c", `read x; sleep 0.3; echo "got $x"`)
	f := restartUnderFirstChild(t, c, devops.RunID(strings.TrimSpace(r.Stdout)))
	if f.Code != 0 || strings.Count(f.Stdout, ": got kept\n") != 3 {
		t.Errorf("logs -f after a restart = %d %q %q, want every child to read the input", f.Code, f.Stdout, f.Stderr)
	}
}

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
	"github.com/devops-platform/devops/internal/manager"
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
}

// TestRunUploadsALargeStdin: an input over the 4 MiB a request carries is
// uploaded to the manager first and handed to the worker apart, as
// `tar c . | ssh host tar x` would send it: every byte, on one worker or
// many; the audit log names it by its SHA-256; its copies go once the
// processes that read it ended; the manager's --max-stdin bounds it.
func TestRunUploadsALargeStdin(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2, Manager: func(cfg *manager.Config) { cfg.MaxStdin = 40 << 20 }})
	ctx := t.Context()
	data := make([]byte, 12<<20+7)
	rand.Read(data)
	sum := fmt.Sprintf("%x", sha256.Sum256(data))

	r := c.CLIStdin(ctx, bytes.NewReader(data), "run", "--worker", "w1", "-i", "--detach", "--", "sha256sum")
	id := devops.ProcessID(strings.TrimSpace(r.Stdout))
	testcluster.Eventually(t, 20*time.Second, "sha256sum ended", func() bool {
		p, err := c.Client.Status(ctx, id)
		return err == nil && p.State.Terminal()
	})
	if l := c.CLI(ctx, "logs", string(id)); l.Stdout != sum+"  -\n" {
		p, _ := c.Client.Status(ctx, id)
		t.Errorf("sha256sum of a 12 MiB input printed %q (%v: %s), want %s", l.Stdout, p.State, p.Reason, sum)
	}
	if p, _ := c.Client.Status(ctx, id); p.Spec.StdinBytes != int64(len(data)) {
		t.Errorf("record's input is %d bytes, want %d", p.Spec.StdinBytes, len(data))
	}
	a := c.CLI(ctx, "audit", "-o", "json")
	if !strings.Contains(a.Stdout, fmt.Sprintf("%d bytes, sha256 %s", len(data), sum)) || !strings.Contains(a.Stdout, "an upload, sha256 "+sum) {
		t.Errorf("audit does not name the upload and the run's input by its SHA-256:\n%s", a.Stdout)
	}
	// Nothing reads it again: neither the manager's copy nor the
	// worker's staged one stays.
	testcluster.Eventually(t, 10*time.Second, "the input's copies removed", func() bool {
		_, err := os.Stat(filepath.Join(c.ManagerDir(), "input", string(id)))
		staged, _ := os.ReadDir(filepath.Join(c.WorkerDir(1), "spool", ".stdin"))
		return os.IsNotExist(err) && len(staged) == 0
	})

	// --retries: the CLI names the upload again once the first attempt
	// ended (and its input went).
	dir := t.TempDir()
	script := `n=$(wc -c); if [ -e once ]; then echo "again $n"; else touch once; exit 3; fi`
	r = c.CLIStdin(ctx, bytes.NewReader(data), "run", "--worker", "w1", "--retries", "1", "--dir", dir, "-i", "--", "sh", "-c", script)
	if want := fmt.Sprintf("again %d\n", len(data)); r.Code != 0 || r.Stdout != want {
		t.Errorf("run -i --retries 1 = %d %q (stderr %q), want the second attempt to read it all: %q", r.Code, r.Stdout, r.Stderr, want)
	}

	// A fleet run: each worker reads it whole, and the same bytes are one
	// upload.
	r = c.CLIStdin(ctx, bytes.NewReader(data), "run", "--all", "-i", "--", "sha256sum")
	for _, w := range []string{"w1", "w2"} {
		if r.Code != 0 || !strings.Contains(r.Stdout, w+": "+sum+"  -\n") {
			t.Errorf("fleet run of sha256sum = %d %q (stderr %q), want %s's sum", r.Code, r.Stdout, r.Stderr, w)
		}
	}
	if ups, _ := os.ReadDir(filepath.Join(c.ManagerDir(), "upload")); len(ups) != 1 || ups[0].Name() != sum {
		t.Errorf("uploads on the manager: %v, want one named %s", ups, sum)
	}

	before, _ := c.Client.Processes(ctx, 0, "")
	r = c.CLIStdin(ctx, bytes.NewReader(make([]byte, 41<<20)), "run", "-i", "--", "wc", "-c")
	if r.Code != 255 || !strings.Contains(r.Stderr, "over the manager's bound of 40 MiB (devops manager --max-stdin)") {
		t.Errorf("run -i with 41 MiB (manager's bound 40) = %d %q, want a refusal that names --max-stdin", r.Code, r.Stderr)
	}
	if ps, _ := c.Client.Processes(ctx, 0, ""); len(ps) != len(before) {
		t.Errorf("%d processes after the refused upload, want the %d before", len(ps), len(before))
	}
}

// TestCtrlCWhileUploadingStdin: Ctrl-C while run -i sends a large input to
// the manager ends it, and nothing runs.
func TestCtrlCWhileUploadingStdin(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()
	in, out := io.Pipe()
	interrupt := make(chan os.Signal, 1)
	go func() {
		// Once the CLI has read 6 MiB it is sending: the first 4 MiB
		// and one byte went to decide that.
		if _, err := out.Write(make([]byte, 6<<20)); err == nil {
			interrupt <- os.Interrupt
		}
		// Then nothing more, as a slow producer: the pipe stays open.
	}()
	defer out.Close()
	var stderr bytes.Buffer
	code := c.CLIEnv(ctx, cli.Env{Stdout: io.Discard, Stderr: &stderr, Stdin: in, Interrupt: interrupt}, "run", "-i", "--", "cat")
	if code != 130 || !strings.Contains(stderr.String(), "interrupted while sending the standard input; nothing ran") {
		t.Errorf("run -i interrupted while uploading = %d %q, want 130 and nothing ran", code, stderr.String())
	}
	if ps, err := c.Client.Processes(ctx, 0, ""); err != nil || len(ps) != 0 {
		t.Errorf("processes after the interrupted upload: %v, %v; want none", ps, err)
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
	// Nothing reads it again once the process ended.
	testcluster.Eventually(t, 10*time.Second, "the input's file removed", func() bool {
		_, err := os.Stat(filepath.Join(c.ManagerDir(), "input", string(queued)))
		return os.IsNotExist(err)
	})
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

// A standard input that takes long to end is waited for with a word on
// stderr, once: the command starts only at its end. One that ends at once
// gets none.
func TestRunSaysItWaitsForTheInputsEnd(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()
	pr, pw := io.Pipe()
	stdout, stderr := new(testcluster.SyncBuffer), new(testcluster.SyncBuffer)
	code := make(chan int, 1)
	go func() {
		code <- c.CLIEnv(ctx, cli.Env{Stdout: stdout, Stderr: stderr, Stdin: pr}, "run", "-i", "--", "cat")
	}()
	if _, err := pw.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	const word = "devops: the command starts once its standard input ends (-i reads it whole first); 6B read so far\n"
	testcluster.Eventually(t, 10*time.Second, "the word that it waits for the input's end", func() bool {
		return strings.Contains(stderr.String(), word)
	})
	if stdout.String() != "" {
		t.Errorf("the command ran before its input ended: %q", stdout.String())
	}
	pw.Write([]byte("world\n"))
	pw.Close()
	if got := exitOf(t, code, 20*time.Second, "run -i did not end after its input did"); got != 0 || stdout.String() != "hello\nworld\n" {
		t.Errorf("run -i -- cat = %d %q, want 0 and the whole input", got, stdout.String())
	}
	if n := strings.Count(stderr.String(), "devops: the command starts once"); n != 1 {
		t.Errorf("the word was said %d times, want once:\n%s", n, stderr.String())
	}

	r := c.CLIStdin(ctx, strings.NewReader("at once\n"), "run", "-i", "--", "cat")
	if r.Code != 0 || r.Stdout != "at once\n" || r.Stderr != "" {
		t.Errorf("run -i of an input that ends at once = %d %q, stderr %q; want its output and no word", r.Code, r.Stdout, r.Stderr)
	}
}

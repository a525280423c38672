package cli_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/cli"
	"github.com/devops-platform/devops/internal/testcluster"
)

// TestManagerKill9MidRun kills the manager process with SIGKILL while a
// command runs and a client follows it, and starts it again on the same
// data dir: the client goes on without a gap or a duplicate, the command
// ran once, and its record ends right.
func TestManagerKill9MidRun(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{ManagerProcess: true})
	dir := t.TempDir()
	script, want := probe(40)
	// stderr apart: it may tell of a wait while the manager is back.
	out, _, code := startCLI(t, c, "run", "--dir", dir, "--", "sh", "-c", script)
	testcluster.Eventually(t, 10*time.Second, "output started", func() bool { return strings.Contains(out.String(), "line 3\n") })

	killedAt := time.Now()
	c.KillManager()
	c.StartManager()
	c.WaitWorkers(1)
	t.Logf("manager back with its worker %v after the kill", time.Since(killedAt).Round(time.Millisecond))

	if got := exitOf(t, code, 60*time.Second, "run did not finish after the manager came back"); got != 0 {
		t.Errorf("run across a kill -9 of the manager exited %d:\n%s", got, out.String())
	}
	if out.String() != want {
		t.Errorf("output across the crash:\n%s\nwant:\n%s", out.String(), want)
	}
	runs, _ := os.ReadFile(filepath.Join(dir, "runs.log"))
	if string(runs) != "start\n" {
		t.Errorf("the command started %d times, want once", strings.Count(string(runs), "start"))
	}
	ps, err := c.Client.Processes(t.Context(), devops.StateUnknown, "")
	if err != nil || len(ps) != 1 || ps[0].State != devops.StateSucceeded || ps[0].OutputBytes != int64(len(want)) {
		t.Errorf("records after the crash = %+v, %v; want one SUCCEEDED process with all its output", ps, err)
	}
}

// TestManagerKill9MidUpload kills the manager while run -i sends it a
// large input, which cannot be read twice: the CLI says so at once and
// runs nothing (it does not wait for the manager), whether its producer
// goes on or has paused, and the manager, back on its data dir, keeps
// nothing of the part it got.
func TestManagerKill9MidUpload(t *testing.T) {
	for _, pauses := range []bool{false, true} {
		t.Run(fmt.Sprintf("producer pauses %v", pauses), func(t *testing.T) {
			c := testcluster.Start(t, testcluster.Options{ManagerProcess: true})
			in, feed := io.Pipe()
			defer feed.Close() // ends the producer below once the test is done
			sending := make(chan struct{})
			go func() {
				// Once 6 MiB were read, the CLI is past the first 4 MiB
				// and uploading.
				chunk := make([]byte, 1<<20)
				for n := 0; ; n++ {
					if _, err := feed.Write(chunk); err != nil {
						return
					}
					if n == 6 {
						close(sending)
						if pauses {
							return // and the pipe stays open
						}
					}
				}
			}()
			stderr := new(testcluster.SyncBuffer)
			code := make(chan int, 1)
			go func() {
				code <- c.CLIEnv(t.Context(), cli.Env{Stdout: io.Discard, Stderr: stderr, Stdin: in}, "run", "-i", "--", "wc", "-c")
			}()
			select {
			case <-sending:
			case <-time.After(20 * time.Second):
				t.Fatal("the CLI did not read its input")
			}
			c.KillManager()
			if got := exitOf(t, code, 20*time.Second, "run -i did not end after the manager was killed"); got != 255 ||
				!strings.Contains(stderr.String(), "the manager went away while it received the standard input") || !strings.Contains(stderr.String(), "nothing ran") || strings.Contains(stderr.String(), "trying again") {
				t.Errorf("run -i across a kill -9 of the manager = %d %q, want 255 and why nothing ran", got, stderr.String())
			}
			c.StartManager()
			c.WaitWorkers(1)
			if parts, _ := filepath.Glob(filepath.Join(c.ManagerDir(), "upload", ".part-*")); len(parts) != 0 {
				t.Errorf("parts of uploads left after a restart: %v", parts)
			}
			if ps, err := c.Client.Processes(t.Context(), devops.StateUnknown, ""); err != nil || len(ps) != 0 {
				t.Errorf("processes after the cut upload = %v, %v; want none", ps, err)
			}
		})
	}
}

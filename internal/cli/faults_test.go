package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/manager"
	"github.com/devops-platform/devops/internal/testcluster"
)

// probe prints n numbered lines, one every 50 ms, and appends "start" to
// runs.log in its working directory each time it starts, so a test can tell
// how many times it ran.
func probe(n int) (script, want string) {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return fmt.Sprintf(`echo start >> runs.log; i=1; while [ $i -le %d ]; do echo "line $i"; i=$((i+1)); sleep 0.05; done`, n), b.String()
}

func stateOf(t *testing.T, c *testcluster.Cluster, id devops.ProcessID) devops.State {
	t.Helper()
	p, err := c.Client.Status(t.Context(), id)
	if err != nil {
		t.Fatalf("status %s: %v", id, err)
	}
	return p.State
}

// startCLI runs the CLI with args in the background, stdout and stderr
// apart; its exit code comes on code once it returns (see exitOf). code is
// buffered: a test that stops before reading it leaves no goroutine behind.
func startCLI(t *testing.T, c *testcluster.Cluster, args ...string) (stdout, stderr *testcluster.SyncBuffer, code <-chan int) {
	stdout, stderr = new(testcluster.SyncBuffer), new(testcluster.SyncBuffer)
	ch := make(chan int, 1)
	go func() { ch <- c.CLIWith(t.Context(), stdout, stderr, nil, args...) }()
	return stdout, stderr, ch
}

// exitOf waits up to d for the exit code that a CLI call running in a
// goroutine sends on code; without it by then the test fails with notDone.
func exitOf(t *testing.T, code <-chan int, d time.Duration, notDone string) int {
	t.Helper()
	select {
	case got := <-code:
		return got
	case <-time.After(d):
		t.Fatal(notDone)
		return 0
	}
}

func firstProcess(t *testing.T, c *testcluster.Cluster) devops.ProcessID {
	t.Helper()
	var id devops.ProcessID
	testcluster.Eventually(t, 5*time.Second, "a process exists", func() bool {
		ps, _ := c.Client.Processes(t.Context(), devops.StateUnknown, "")
		if len(ps) > 0 {
			id = ps[0].ID
		}
		return id != ""
	})
	return id
}

func TestPartitionShorterThanGraceLosesNothing(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Proxies: true, Logs: os.Getenv("LOGS") != "", Manager: func(cfg *manager.Config) {
		cfg.WorkerTimeout = time.Second
	}})
	dir := t.TempDir()
	script, want := probe(60)
	out, errOut, code := startCLI(t, c, "run", "--dir", dir, "--", "sh", "-c", script)
	testcluster.Eventually(t, 5*time.Second, "output started", func() bool { return strings.Contains(out.String(), "line 3\n") })
	id := firstProcess(t, c)
	// A second reader, `logs -f`, hears of the partition as `run` does.
	logsOut, logsErr, logsCode := startCLI(t, c, "logs", "-f", string(id))

	cutAt := time.Now()
	c.Proxies[0].Cut()
	testcluster.Eventually(t, 10*time.Second, "process DISCONNECTED", func() bool { return stateOf(t, c, id) == devops.StateDisconnected })
	t.Logf("manager noticed the partition after %v", time.Since(cutAt).Round(time.Millisecond))
	c.Proxies[0].Heal()
	testcluster.Eventually(t, 10*time.Second, "process RUNNING or done again", func() bool {
		s := stateOf(t, c, id)
		return s == devops.StateRunning || s == devops.StateSucceeded
	})

	if got := exitOf(t, code, 20*time.Second, "run did not finish after the partition healed"); got != 0 {
		t.Errorf("run exited %d; output:\n%s\nstderr:\n%s", got, out.String(), errOut.String())
	}
	if out.String() != want {
		t.Errorf("output across the partition:\n%s\nwant:\n%s", out.String(), want)
	}
	if notice := fmt.Sprintf("devops: %s: DISCONNECTED: worker", id); !strings.Contains(errOut.String(), notice) {
		t.Errorf("stderr does not tell of the disconnection (%q):\n%s", notice, errOut.String())
	}
	if got := exitOf(t, logsCode, 10*time.Second, "logs -f did not finish after run did"); got != 0 {
		t.Errorf("logs -f exited %d; stderr:\n%s", got, logsErr.String())
	}
	if logsOut.String() != want {
		t.Errorf("logs -f output across the partition:\n%s\nwant:\n%s", logsOut.String(), want)
	}
	if notice := fmt.Sprintf("devops: %s: DISCONNECTED: worker", id); !strings.Contains(logsErr.String(), notice) {
		t.Errorf("logs -f's stderr does not tell of the disconnection (%q):\n%s", notice, logsErr.String())
	}
	runs, _ := os.ReadFile(filepath.Join(dir, "runs.log"))
	if string(runs) != "start\n" {
		t.Errorf("the command started %d times, want once", strings.Count(string(runs), "start"))
	}
}

// A fleet run (run --all) tells of a child's worker dropping out, and of
// its coming back, as a single run does.
func TestFleetRunTellsOfADisconnection(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2, Proxies: true, Manager: func(cfg *manager.Config) {
		cfg.WorkerTimeout = time.Second
	}})
	script, want := probe(60)
	out, errOut, code := startCLI(t, c, "run", "--all", "--", "sh", "-c", script)
	testcluster.Eventually(t, 5*time.Second, "both workers' output started", func() bool {
		return strings.Count(out.String(), "line 3\n") == 2
	})
	ps, err := c.Client.Processes(t.Context(), devops.StateUnknown, testcluster.WorkerName(0))
	if err != nil || len(ps) != 1 {
		t.Fatalf("processes on %s: %v, %v", testcluster.WorkerName(0), ps, err)
	}
	id := ps[0].ID
	c.Proxies[0].Cut()
	testcluster.Eventually(t, 10*time.Second, "process DISCONNECTED", func() bool { return stateOf(t, c, id) == devops.StateDisconnected })
	c.Proxies[0].Heal()
	if got := exitOf(t, code, 20*time.Second, "run --all did not finish after the partition healed"); got != 0 {
		t.Errorf("run --all exited %d; stderr:\n%s", got, errOut.String())
	}
	if notice := fmt.Sprintf("devops: %s: DISCONNECTED: worker", id); !strings.Contains(errOut.String(), notice) {
		t.Errorf("stderr does not tell of the disconnection (%q):\n%s", notice, errOut.String())
	}
	for _, w := range []string{testcluster.WorkerName(0), testcluster.WorkerName(1)} {
		if got := strings.Count(out.String(), w+": line "); got != strings.Count(want, "\n") {
			t.Errorf("%d lines from %s, want %d:\n%s", got, w, strings.Count(want, "\n"), out.String())
		}
	}
}

func TestPartitionLongerThanGraceIsLostAndKilled(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Proxies: true, Manager: func(cfg *manager.Config) {
		cfg.WorkerTimeout = time.Second
	}})
	marker := fmt.Sprintf("600.%d", time.Now().UnixNano()%100000)
	var out testcluster.SyncBuffer
	code := make(chan int)
	go func() {
		code <- c.CLIWith(t.Context(), &out, &out, nil, "run", "--disconnect-grace", "1s", "--", "sh", "-c", "echo up; sleep "+marker)
	}()
	testcluster.Eventually(t, 5*time.Second, "output started", func() bool { return strings.Contains(out.String(), "up\n") })
	c.Proxies[0].Cut()
	if got := exitOf(t, code, 20*time.Second, "run did not end after the grace"); got != 255 || !strings.Contains(out.String(), "LOST") {
		t.Errorf("run exited %d, want 255 with a LOST message; output:\n%s", got, out.String())
	}
	// The worker still runs it; once it is reachable again the manager tells
	// it to kill what it runs for a LOST process: no zombie work.
	if n := survivors(t, marker); n != 1 {
		t.Fatalf("%d sleeps during the partition, want 1", n)
	}
	c.Proxies[0].Heal()
	testcluster.Eventually(t, 15*time.Second, "the lost process killed on the worker", func() bool { return survivors(t, marker) == 0 })
}

func TestDrainLetsWorkFinishAndTakesNoNewWork(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2})
	r := c.CLI(t.Context(), "run", "--worker", "w1", "--detach", "--", "sh", "-c", "sleep 0.5; echo finished")
	id := devops.ProcessID(strings.TrimSpace(r.Stdout))
	testcluster.Eventually(t, 5*time.Second, "running", func() bool { return stateOf(t, c, id) == devops.StateRunning })

	if r := c.CLI(t.Context(), "drain", "w1"); r.Code != 0 || !strings.Contains(r.Stdout, "DRAINING") {
		t.Fatalf("drain = %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := c.CLI(t.Context(), "run", "--worker", "w1", "--", "true"); r.Code == 0 {
		t.Errorf("run on a draining worker succeeded")
	}
	for range 3 {
		r := c.CLI(t.Context(), "run", "--", "sh", "-c", `echo $HOME`)
		if r.Code != 0 || !strings.Contains(r.Stdout, "/w2/") {
			t.Errorf("new work landed on %q (exit %d), want w2", r.Stdout, r.Code)
		}
	}
	if r := c.CLI(t.Context(), "logs", "-f", string(id)); r.Code != 0 || r.Stdout != "finished\n" {
		t.Errorf("drained worker's process = %d %q, want it to finish", r.Code, r.Stdout)
	}
	if err := c.WaitWorkerExit(0, 10*time.Second); err != nil {
		t.Errorf("drained worker exited with %v", err)
	}
	testcluster.Eventually(t, 5*time.Second, "w1 deregistered", func() bool {
		ws, _ := c.Client.Workers(t.Context())
		return len(ws) == 1 && ws[0].Name == "w2"
	})
}

func TestDrainUndo(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	r := c.CLI(t.Context(), "run", "--detach", "--", "sleep", "1")
	id := devops.ProcessID(strings.TrimSpace(r.Stdout))
	// Running, so that the drain waits for it rather than ending at once.
	testcluster.Eventually(t, 5*time.Second, "running", func() bool { return stateOf(t, c, id) == devops.StateRunning })
	conn, err := grpc.NewClient(c.Worker(0).Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	serving := func() healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("health check: %v", err)
		}
		return resp.GetStatus()
	}
	if r := c.CLI(t.Context(), "drain", "w1"); r.Code != 0 {
		t.Fatalf("drain = %d %q", r.Code, r.Stderr)
	}
	if s := serving(); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("a draining worker's health = %s, want NOT_SERVING", s)
	}
	if r := c.CLI(t.Context(), "drain", "--undo", "w1"); r.Code != 0 || !strings.Contains(r.Stdout, "UP") {
		t.Fatalf("drain --undo = %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if s := serving(); s != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after undo = %s, want SERVING", s)
	}
	if r := c.CLI(t.Context(), "run", "--", "echo", "back"); r.Code != 0 || r.Stdout != "back\n" {
		t.Errorf("run after undo = %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
}

// TestDrainReportedAtOnce: a worker's drain, and its undo, reach the
// manager at once, not with the next status report: with reports a minute
// apart, the manager sees the worker that drained itself DRAINING, then UP,
// within seconds.
func TestDrainReportedAtOnce(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Manager: func(cfg *manager.Config) {
		cfg.HealthInterval, cfg.WorkerTimeout = time.Minute, 2*time.Minute
	}})
	state := func() devops.WorkerState {
		for _, w := range c.Manager().Workers() {
			return w.State
		}
		return devops.WorkerUnknown
	}
	testcluster.Eventually(t, 5*time.Second, "the worker UP", func() bool { return state() == devops.WorkerUp })
	// Running, so that the drained worker waits for it rather than leave.
	r := c.CLI(t.Context(), "run", "--detach", "--", "sleep", "30")
	id := devops.ProcessID(strings.TrimSpace(r.Stdout))
	testcluster.Eventually(t, 5*time.Second, "running", func() bool { return stateOf(t, c, id) == devops.StateRunning })
	// Each change counts one drain generation, which reports carry so that
	// the manager can drop one taken before the change (registry's
	// TestStaleDrainReportIgnored); asking again for the same changes none.
	if gen := c.Worker(0).Drain(true); gen != 1 {
		t.Errorf("first drain: generation %d, want 1", gen)
	}
	if gen := c.Worker(0).Drain(true); gen != 1 {
		t.Errorf("drain of a draining worker: generation %d, want 1", gen)
	}
	testcluster.Eventually(t, 5*time.Second, "the worker DRAINING", func() bool { return state() == devops.WorkerDraining })
	if gen := c.Worker(0).Drain(false); gen != 2 {
		t.Errorf("undo: generation %d, want 2", gen)
	}
	testcluster.Eventually(t, 5*time.Second, "the worker UP again", func() bool { return state() == devops.WorkerUp })
	c.CLI(t.Context(), "kill", string(id))
}

func TestRetriedRequestStartsOnce(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	dir := t.TempDir()
	req := client.RunRequest{
		Spec:           devops.Spec{Argv: []string{"sh", "-c", "echo start >> runs.log; echo once"}, Dir: dir},
		IdempotencyKey: "retry-me",
	}
	var wg sync.WaitGroup
	outs := make([]string, 4)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b strings.Builder
			var final devops.Process
			err := c.Client.Run(t.Context(), req, func(ev client.Event) error {
				if ev.Chunk != nil {
					b.Write(ev.Chunk.Data)
				}
				if ev.Process != nil {
					final = *ev.Process
				}
				return nil
			})
			if err != nil {
				t.Errorf("Run #%d: %v", i, err)
			}
			outs[i] = b.String()
			if final.State != devops.StateSucceeded {
				t.Errorf("Run #%d: process ended %s: %s", i, final.State, final.Reason)
			}
		}()
	}
	wg.Wait()
	for i, o := range outs {
		if o != "once\n" {
			t.Errorf("Run #%d saw %q, want the one process's output", i, o)
		}
	}
	ps, _ := c.Client.Processes(t.Context(), devops.StateUnknown, "")
	if len(ps) != 1 {
		t.Errorf("%d processes for one request retried 4 times, want 1", len(ps))
	}
	runs, _ := os.ReadFile(filepath.Join(dir, "runs.log"))
	if string(runs) != "start\n" {
		t.Errorf("runs.log = %q, want one start", runs)
	}
}

func TestRefusedCommandGoesToAnotherWorker(t *testing.T) {
	// Health reports come once, at connection, so the manager keeps
	// believing w1 takes work after w1 starts refusing it.
	c := testcluster.Start(t, testcluster.Options{Workers: 2, Manager: func(cfg *manager.Config) {
		cfg.HealthInterval = time.Hour
		cfg.WorkerTimeout = time.Hour
	}})
	for _, w := range []string{"w1", "w2"} {
		if r := c.CLI(t.Context(), "run", "--detach", "--worker", w, "--", "sleep", "5"); r.Code != 0 {
			t.Fatalf("run on %s: %s", w, r.Stderr)
		}
	}
	c.Worker(0).Drain(true) // behind the manager's back
	r := c.CLI(t.Context(), "run", "--", "sh", "-c", "echo $HOME")
	if r.Code != 0 || !strings.Contains(r.Stdout, "/w2/") {
		t.Errorf("run = %d %q %q, want it to land on w2", r.Code, r.Stdout, r.Stderr)
	}
	ps, _ := c.Client.Processes(t.Context(), devops.StateSucceeded, "")
	if len(ps) != 1 || ps[0].WorkerName != "w2" {
		t.Errorf("succeeded processes = %+v, want one on w2", ps)
	}
}

func TestRetriesRunAgainOnlyWhenAsked(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	dir := t.TempDir()
	// Fails twice, then succeeds: each attempt is a new process.
	script := `echo try >> tries; [ $(wc -l < tries) -ge 3 ] && echo ok`
	r := c.CLI(t.Context(), "run", "--dir", dir, "--retries", "3", "--", "sh", "-c", script)
	if r.Code != 0 || r.Stdout != "ok\n" || strings.Count(r.Stderr, "running it again") != 2 {
		t.Errorf("run --retries 3 = %d %q %q, want success on the third attempt, each shown", r.Code, r.Stdout, r.Stderr)
	}
	if ps, _ := c.Client.Processes(t.Context(), devops.StateUnknown, ""); len(ps) != 3 {
		t.Errorf("%d processes, want one per attempt (3)", len(ps))
	}
	// Without --retries a failure is final.
	r = c.CLI(t.Context(), "run", "--dir", dir, "--", "sh", "-c", "exit 4")
	if r.Code != 4 || strings.Contains(r.Stderr, "again") {
		t.Errorf("run without --retries = %d %q", r.Code, r.Stderr)
	}
}

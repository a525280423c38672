//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/wire"
)

// The failure tests break a container on purpose and print how long the
// manager took to notice. Each puts the cluster back as it found it, also
// when it fails.

// afterWorkerRestart is what a process that was running on a worker whose
// container was killed ends as, and how a follower exits.
//
// `docker kill` kills every process of the container, the command with it.
// Today a restarted worker also forgets which processes it ran (it does not
// yet keep its process table across its own restart; that is being built),
// so the manager cannot learn how the command ended: it keeps the process
// DISCONNECTED until the process's --disconnect-grace runs out, then marks it
// LOST, and a follower exits 255, like ssh. To tighten this once the worker
// remembers its processes: expect the state it then reports (and its exit
// code), and lower lostWithin to a few seconds, since the worker can say at
// registration that the process is gone instead of the grace running out.
var afterWorkerRestart = struct {
	states     []devops.State
	exitCode   int
	lostWithin time.Duration // after the worker is back UP
}{
	states:     []devops.State{devops.StateLost},
	exitCode:   255,
	lostWithin: 30 * time.Second,
}

// TestWorkerContainerKilled kills a worker's container in the middle of a
// command, then starts it again.
func TestWorkerContainerKilled(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	const grace = "10s" // the process's --disconnect-grace: LOST this long after the cut
	id := c.detach(ctx, "--worker", "w3", "--disconnect-grace", grace, "--", "sh", "-c", linesCmd(600, "0.1"))
	logs := c.start("logs", "-f", "--from", "0", string(id))
	c.waitProcess(id, 30*time.Second, "RUNNING with output", func(p devops.Process) bool {
		return p.State == devops.StateRunning && p.OutputBytes > 0
	})

	w3 := c.container("w3")
	t.Cleanup(func() { exec.Command("docker", "start", w3).Run() }) // back up even if the test fails
	killed := time.Now()
	c.docker("kill", w3)
	down := c.waitWorker("w3", devops.WorkerDown, 30*time.Second)
	t.Logf("docker kill w3: worker DOWN after %v", down.Round(time.Millisecond))
	// Today the record stays RUNNING until the grace ends (see
	// afterWorkerRestart); this prints when it first changes.
	p, _ := c.waitProcess(id, 30*time.Second, "no longer RUNNING", func(p devops.Process) bool {
		return p.State != devops.StateRunning
	})
	t.Logf("docker kill w3: process left RUNNING for %s after %v", p.State, time.Since(killed).Round(time.Millisecond))

	started := time.Now()
	c.docker("start", w3)
	up := c.waitWorker("w3", devops.WorkerUp, time.Minute)
	t.Logf("docker start w3: worker UP again after %v", up.Round(time.Millisecond))

	p, _ = c.waitProcess(id, afterWorkerRestart.lostWithin, fmt.Sprint("one of ", afterWorkerRestart.states), inState(afterWorkerRestart.states...))
	t.Logf("docker kill w3: process %s %v after the kill, %v after the restart (reason %q)",
		p.State, time.Since(killed).Round(time.Millisecond), time.Since(started).Round(time.Millisecond), p.Reason)
	if code := logs.wait(t, 30*time.Second); code != afterWorkerRestart.exitCode {
		t.Errorf("devops logs -f exited %d, want %d", code, afterWorkerRestart.exitCode)
	}
	// Whatever arrived before the kill is a prefix of the command's output.
	if got, all := logs.stdout.Bytes(), lines(600); !strings.HasPrefix(string(all), string(got)) || len(got) == 0 {
		t.Errorf("devops logs -f printed %d bytes that are not a non-empty prefix of the output: %.100q...", len(got), got)
	}
	// And the worker runs new commands again.
	if out := c.mustDevops(ctx, "run", "--worker", "w3", "--", "echo", "back"); string(out) != "back\n" {
		t.Errorf("after the restart devops run --worker w3 printed %q", out)
	}
}

// TestNetworkPartition cuts a worker off the compose network in the middle of
// a command, for less than the process's --disconnect-grace, and connects it
// again: the process must go DISCONNECTED, come back RUNNING and end with
// every byte of its output.
func TestNetworkPartition(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	const n = 300 // lines, one every 0.1s: about 30s, longer than the cut
	id := c.detach(ctx, "--worker", "w2", "--disconnect-grace", "1m", "--", "sh", "-c", linesCmd(n, "0.1"))
	logs := c.start("logs", "-f", "--from", "0", string(id))
	c.waitProcess(id, 30*time.Second, "RUNNING with output", func(p devops.Process) bool {
		return p.State == devops.StateRunning && p.OutputBytes > 0
	})

	w2 := c.container("w2")
	network := c.network(w2)
	connected := false
	t.Cleanup(func() {
		if !connected {
			exec.Command("docker", "network", "connect", network, w2).Run()
		}
	})
	cut := time.Now()
	c.docker("network", "disconnect", network, w2)
	down := c.waitWorker("w2", devops.WorkerDown, 30*time.Second)
	t.Logf("network disconnect w2: worker DOWN after %v", down.Round(time.Millisecond))
	// The worker is DOWN after --worker-timeout without health (10s), which
	// cuts its processes' output streams: that bounds how long the process
	// may look RUNNING while its worker is cut off.
	if _, err := c.poll(15*time.Second, "process DISCONNECTED", func(ctx context.Context) (bool, string) {
		p, err := c.status(ctx, id)
		if err != nil {
			return false, err.Error()
		}
		return p.State == devops.StateDisconnected, p.State.String()
	}); err != nil {
		// Not fatal: the rest of the test still shows whether the output
		// survives the partition.
		t.Errorf("network disconnect w2: worker DOWN but %v", err)
	} else {
		t.Logf("network disconnect w2: process DISCONNECTED after %v", time.Since(cut).Round(time.Millisecond))
	}

	rejoin := time.Now()
	c.docker("network", "connect", network, w2)
	connected = true
	up := c.waitWorker("w2", devops.WorkerUp, 30*time.Second)
	t.Logf("network connect w2 (cut for %v): worker UP after %v", rejoin.Sub(cut).Round(time.Millisecond), up.Round(time.Millisecond))
	_, back := c.waitProcess(id, 30*time.Second, "RUNNING again", inState(devops.StateRunning))
	t.Logf("network connect w2: process RUNNING again after %v", (up + back).Round(time.Millisecond))

	if code := logs.wait(t, time.Minute); code != 0 {
		t.Fatalf("devops logs -f exited %d: %s", code, logs.stderr.Bytes())
	}
	equalBytes(t, "devops logs -f across the partition", logs.stdout.Bytes(), lines(n))
	p, _ := c.waitProcess(id, 10*time.Second, "SUCCEEDED", inState(devops.StateSucceeded))
	if p.OutputBytes != int64(len(lines(n))) {
		t.Errorf("status says %d output bytes, want %d", p.OutputBytes, len(lines(n)))
	}
}

// TestManagerRestart restarts the manager's container while a `devops run`
// follows a command: the CLI reconnects by itself and prints every byte, and
// the records and output of every process survive in the named volume.
func TestManagerRestart(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	before := c.processes(ctx)

	const n = 200 // lines, one every 0.1s: about 20s
	token := fmt.Sprintf("restart-%d", time.Now().UnixNano())
	run := c.start("run", "--worker", "w1", "--", "sh", "-c", linesCmd(n, "0.1"), token)
	var id devops.ProcessID
	c.waitFor(30*time.Second, "the command RUNNING with output", func(ctx context.Context) (bool, string) {
		for _, p := range c.processes(ctx) {
			if slices.Contains(p.Spec.Argv, token) {
				id = p.ID
				return p.State == devops.StateRunning && p.OutputBytes > 0, p.State.String()
			}
		}
		return false, "not listed yet"
	})

	manager := c.container("manager")
	restarted := time.Now()
	c.docker("restart", "--time", "10", manager)
	t.Logf("docker restart manager: took %v", time.Since(restarted).Round(time.Millisecond))
	serving := c.waitFor(time.Minute, "the manager serving again", func(ctx context.Context) (bool, string) {
		r := c.devops(ctx, "healthcheck", "--addr", c.manager, "--timeout", "1s")
		return r.code == 0, string(r.stderr)
	})
	t.Logf("docker restart manager: serving %v after docker restart returned", serving.Round(time.Millisecond))
	back := time.Now()
	for _, name := range workerNames {
		// The restarted manager loads the workers it knew; one it has heard
		// from since it came back is connected again.
		c.waitFor(time.Minute, name+" UP and heard from", func(ctx context.Context) (bool, string) {
			ws, err := c.workers(ctx)
			if err != nil {
				return false, err.Error()
			}
			for _, w := range ws {
				if w.Name == name {
					return w.State == devops.WorkerUp && w.LastSeen.After(back), fmt.Sprintf("%s, last seen %v", w.State, w.LastSeen)
				}
			}
			return false, "not listed"
		})
		t.Logf("docker restart manager: %s UP and heard from %v after the manager serves", name, time.Since(back).Round(time.Millisecond))
	}

	if code := run.wait(t, time.Minute); code != 0 {
		t.Fatalf("devops run exited %d: %s", code, run.stderr.Bytes())
	}
	t.Logf("devops run ended %v after the restart", time.Since(restarted).Round(time.Millisecond))
	equalBytes(t, "devops run across the manager restart", run.stdout.Bytes(), lines(n))

	p, err := c.status(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != devops.StateSucceeded || p.OutputBytes != int64(len(lines(n))) {
		t.Errorf("status: %s with %d bytes, want SUCCEEDED with %d", p.State, p.OutputBytes, len(lines(n)))
	}
	equalBytes(t, "devops logs after the restart", c.mustDevops(ctx, "logs", string(id)), lines(n))
	after := map[devops.ProcessID]devops.Process{}
	for _, p := range c.processes(ctx) {
		after[p.ID] = p
	}
	for _, p := range before {
		q, ok := after[p.ID]
		switch {
		case !ok:
			t.Errorf("process %s (%s) is gone after the restart", p.ID, p.State)
		case p.State.Terminal() && (q.State != p.State || q.OutputBytes != p.OutputBytes):
			t.Errorf("process %s was %s with %d bytes, is %s with %d after the restart", p.ID, p.State, p.OutputBytes, q.State, q.OutputBytes)
		}
	}
	t.Logf("%d earlier process records intact", len(before))
}

// processes is `devops ps -o json`.
func (c *cluster) processes(ctx context.Context) []devops.Process {
	c.tb.Helper()
	ps, err := decodeList(c.mustDevops(ctx, "ps", "-o", "json"), func() *pb.Process { return &pb.Process{} }, wire.ProcessFromPB)
	if err != nil {
		c.tb.Fatalf("devops ps -o json: %v", err)
	}
	return ps
}

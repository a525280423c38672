//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/wire"
)

// workerNames are the compose services that run workers (docker-compose.yml).
var workerNames = []string{"w1", "w2", "w3"}

// cluster is the compose cluster under test, seen from the host.
type cluster struct {
	tb      testing.TB
	bin     string // the devops binary
	manager string // host:port of the manager
	project string // compose project name; empty: any
}

// newCluster finds the cluster and waits until every worker is UP. It skips
// the test, with the reason, when Docker, the binary or the cluster is
// missing, unless DEVOPS_E2E_REQUIRE=1 asks it to fail instead.
func newCluster(tb testing.TB) *cluster {
	tb.Helper()
	require := os.Getenv("DEVOPS_E2E_REQUIRE") == "1"
	skip := func(format string, args ...any) {
		tb.Helper()
		if require {
			tb.Fatalf(format, args...)
		}
		tb.Skipf(format, args...)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		skip("docker is not installed: %v", err)
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		skip("the docker engine does not answer: %v: %s", err, bytes.TrimSpace(out))
	}
	c := &cluster{
		tb:      tb,
		bin:     envOr("DEVOPS_E2E_BIN", "../bin/devops"),
		manager: envOr("DEVOPS_E2E_MANAGER", "localhost:50051"),
		project: os.Getenv("COMPOSE_PROJECT_NAME"),
	}
	bin, err := filepath.Abs(c.bin)
	if err != nil {
		tb.Fatal(err)
	}
	c.bin = bin
	if _, err := os.Stat(c.bin); err != nil {
		skip("no devops binary: %v (run make build)", err)
	}
	// A cluster that ci-test has just started needs a moment to serve.
	wait := 2 * time.Second
	if require {
		wait = time.Minute
	}
	if _, err := c.poll(wait, "the manager serving", func(ctx context.Context) (bool, string) {
		r := c.devops(ctx, "healthcheck", "--addr", c.manager, "--timeout", "1s")
		return r.code == 0, string(r.stderr)
	}); err != nil {
		skip("no manager at %s (start one: make docker-build && docker-compose up -d): %v", c.manager, err)
	}
	for _, name := range workerNames {
		c.waitWorker(name, devops.WorkerUp, time.Minute)
	}
	return c
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// result is how a devops command ended.
type result struct {
	stdout, stderr []byte
	code           int
}

// command prepares the devops CLI with args, talking to the cluster's manager.
func (c *cluster) command(ctx context.Context, args ...string) *exec.Cmd {
	host, port, err := net.SplitHostPort(c.manager)
	if err != nil {
		c.tb.Fatalf("DEVOPS_E2E_MANAGER %q: %v", c.manager, err)
	}
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = append(os.Environ(), "MANAGER_HOST="+host, "MANAGER_PORT="+port)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// devops runs the CLI and returns what it printed and its exit code; a
// command that could not start at all fails the test.
func (c *cluster) devops(ctx context.Context, args ...string) result {
	c.tb.Helper()
	cmd := c.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var xe *exec.ExitError
	switch {
	case err == nil:
		return result{stdout.Bytes(), stderr.Bytes(), 0}
	case errors.As(err, &xe):
		return result{stdout.Bytes(), stderr.Bytes(), xe.ExitCode()}
	}
	c.tb.Fatalf("devops %s: %v", strings.Join(args, " "), err)
	return result{}
}

// mustDevops runs the CLI and fails the test unless it exits 0.
func (c *cluster) mustDevops(ctx context.Context, args ...string) []byte {
	c.tb.Helper()
	r := c.devops(ctx, args...)
	if r.code != 0 {
		c.tb.Fatalf("devops %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// follower is a devops command running in the background, such as a
// `devops run` or `devops logs -f` that follows a process.
type follower struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer // read only after done is closed
	done           chan struct{}
	code           int
}

// start runs the CLI in the background; the test's cleanup stops it.
func (c *cluster) start(args ...string) *follower {
	c.tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{cmd: c.command(ctx, args...), done: make(chan struct{})}
	f.cmd.Stdout, f.cmd.Stderr = &f.stdout, &f.stderr
	if err := f.cmd.Start(); err != nil {
		cancel()
		c.tb.Fatalf("start devops %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		defer close(f.done)
		err := f.cmd.Wait()
		var xe *exec.ExitError
		if errors.As(err, &xe) {
			f.code = xe.ExitCode()
		} else if err != nil {
			f.code = -1
		}
	}()
	c.tb.Cleanup(func() { cancel(); <-f.done })
	return f
}

// wait waits for the follower to exit and returns its exit code.
func (f *follower) wait(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-f.done:
		return f.code
	case <-time.After(timeout):
		tb.Fatalf("devops %s still running after %v", strings.Join(f.cmd.Args[1:], " "), timeout)
		return 0
	}
}

// poll calls cond every 100ms until it reports true and returns how long
// that took, or an error naming what was awaited and what cond last said.
func (c *cluster) poll(timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := ""
	for {
		ok, state := cond(ctx)
		if ok {
			return time.Since(start), nil
		}
		if ctx.Err() == nil { // an attempt cut short by the deadline says nothing
			last = state
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("%s: not within %v (last: %s)", what, timeout, strings.TrimSpace(last))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitFor is poll that fails the test on timeout.
func (c *cluster) waitFor(timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) time.Duration {
	c.tb.Helper()
	d, err := c.poll(timeout, what, cond)
	if err != nil {
		c.tb.Fatal(err)
	}
	return d
}

// workers lists the workers as `devops workers -o json` prints them.
func (c *cluster) workers(ctx context.Context) ([]devops.Worker, error) {
	r := c.devops(ctx, "workers", "-o", "json")
	if r.code != 0 {
		return nil, fmt.Errorf("devops workers: exit %d: %s", r.code, r.stderr)
	}
	ws, err := decodeList(r.stdout, func() *pb.Worker { return &pb.Worker{} }, wire.WorkerFromPB)
	if err != nil {
		return nil, fmt.Errorf("devops workers -o json: %v", err)
	}
	return ws, nil
}

// decodeList reads a list that -o json printed, the API's messages in
// protobuf's JSON mapping, and converts each.
func decodeList[M proto.Message, T any](out []byte, newM func() M, convert func(M) T) ([]T, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(out, &raws); err != nil {
		return nil, err
	}
	xs := make([]T, len(raws))
	for i, raw := range raws {
		m := newM()
		if err := protojson.Unmarshal(raw, m); err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
		xs[i] = convert(m)
	}
	return xs, nil
}

// waitWorker waits until the named worker is in state and returns how long
// that took.
func (c *cluster) waitWorker(name string, state devops.WorkerState, timeout time.Duration) time.Duration {
	c.tb.Helper()
	return c.waitFor(timeout, fmt.Sprintf("worker %s %s", name, state), func(ctx context.Context) (bool, string) {
		ws, err := c.workers(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, w := range ws {
			if w.Name == name {
				return w.State == state, w.State.String()
			}
		}
		return false, "not registered"
	})
}

// status is `devops status ID -o json`.
func (c *cluster) status(ctx context.Context, id devops.ProcessID) (devops.Process, error) {
	r := c.devops(ctx, "status", string(id), "-o", "json")
	if r.code != 0 {
		return devops.Process{}, fmt.Errorf("devops status: exit %d: %s", r.code, r.stderr)
	}
	var p pb.Process
	if err := protojson.Unmarshal(r.stdout, &p); err != nil {
		return devops.Process{}, fmt.Errorf("devops status -o json: %v", err)
	}
	return wire.ProcessFromPB(&p), nil
}

// waitProcess waits until ok accepts the process and returns it and how
// long that took.
func (c *cluster) waitProcess(id devops.ProcessID, timeout time.Duration, what string, ok func(devops.Process) bool) (devops.Process, time.Duration) {
	c.tb.Helper()
	var p devops.Process
	d := c.waitFor(timeout, fmt.Sprintf("process %s %s", id, what), func(ctx context.Context) (bool, string) {
		var err error
		if p, err = c.status(ctx, id); err != nil {
			return false, err.Error()
		}
		return ok(p), fmt.Sprintf("%s, %d bytes, reason %q", p.State, p.OutputBytes, p.Reason)
	})
	return p, d
}

// inState accepts a process in any of states.
func inState(states ...devops.State) func(devops.Process) bool {
	return func(p devops.Process) bool { return slices.Contains(states, p.State) }
}

// detach starts a command with `devops run --detach` and returns its id.
func (c *cluster) detach(ctx context.Context, args ...string) devops.ProcessID {
	c.tb.Helper()
	out := c.mustDevops(ctx, append([]string{"run", "--detach"}, args...)...)
	ids := strings.Fields(string(out))
	if len(ids) != 1 {
		c.tb.Fatalf("devops run --detach %v printed %q, want one id", args, out)
	}
	return devops.ProcessID(ids[0])
}

// docker runs the docker CLI and returns its trimmed stdout; an error fails
// the test.
func (c *cluster) docker(args ...string) string {
	c.tb.Helper()
	out, err := exec.Command("docker", args...).Output()
	if err != nil {
		var xe *exec.ExitError
		if errors.As(err, &xe) {
			err = fmt.Errorf("%v: %s", err, bytes.TrimSpace(xe.Stderr))
		}
		c.tb.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// container returns the id of the container of a compose service.
func (c *cluster) container(service string) string {
	c.tb.Helper()
	args := []string{"ps", "-a", "-q", "--filter", "label=com.docker.compose.service=" + service}
	if c.project != "" {
		args = append(args, "--filter", "label=com.docker.compose.project="+c.project)
	}
	ids := strings.Fields(c.docker(args...))
	if len(ids) != 1 {
		c.tb.Fatalf("service %s: %d containers (%v); set COMPOSE_PROJECT_NAME to pick the cluster", service, len(ids), ids)
	}
	return ids[0]
}

// network returns the (first) network a container is attached to.
func (c *cluster) network(container string) string {
	c.tb.Helper()
	nets := strings.Fields(c.docker("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", container))
	if len(nets) == 0 {
		c.tb.Fatalf("container %s is on no network", container)
	}
	return nets[0]
}

// lines returns the output of a command printing "line 0" to "line n-1".
func lines(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.Bytes()
}

// linesCmd prints "line 0" to "line n-1", one every pause, so that it runs
// for about n*pause.
func linesCmd(n int, pause string) string {
	return fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "line $i"; i=$((i+1)); sleep %s; done`, n, pause)
}

// equalBytes fails the test unless got is want, naming the first difference.
func equalBytes(tb testing.TB, what string, got, want []byte) {
	tb.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	excerpt := func(b []byte) []byte { return b[max(0, i-20):min(len(b), i+20)] }
	tb.Fatalf("%s: %d bytes, want %d; first difference at byte %d: got %q, want %q",
		what, len(got), len(want), i, excerpt(got), excerpt(want))
}

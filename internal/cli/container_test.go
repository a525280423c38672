package cli_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
	"github.com/devops-platform/devops/internal/testcluster"
)

// containerImage is the image scripts/docker-base.sh builds locally from
// Debian's busybox-static: these machines have no registry to pull from.
const containerImage = "devops-base:busybox"

// requireDocker skips the test unless a Docker engine answers and holds
// containerImage (built here when missing); it returns a client of it.
func requireDocker(tb testing.TB) *client.Client {
	tb.Helper()
	c, err := client.New(client.FromEnv)
	if err != nil {
		tb.Skipf("needs a Docker client: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		tb.Skipf("needs a Docker engine: %v", err)
	}
	if _, err := c.ImageInspect(ctx, containerImage); err != nil {
		out, berr := exec.Command("bash", "../../scripts/docker-base.sh", containerImage).CombinedOutput()
		if berr != nil {
			tb.Skipf("needs image %s, which could not be built (%v): %s", containerImage, berr, out)
		}
	}
	return c
}

// containersOf lists the containers, running or not, of process id.
func containersOf(tb testing.TB, c *client.Client, id string) []string {
	tb.Helper()
	res, err := c.ContainerList(context.Background(), client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", executor.LabelProcessID+"="+id),
	})
	if err != nil {
		tb.Fatalf("list containers: %v", err)
	}
	var ids []string
	for _, s := range res.Items {
		ids = append(ids, s.ID)
	}
	return ids
}

func TestRunInContainer(t *testing.T) {
	dc := requireDocker(t)
	c := testcluster.Start(t, testcluster.Options{})
	ws, err := c.Client.Workers(t.Context())
	if err != nil || len(ws) != 1 || !ws[0].Fingerprint.Docker {
		t.Fatalf("Workers = %+v, %v; want one reporting docker", ws, err)
	}

	r := c.CLI(t.Context(), "run", "--image", containerImage, "-e", "A=a b", "--",
		"sh", "-c", `printf 'out\000put\n'; printf "$A\n" >&2; printf 'more'; exit 3`)
	if r.Code != 3 || r.Stdout != "out\x00put\nmore" || r.Stderr != "a b\n" {
		t.Errorf("run --image = %d, stdout %q, stderr %q; want 3, %q, %q", r.Code, r.Stdout, r.Stderr, "out\x00put\nmore", "a b\n")
	}
	ps, err := c.Client.Processes(t.Context(), devops.StateFailed, "")
	if err != nil || len(ps) != 1 {
		t.Fatalf("Processes = %v, %v; want one", ps, err)
	}
	// The shim removes the container once the status is down.
	testcluster.Eventually(t, 10*time.Second, "the container removed after the process ended", func() bool {
		return len(containersOf(t, dc, string(ps[0].ID))) == 0
	})

	r = c.CLI(t.Context(), "run", "--image", containerImage, "--timeout", "300ms", "--grace", "200ms", "--", "sh", "-c", "trap '' TERM; sleep 30")
	if r.Code != 124 {
		t.Errorf("run --image --timeout exited %d, want 124 (stderr %q)", r.Code, r.Stderr)
	}
}

// TestKillStopsContainer: `devops kill` of a container process stops the
// container, and the container is removed.
func TestKillStopsContainer(t *testing.T) {
	dc := requireDocker(t)
	c := testcluster.Start(t, testcluster.Options{})
	r := c.CLI(t.Context(), "run", "--detach", "--image", containerImage, "--memory", "64M", "--cpus", "0.5", "--pids", "50",
		"--", "sh", "-c", "echo started; sleep 600")
	if r.Code != 0 {
		t.Fatalf("run --detach --image exited %d: %s", r.Code, r.Stderr)
	}
	id := strings.TrimSpace(r.Stdout)
	var cid string
	testcluster.Eventually(t, 10*time.Second, "container running", func() bool {
		ids := containersOf(t, dc, id)
		if len(ids) != 1 {
			return false
		}
		info, err := dc.ContainerInspect(t.Context(), ids[0], client.ContainerInspectOptions{})
		if err != nil || info.Container.State == nil || !info.Container.State.Running {
			return false
		}
		cid = ids[0]
		hc := info.Container.HostConfig
		if hc.Memory != 64<<20 || hc.NanoCPUs != 500_000_000 || hc.PidsLimit == nil || *hc.PidsLimit != 50 {
			t.Errorf("container limits: Memory %d NanoCPUs %d PidsLimit %v; want 64 MiB, 5e8, 50", hc.Memory, hc.NanoCPUs, hc.PidsLimit)
		}
		return true
	})
	// Running is not yet past the echo: a SIGTERM before it would leave no output.
	testcluster.Eventually(t, 10*time.Second, "output started", func() bool {
		p, err := c.Client.Status(t.Context(), devops.ProcessID(id))
		return err == nil && p.OutputBytes >= int64(len("started\n"))
	})
	if r := c.CLI(t.Context(), "kill", "--grace", "5s", id); r.Code != 0 {
		t.Fatalf("kill exited %d: %s", r.Code, r.Stderr)
	}
	r = c.CLI(t.Context(), "logs", "-f", id)
	if r.Code != 128+15 || r.Stdout != "started\n" {
		t.Errorf("logs -f of the killed container process = %d, %q; want 143, %q", r.Code, r.Stdout, "started\n")
	}
	p, err := c.Client.Status(t.Context(), devops.ProcessID(id))
	if err != nil || p.State != devops.StateTerminated || p.Signal != 15 {
		t.Errorf("status = %+v, %v; want TERMINATED by signal 15", p, err)
	}
	testcluster.Eventually(t, 10*time.Second, "container "+cid+" removed", func() bool { return len(containersOf(t, dc, id)) == 0 })
}

// TestContainerOutlivesWorkerCrash: a container process is supervised by a
// shim like any process, so a worker that crashes leaves it running, and
// the next worker adopts it and can still kill it.
func TestContainerOutlivesWorkerCrash(t *testing.T) {
	dc := requireDocker(t)
	c := testcluster.Start(t, testcluster.Options{})
	r := c.CLI(t.Context(), "run", "--detach", "--image", containerImage, "--", "sh", "-c", "echo started; sleep 600")
	if r.Code != 0 {
		t.Fatalf("run --detach --image exited %d: %s", r.Code, r.Stderr)
	}
	id := devops.ProcessID(strings.TrimSpace(r.Stdout))
	testcluster.Eventually(t, 10*time.Second, "running", func() bool { return stateOf(t, c, id) == devops.StateRunning })

	c.CrashWorker(0)
	c.StartWorker(0)
	if ids := containersOf(t, dc, string(id)); len(ids) != 1 {
		t.Fatalf("containers after the worker crash = %v, want the one still there", ids)
	}
	if r := c.CLI(t.Context(), "kill", "--grace", "5s", string(id)); r.Code != 0 {
		t.Fatalf("kill after the restart exited %d: %s", r.Code, r.Stderr)
	}
	if r := c.CLI(t.Context(), "logs", "-f", string(id)); r.Code != 128+15 || r.Stdout != "started\n" {
		t.Errorf("logs -f = %d, %q; want 143, %q", r.Code, r.Stdout, "started\n")
	}
	testcluster.Eventually(t, 10*time.Second, "container removed", func() bool { return len(containersOf(t, dc, string(id))) == 0 })
}

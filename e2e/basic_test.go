//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
)

func TestRunOnEachWorker(t *testing.T) {
	c := newCluster(t)
	for _, name := range workerNames {
		t.Run(name, func(t *testing.T) {
			r := c.devops(t.Context(), "run", "--worker", name, "--", "sh", "-c", `echo "out $1"; echo "err $1" >&2`, "sh", name)
			if r.code != 0 || string(r.stdout) != "out "+name+"\n" || string(r.stderr) != "err "+name+"\n" {
				t.Fatalf("devops run --worker %s = exit %d, stdout %q, stderr %q; want 0, %q, %q",
					name, r.code, r.stdout, r.stderr, "out "+name+"\n", "err "+name+"\n")
			}
		})
	}
}

func TestRunOnAll(t *testing.T) {
	c := newCluster(t)
	tests := []struct {
		name   string
		target []string
		want   []string // worker names, sorted
	}{
		{"all", []string{"--all"}, workerNames},
		{"selector", []string{"--selector", "zone in (a,b)"}, []string{"w1", "w2"}},
		{"not", []string{"--selector", "zone!=a"}, []string{"w2", "w3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"run"}, tt.target...), "--", "hostname")
			r := c.devops(t.Context(), args...)
			if r.code != 0 {
				t.Fatalf("devops %v: exit %d: %s", args, r.code, r.stderr)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSuffix(string(r.stdout), "\n"), "\n") {
				name, host, ok := strings.Cut(l, ": ")
				if !ok || host == "" {
					t.Fatalf("devops %v printed %q, want NAME: HOSTNAME lines", args, r.stdout)
				}
				got = append(got, name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("devops %v ran on %v, want %v", args, got, tt.want)
			}
		})
	}
}

// TestOutputByteExact sends a few MB through the whole path (worker spool,
// manager store, CLI) and compares every byte, on stdout and stderr.
func TestOutputByteExact(t *testing.T) {
	c := newCluster(t)
	t.Run("known text", func(t *testing.T) {
		var want bytes.Buffer
		for i := 1; i <= 400000; i++ { // 2.7 MB
			fmt.Fprintf(&want, "%d\n", i)
		}
		var wantErr bytes.Buffer
		for i := 1; i <= 20000; i++ {
			fmt.Fprintf(&wantErr, "%d\n", i)
		}
		start := time.Now()
		r := c.devops(t.Context(), "run", "--worker", "w1", "--", "sh", "-c", "seq 1 400000; seq 1 20000 >&2")
		if r.code != 0 {
			t.Fatalf("exit %d: %.200s", r.code, r.stderr)
		}
		equalBytes(t, "stdout", r.stdout, want.Bytes())
		equalBytes(t, "stderr", r.stderr, wantErr.Bytes())
		t.Logf("%d bytes byte-exact in %v", len(r.stdout)+len(r.stderr), time.Since(start).Round(time.Millisecond))
	})
	t.Run("random binary", func(t *testing.T) {
		// 4 MiB of every byte value; the worker prints their sha256 on stderr.
		r := c.devops(t.Context(), "run", "--worker", "w2", "--", "sh", "-c",
			`head -c 4194304 /dev/urandom >blob && cat blob && sha256sum blob | cut -d' ' -f1 >&2`)
		if r.code != 0 {
			t.Fatalf("exit %d: %.200s", r.code, r.stderr)
		}
		sum := sha256.Sum256(r.stdout)
		if len(r.stdout) != 4<<20 || hex.EncodeToString(sum[:]) != strings.TrimSpace(string(r.stderr)) {
			t.Fatalf("got %d bytes with sha256 %x; the worker wrote %d bytes with sha256 %s",
				len(r.stdout), sum, 4<<20, bytes.TrimSpace(r.stderr))
		}
	})
}

// TestLargeStdin sends a standard input over the 4 MiB a request carries
// (uploaded to the manager, then handed to each worker container across
// the network) to every worker, which each print its sha256.
func TestLargeStdin(t *testing.T) {
	c := newCluster(t)
	data := make([]byte, 12<<20+3)
	rand.Read(data)
	sum := sha256.Sum256(data)
	cmd := c.command(t.Context(), "run", "--all", "-i", "--", "sha256sum")
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("run --all -i -- sha256sum of 12 MiB: %v: %s", err, out)
	}
	for _, w := range []string{"w1", "w2", "w3"} {
		if want := fmt.Sprintf("%s: %x  -\n", w, sum); !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestExitCodes(t *testing.T) {
	c := newCluster(t)
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"zero", []string{"--", "true"}, 0},
		{"false", []string{"--", "false"}, 1},
		{"code", []string{"--selector", "zone=c", "--", "sh", "-c", "exit 7"}, 7},
		{"all", []string{"--all", "--", "sh", "-c", "exit 3"}, 3},
		{"SIGTERM", []string{"--", "sh", "-c", "kill -TERM $$"}, 128 + 15},
		{"SIGKILL", []string{"--", "sh", "-c", "kill -KILL $$"}, 128 + 9},
		{"timeout", []string{"--timeout", "1s", "--grace", "1s", "--", "sleep", "30"}, 124},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.devops(t.Context(), append([]string{"run"}, tt.args...)...)
			if r.code != tt.want {
				t.Errorf("devops run %v: exit %d, want %d (stderr %q)", tt.args, r.code, tt.want, r.stderr)
			}
		})
	}
	t.Run("no such command", func(t *testing.T) {
		r := c.devops(t.Context(), "run", "--", "no-such-command")
		if r.code == 0 || len(r.stderr) == 0 {
			t.Errorf("devops run -- no-such-command: exit %d, stderr %q; want non-zero and a message", r.code, r.stderr)
		}
	})
}

// TestKill terminates a process tree, including a child in its own session,
// and checks the worker container is left with none of it.
func TestKill(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	id := c.detach(ctx, "--worker", "w3", "--", "sh", "-c", "sleep 1000 & setsid sleep 1000 & echo started; wait")
	logs := c.start("logs", "-f", "--from", "0", string(id))
	c.waitProcess(id, 30*time.Second, "RUNNING with output", func(p devops.Process) bool {
		return p.State == devops.StateRunning && p.OutputBytes > 0
	})
	start := time.Now()
	c.mustDevops(ctx, "kill", "--grace", "2s", string(id))
	p, took := c.waitProcess(id, 20*time.Second, "TERMINATED", inState(devops.StateTerminated))
	t.Logf("kill: TERMINATED after %v (signal %d)", took.Round(time.Millisecond), p.Signal)
	if code := logs.wait(t, 20*time.Second); code != p.ExitCode() || code < 128 {
		t.Errorf("devops logs -f exited %d, want %d (128+signal)", code, p.ExitCode())
	}
	if got := logs.stdout.String(); got != "started\n" {
		t.Errorf("devops logs -f printed %q, want %q", got, "started\n")
	}
	w3 := c.container("w3")
	c.waitFor(10*time.Second, "no sleep 1000 left in w3", func(ctx context.Context) (bool, string) {
		out := c.docker("exec", w3, "ps", "-o", "pid,args")
		return !strings.Contains(out, "sleep 1000"), out
	})
	t.Logf("kill: process tree gone %v after devops kill", time.Since(start).Round(time.Millisecond))
}

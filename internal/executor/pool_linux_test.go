package executor_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
)

// waitWarm waits until e has at least n idle warm shims.
func waitWarm(tb testing.TB, e *executor.Executor, n int) {
	tb.Helper()
	waitFor(tb, fmt.Sprintf("%d warm shims", n), 30*time.Second, func() bool {
		shims, _ := executor.WarmShims(e)
		return len(shims) >= n
	})
}

// startSupervised starts spec as id with its files in a new directory.
func startSupervised(tb testing.TB, e *executor.Executor, id string, spec devops.Spec) (*executor.Process, string) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), id)
	p, err := e.StartSupervised(tb.Context(), devops.ProcessID(id), spec, dir)
	if err != nil {
		tb.Fatalf("StartSupervised(%q): %v", spec.Argv, err)
	}
	return p, dir
}

// cgroupLimits prints the memory and CPU limits of the cgroup the shell is
// in, on v1 or v2, and whether its init (PID 1) is in the same cgroups.
const cgroupLimits = `while IFS=: read -r _ ctrls path; do
  case ",$ctrls," in
  *,memory,*) cat /sys/fs/cgroup/memory$path/memory.limit_in_bytes ;;
  *,cpu,*) cat /sys/fs/cgroup/cpu$path/cpu.cfs_quota_us ;;
  ,,) cat /sys/fs/cgroup$path/memory.max /sys/fs/cgroup$path/cpu.max 2>/dev/null ;;
  esac
done < /proc/self/cgroup
cmp -s /proc/1/cgroup /proc/self/cgroup && echo init in the same cgroups`

// TestPoolSameAsCold runs each spec cold and through a warm shim and
// expects the same output and status.
func TestPoolSameAsCold(t *testing.T) {
	coldRoot, warmRoot := t.TempDir(), t.TempDir()
	cold := newExecutorConfig(t, executor.Config{Root: coldRoot})
	warm := newExecutorConfig(t, executor.Config{Root: warmRoot, WarmShims: 2})
	root := os.Geteuid() == 0
	tests := []struct {
		name     string
		spec     devops.Spec
		root     bool // needs root and cgroups
		contains string
	}{
		{name: "exit and streams", spec: devops.Spec{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, contains: "out"},
		{name: "not found", spec: devops.Spec{Argv: []string{"no-such-command-xyz"}}, contains: "command not found"},
		{name: "env", spec: devops.Spec{Argv: []string{"sh", "-c", "env | sort"}, Env: map[string]string{"FOO": "bar"}}, contains: "FOO=bar"},
		{name: "dir and home", spec: devops.Spec{Argv: []string{"sh", "-c", "pwd; echo $HOME; touch f && echo ok"}}, contains: "ok"},
		{name: "truncated", spec: devops.Spec{Argv: []string{"echo", "0123456789"}, Limits: devops.Limits{MaxOutputBytes: 4}}, contains: "0123"},
		{name: "timeout", spec: devops.Spec{Argv: []string{"sleep", "60"}, Timeout: 200 * time.Millisecond, Grace: time.Second}},
		{name: "namespaces", root: true, spec: devops.Spec{Argv: []string{"sh", "-c", "echo $PPID; hostname; ls /tmp | wc -l; grep -c ' /proc proc ' /proc/self/mounts"}}, contains: "ID"},
		{name: "user", root: true, spec: devops.Spec{Argv: []string{"sh", "-c", "id -u; id -g"}, User: "65534", Dir: "/"}, contains: "65534"},
		{name: "limits", root: true, spec: devops.Spec{Argv: []string{"sh", "-c", cgroupLimits}, Limits: devops.Limits{MemoryBytes: 64 << 20, CPUs: 0.5}}, contains: "init in the same cgroups"},
		{name: "pids limit", root: true, spec: devops.Spec{Argv: []string{"sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 0.5 & done; wait"}, Limits: devops.Limits{Pids: 4}}, contains: "fork"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root {
				if !root {
					t.Skip("needs root")
				}
				requireCgroups(t, warm)
			}
			type outcome struct {
				st             devops.ExitStatus
				stdout, stderr string
			}
			runIn := func(e *executor.Executor, root, id string, pooled bool) outcome {
				t.Helper()
				if pooled {
					waitWarm(t, e, 1)
				}
				p, dir := startSupervised(t, e, id, tt.spec)
				if p.Pooled() != pooled {
					t.Fatalf("%s: Pooled = %v, want %v", id, p.Pooled(), pooled)
				}
				st := waitEnd(t, p, 20*time.Second)
				stdout, stderr := readFrames(t, dir)
				// What depends on the executor and the id: the root, the
				// host name and the id itself.
				r := strings.NewReplacer(root, "ROOT", id, "ID", strings.ReplaceAll(id, "-", ""), "ID")
				st.EndedAt, st.CPUTime, st.PeakMemory = time.Time{}, 0, 0
				return outcome{st: st, stdout: r.Replace(stdout), stderr: r.Replace(stderr)}
			}
			c := runIn(cold, coldRoot, fmt.Sprintf("cold-%d", i), false)
			w := runIn(warm, warmRoot, fmt.Sprintf("warm-%d", i), true)
			if c != w {
				t.Errorf("cold:   %+v\nwarm:   %+v", c, w)
			}
			if !strings.Contains(w.stdout+w.stderr, tt.contains) {
				t.Errorf("output %q %q does not contain %q", w.stdout, w.stderr, tt.contains)
			}
			t.Logf("%+v", w)
		})
	}
}

// TestPoolRefills: a take is refilled (by the shim itself once its process
// ended, or by a new one), and the pool holds no more than its size.
func TestPoolRefills(t *testing.T) {
	e := newExecutorConfig(t, executor.Config{WarmShims: 2})
	waitWarm(t, e, 2)
	if n := e.WarmIdle(); n != 2 {
		t.Errorf("WarmIdle() = %d with the pool full, want 2", n)
	}
	before, _ := executor.WarmShims(e)
	p, _ := startSupervised(t, e, "refill", devops.Spec{Argv: []string{"true"}})
	if !p.Pooled() {
		t.Errorf("the start did not take a warm shim")
	}
	waitEnd(t, p, 10*time.Second)
	waitFor(t, "a new warm shim", 30*time.Second, func() bool {
		now, _ := executor.WarmShims(e)
		return len(now) == 2 && !slices.Equal(now, before)
	})
	now, inits := executor.WarmShims(e)
	if now[0] != before[1] {
		t.Errorf("warm shims %v after %v: want the oldest taken, the other kept", now, before)
	}
	for _, pid := range append(now, inits...) {
		if !alive(pid) {
			t.Errorf("warm shim or init %d is not running", pid)
		}
	}
	if len(now) > 2 {
		t.Errorf("%d warm shims, want 2", len(now))
	}
	if n := e.WarmIdle(); n != 2 {
		t.Errorf("WarmIdle() = %d once refilled, want 2", n)
	}
}

// TestPoolClose: Close ends every idle shim and init, also while a refill
// is under way, and leaves running processes alone.
func TestPoolClose(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		before := warmChildren()
		e := newExecutorConfig(t, executor.Config{WarmShims: 2})
		waitWarm(t, e, 2)
		p, dir := startSupervised(t, e, "keeps-running", devops.Spec{Argv: []string{"sh", "-c", "echo up; exec sleep 60"}})
		shims, inits := executor.WarmShims(e)
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		for _, pid := range append(shims, inits...) {
			if alive(pid) {
				t.Errorf("warm shim or init %d runs on after Close", pid)
			}
		}
		// The process's own shim and init came from the pool too.
		if left := newSince(before, warmChildren(p.Pid(), atoi(ppid(fmt.Sprint(p.Pid()))))); len(left) > 0 {
			t.Errorf("warm shims left after Close: %v", left)
		}
		select {
		case <-p.Done():
			t.Fatalf("a running process ended with Close: %+v", p.Wait())
		default:
		}
		waitFor(t, "output", 10*time.Second, func() bool { o, _ := readFrames(t, dir); return o == "up\n" })
		p.Terminate(syscall.SIGKILL, 0)
		if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateTerminated {
			t.Errorf("status = %+v, want TERMINATED", st)
		}
	})
	t.Run("while refilling", func(t *testing.T) {
		before := warmChildren()
		e := newExecutorConfig(t, executor.Config{WarmShims: 2})
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if left := newSince(before, warmChildren()); len(left) > 0 {
			t.Errorf("warm shims left after Close: %v", left)
		}
	})
}

// warmChildren lists the warm shims this test binary started, and inits
// with no command (a warm shim's), but for the pids in except.
func warmChildren(except ...int) []string {
	self := fmt.Sprint(os.Getpid())
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil || !alive(atoi(ent.Name())) || slices.Contains(except, atoi(ent.Name())) {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if len(args) < 3 || args[0] != os.Args[0] || args[1] != "__init" {
			continue
		}
		switch {
		case args[2] == "warm-shim" && ppid(ent.Name()) == self:
			found = append(found, "shim "+ent.Name())
		case args[2] == "--" && len(args) == 3:
			found = append(found, "init "+ent.Name())
		}
	}
	return found
}

// newSince is now less what was already there before: an init whose shim
// an earlier test killed ends by itself at EOF, maybe only after this test
// looked (seen once under make test's load: "init 8545" after Close, its
// origin unknown).
func newSince(before, now []string) []string {
	return slices.DeleteFunc(now, func(s string) bool { return slices.Contains(before, s) })
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

// ppid reads the parent of pid from /proc.
func ppid(pid string) string {
	b, _ := os.ReadFile(filepath.Join("/proc", pid, "status"))
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// startWarmPool starts the warmpool helper, a worker with a warm pool
// (env adds to its environment), and returns it with what it prints. The
// test's end kills it.
func startWarmPool(t *testing.T, env ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	bases := filepath.Join(t.TempDir(), "cgroup-bases")
	cmd.Env = append(append(os.Environ(), helperEnv+"=warmpool", "DEVOPS_TEST_ROOT="+t.TempDir(), "DEVOPS_TEST_BASES="+bases), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if b, err := os.ReadFile(bases); err == nil && len(b) > 0 {
			removeCgroupBases(t, strings.Split(string(b), "\n"))
		}
	})
	return cmd, bufio.NewReader(out)
}

// TestPoolEndsWithWorker: when the worker dies (kill -9), its idle shims
// read EOF on their config pipes and end, with their inits.
func TestPoolEndsWithWorker(t *testing.T) {
	cmd, out := startWarmPool(t)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	var pids [4]int
	if _, err := fmt.Sscan(line, &pids[0], &pids[1], &pids[2], &pids[3]); err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("warm shim or init %d is not running", pid)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, "the warm shims and inits to end", 10*time.Second, func() bool {
		return !slices.ContainsFunc(pids[:], alive)
	})
}

// TestPoolShimEndsAfterWorker: a shim that ran a process when the worker
// died records the status and then ends: nobody is left to give it the next.
func TestPoolShimEndsAfterWorker(t *testing.T) {
	cmd, out := startWarmPool(t, "DEVOPS_TEST_RUN=1")
	out.ReadString('\n') // the idle shims and inits
	line, err := out.ReadString('\n')
	var shim int
	var dir string
	if _, serr := fmt.Sscan(line, &shim, &dir); err != nil || serr != nil {
		t.Fatalf("helper said %q: %v %v", line, err, serr)
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, "the shim to end after its process", 20*time.Second, func() bool { return !alive(shim) })
	var st devops.ExitStatus
	b, err := os.ReadFile(filepath.Join(dir, executor.ExitFile))
	if err != nil || json.Unmarshal(b, &st) != nil || st.State != devops.StateSucceeded {
		t.Errorf("exit status %s (%v), want SUCCEEDED", b, err)
	}
}

// TestPoolAdopt: a process started by a warm shim outlives its executor and
// is adopted and terminated by the next one.
func TestPoolAdopt(t *testing.T) {
	root := t.TempDir()
	e := newExecutorConfig(t, executor.Config{Root: root, WarmShims: 1})
	waitWarm(t, e, 1)
	p, dir := startSupervised(t, e, "adopted", devops.Spec{Argv: []string{"sh", "-c", "echo up; exec sleep 60"}})
	if !p.Pooled() {
		t.Fatalf("the start did not take a warm shim")
	}
	waitFor(t, "output", 10*time.Second, func() bool { o, _ := readFrames(t, dir); return o == "up\n" })
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	next := newExecutorConfig(t, executor.Config{Root: root})
	q, err := next.Adopt("adopted", dir)
	if err != nil {
		t.Fatal(err)
	}
	if q.Pid() != p.Pid() {
		t.Errorf("adopted pid %d, want %d", q.Pid(), p.Pid())
	}
	q.Terminate(syscall.SIGTERM, 5*time.Second)
	if st := waitEnd(t, q, 10*time.Second); st.State != devops.StateTerminated || st.Signal != int(syscall.SIGTERM) {
		t.Errorf("status = %+v, want TERMINATED by SIGTERM", st)
	}
}

// TestStatusBeforeDisk: a shim tells how its process ended before it has
// put that on disk. A FIFO where the shim writes its status file holds it
// up (its open waits for a reader): Ended and the status come, with all
// the output in the file, while Done waits for the shim to be past it.
// The write then fails (a FIFO cannot be synced), so the shim does not
// come back: the pool starts another.
func TestStatusBeforeDisk(t *testing.T) {
	e := newExecutorConfig(t, executor.Config{WarmShims: 1})
	waitWarm(t, e, 1)
	shims, _ := executor.WarmShims(e)
	dir := filepath.Join(t.TempDir(), "held")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, executor.ExitFile+".tmp"+strconv.Itoa(shims[0]))
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Should the test fail before it reads the FIFO, the shim must not
	// wait on it for ever: a reader that opens and goes lets it on.
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	p, err := e.StartSupervised(t.Context(), "held", devops.Spec{Argv: []string{"sh", "-c", "echo hi; exit 3"}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Ended():
	case <-time.After(10 * time.Second):
		t.Fatal("no status while the shim is held up writing it")
	}
	if st := p.Status(); st.State != devops.StateFailed || st.Code != 3 {
		t.Errorf("status = %+v, want exit 3", st)
	}
	if o, _ := readFrames(t, dir); o != "hi\n" {
		t.Errorf("output when the status came: %q", o)
	}
	select {
	case <-p.Done():
		t.Fatal("Done while the shim is still writing the status")
	default:
	}
	f, err := os.Open(fifo)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk devops.ExitStatus
	err = json.NewDecoder(f).Decode(&onDisk)
	f.Close()
	if err != nil || onDisk.Code != 3 {
		t.Errorf("the shim wrote %+v (%v)", onDisk, err)
	}
	waitEnd(t, p, 10*time.Second)
	waitFor(t, "a new shim in the pool", 30*time.Second, func() bool {
		now, _ := executor.WarmShims(e)
		return len(now) == 1 && now[0] != shims[0]
	})
	waitFor(t, "the shim that could not write its status to end", 10*time.Second, func() bool { return !alive(shims[0]) })
}

// TestPoolReusesShim: a shim whose process ended starts an init again and
// waits in the pool for the next process, which it runs like the first; a
// late stop for the first does not reach the next.
func TestPoolReusesShim(t *testing.T) {
	e := newExecutorConfig(t, executor.Config{WarmShims: 2})
	// Only the shim coming back may fill the pool: no delayed refill.
	executor.NoDelayedRefill(e)
	waitWarm(t, e, 2)
	shims, inits := executor.WarmShims(e)
	first, firstDir := startSupervised(t, e, "first", devops.Spec{Argv: []string{"sh", "-c", "echo one; echo err >&2; exit 3"}})
	if !first.Pooled() {
		t.Fatal("the first start did not take a warm shim")
	}
	if st := waitEnd(t, first, 10*time.Second); st.State != devops.StateFailed || st.Code != 3 {
		t.Fatalf("first: status = %+v, want exit 3", st)
	}
	if o, e := readFrames(t, firstDir); o != "one\n" || e != "err\n" {
		t.Errorf("first: output %q %q", o, e)
	}
	waitWarm(t, e, 2)
	now, newInits := executor.WarmShims(e)
	stays := executor.InitsStay(e)
	if !slices.Equal(now, []int{shims[1], shims[0]}) || (newInits[1] == inits[0]) != stays {
		t.Fatalf("pool %v (inits %v) after the first process of %v (inits %v): want shim %d back, with the same init: %v", now, newInits, shims, inits, shims[0], stays)
	}
	if !stays && alive(inits[0]) {
		t.Errorf("the first process's init %d runs on", inits[0])
	}
	// The oldest goes first: the other shim, then the one back.
	other, _ := startSupervised(t, e, "other", devops.Spec{Argv: []string{"sleep", "60"}})
	// Until Done its shim writes into its directory, which the test's
	// cleanup removes.
	defer other.Wait()
	defer other.Terminate(syscall.SIGKILL, 0)
	next, dir := startSupervised(t, e, "next", devops.Spec{Argv: []string{"sh", "-c", "echo two; exec sleep 60"}})
	if !next.Pooled() {
		t.Fatal("the next start did not take the shim back")
	}
	waitFor(t, "output", 10*time.Second, func() bool { o, _ := readFrames(t, dir); return o == "two\n" })
	first.Terminate(syscall.SIGKILL, 0)
	next.Terminate(syscall.SIGTERM, 5*time.Second)
	if st := waitEnd(t, next, 10*time.Second); st.State != devops.StateTerminated || st.Signal != int(syscall.SIGTERM) {
		t.Errorf("next: status = %+v, want TERMINATED by SIGTERM", st)
	}
	if st := first.Wait(); st.Code != 3 {
		t.Errorf("first: status changed to %+v", st)
	}
}

// stayingInits makes an executor with n warm shims whose inits stay for
// the next command, refilled only by the shims that come back, and waits
// for them; the test is skipped where inits do not stay.
func stayingInits(t *testing.T, n int) *executor.Executor {
	t.Helper()
	e := newExecutorConfig(t, executor.Config{WarmShims: n})
	if !executor.InitsStay(e) {
		t.Skip("inits stay only with namespaces and cgroups")
	}
	executor.NoDelayedRefill(e)
	waitWarm(t, e, n)
	return e
}

// TestPoolInitStaysClean: an init that stays for the next process (on a
// shim that came back) leaves it nothing of the one before: no process, no
// file in /tmp, no mount, no IPC object, not its host name; the next one
// gets its own output and status.
func TestPoolInitStaysClean(t *testing.T) {
	e := stayingInits(t, 2)
	shims, _ := executor.WarmShims(e)
	mess := `sleep 600 & echo left > /tmp/left; mkdir -p /mnt/devops-test && mount -t tmpfs none /mnt/devops-test;
ipcmk -M 4096 >/dev/null; hostname messed; echo $$ > /dev/null; exit 5`
	first, _ := startSupervised(t, e, "first", devops.Spec{Argv: []string{"sh", "-c", mess}})
	if st := waitEnd(t, first, 10*time.Second); st.Code != 5 {
		t.Fatalf("first: status = %+v, want exit 5", st)
	}
	waitWarm(t, e, 2)
	other, _ := startSupervised(t, e, "other", devops.Spec{Argv: []string{"sleep", "60"}})
	// Until Done its shim writes into its directory, which the test's
	// cleanup removes.
	defer other.Wait()
	defer other.Terminate(syscall.SIGKILL, 0)
	check := `n=0; for c in /proc/[0-9]*/comm; do read x < $c && [ "$x" = sleep ] && n=$((n+1)); done; echo sleeps=$n;
cat /tmp/left 2>/dev/null; mountpoint -q /mnt/devops-test && echo mounted; ipcs -m | grep -c '^0x' ; hostname; grep -c ' /tmp ' /proc/self/mountinfo; echo bye >&2`
	next, dir := startSupervised(t, e, "next", devops.Spec{Argv: []string{"sh", "-c", check}})
	if next.Pid() != first.Pid() {
		t.Fatalf("next ran under init %d, not the first's %d (shims %v)", next.Pid(), first.Pid(), shims)
	}
	if st := waitEnd(t, next, 10*time.Second); st.State != devops.StateSucceeded {
		t.Fatalf("next: status = %+v", st)
	}
	out, errOut := readFrames(t, dir)
	want := "sleeps=0\n0\nnext\n1\n"
	if out != want || errOut != "bye\n" {
		t.Errorf("next saw %q (stderr %q), want %q (no sleep, no file in /tmp, no mount, no shared memory, its own host name, one /tmp: the last one's gone)", out, errOut, want)
	}
}

// TestPoolLargeConfig: a config larger than the init's socket buffer (an
// environment of 400 KB) reaches a warm init whole.
func TestPoolLargeConfig(t *testing.T) {
	e := newExecutorConfig(t, executor.Config{WarmShims: 1})
	waitWarm(t, e, 1)
	env := map[string]string{}
	for i := range 4 {
		env[fmt.Sprintf("BIG%d", i)] = strings.Repeat(string(rune('a'+i)), 100_000)
	}
	p, dir := startSupervised(t, e, "big", devops.Spec{Argv: []string{"sh", "-c", `echo ${#BIG0} ${#BIG1} ${#BIG2} ${#BIG3}; printf %.1s "$BIG3"`}, Env: env})
	if !p.Pooled() {
		t.Fatal("the start did not take the warm shim")
	}
	if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateSucceeded {
		t.Fatalf("status = %+v", st)
	}
	if o, _ := readFrames(t, dir); o != "100000 100000 100000 100000\nd" {
		t.Errorf("output = %q", o)
	}
}

// TestPoolCloseWaitsForReturns: Close right after a process ended ends
// its shim too, on its way back to the pool with a new init or not.
func TestPoolCloseWaitsForReturns(t *testing.T) {
	before := warmChildren()
	e := newExecutorConfig(t, executor.Config{WarmShims: 2})
	executor.NoDelayedRefill(e)
	waitWarm(t, e, 2)
	p, _ := startSupervised(t, e, "ends", devops.Spec{Argv: []string{"true"}})
	waitEnd(t, p, 10*time.Second)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if left := newSince(before, warmChildren()); len(left) > 0 {
		t.Errorf("warm shims or inits left after Close: %v", left)
	}
}

// TestPoolStaysWithinSize: a take that empties the pool, and the shim of
// the process comes back (or, where the kick after refillDelay came first,
// a new one is started and the one coming back goes): one shim in the
// pool.
func TestPoolStaysWithinSize(t *testing.T) {
	e := newExecutorConfig(t, executor.Config{WarmShims: 1})
	waitWarm(t, e, 1)
	shims, _ := executor.WarmShims(e)
	p, _ := startSupervised(t, e, "true", devops.Spec{Argv: []string{"true"}})
	waitEnd(t, p, 10*time.Second)
	waitFor(t, "the shim back or gone, and one shim in the pool", 30*time.Second, func() bool {
		now, _ := executor.WarmShims(e)
		return (slices.Contains(now, shims[0]) || !alive(shims[0])) && len(now) == 1
	})
}

// TestPoolDisabled: with no warm shims every start is cold, and a negative
// size is refused.
func TestPoolDisabled(t *testing.T) {
	e := newExecutorConfig(t, executor.Config{WarmShims: 0})
	p, dir := startSupervised(t, e, "cold", devops.Spec{Argv: []string{"echo", "hi"}})
	if p.Pooled() {
		t.Errorf("Pooled with no pool")
	}
	if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateSucceeded {
		t.Errorf("status = %+v", st)
	}
	if o, _ := readFrames(t, dir); o != "hi\n" {
		t.Errorf("output = %q", o)
	}
	if shims, _ := executor.WarmShims(e); len(shims) != 0 {
		t.Errorf("warm shims %v with the pool off", shims)
	}
	_, err := executor.New(executor.Config{Root: t.TempDir(), WarmShims: -1, NoDocker: true})
	if !errors.Is(err, devops.ErrInvalid) {
		t.Errorf("New with -1 warm shims = %v, want ErrInvalid", err)
	}
}

// TestPoolWithoutNamespaces: warm shims also serve an executor that starts
// processes without namespaces (cgroups only).
func TestPoolWithoutNamespaces(t *testing.T) {
	requireRoot(t)
	e := newExecutorConfig(t, executor.Config{WarmShims: 1})
	requireCgroups(t, e)
	executor.WithoutNamespaces(e)
	waitWarm(t, e, 1)
	p, dir := startSupervised(t, e, "nons", devops.Spec{Argv: []string{"sh", "-c", "test $$ != 1 && echo not-pid-1"}})
	if !p.Pooled() {
		t.Errorf("the start did not take a warm shim")
	}
	if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateSucceeded {
		t.Errorf("status = %+v", st)
	}
	if o, e := readFrames(t, dir); o != "not-pid-1\n" {
		t.Errorf("output = %q, %q", o, e)
	}
}

// BenchmarkStartSupervised times a start of `echo hi` to its end, cold and
// through a warm shim (the refill runs outside the timer).
func BenchmarkStartSupervised(b *testing.B) {
	for _, warm := range []int{0, 1} {
		b.Run(fmt.Sprintf("warm=%d", warm), func(b *testing.B) {
			e := newExecutorConfig(b, executor.Config{WarmShims: warm})
			dir := b.TempDir()
			for i := range b.N {
				if warm > 0 {
					b.StopTimer()
					waitWarm(b, e, 1)
					b.StartTimer()
				}
				id := fmt.Sprintf("bench-%d", i)
				p, err := e.StartSupervised(b.Context(), devops.ProcessID(id), devops.Spec{Argv: []string{"/bin/echo", "hi"}}, filepath.Join(dir, id))
				if err != nil {
					b.Fatal(err)
				}
				<-p.Done()
			}
		})
	}
}

// TestPoolJoinsCgroupAhead: an idle warm init is already in a cgroup of its
// own (the move waits for the kernel, so it is done before a start needs
// it); the process it starts runs there under the process's limits, and the
// cgroup goes with the process, or with the idle shim when the pool closes.
func TestPoolJoinsCgroupAhead(t *testing.T) {
	requireRoot(t)
	e := newExecutorConfig(t, executor.Config{WarmShims: 1})
	requireCgroups(t, e)
	waitWarm(t, e, 1)
	shims, inits := executor.WarmShims(e)
	name := fmt.Sprintf("warm-%d", shims[0])
	dirs := warmCgroupDirs(t, inits[0], name)

	p, dir := startSupervised(t, e, "limited", devops.Spec{
		Argv:   []string{"sh", "-c", cgroupLimits + "; grep -c " + name + " /proc/self/cgroup"},
		Limits: devops.Limits{MemoryBytes: 64 << 20},
	})
	if !p.Pooled() {
		t.Fatal("the start did not take the warm shim")
	}
	if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateSucceeded {
		t.Fatalf("status = %+v", st)
	}
	out, _ := readFrames(t, dir)
	if !strings.Contains(out, "67108864") || !strings.Contains(out, "init in the same cgroups") {
		t.Errorf("output = %q: want the 64 MiB limit, with the init in the same cgroups", out)
	}
	if n := strings.Fields(out); len(n) == 0 || atoi(n[len(n)-1]) != len(dirs) {
		t.Errorf("output = %q: want the command in the %d cgroups its init joined ahead", out, len(dirs))
	}
	// The shim removes them once the status is down, just after the end.
	for _, d := range dirs {
		waitFor(t, "the removal of cgroup "+d+" of the ended process", 10*time.Second, func() bool {
			_, err := os.Stat(d)
			return errors.Is(err, os.ErrNotExist)
		})
	}

	// The idle cgroup of the shim back in the pool goes with the pool.
	waitWarm(t, e, 1)
	shims, inits = executor.WarmShims(e)
	dirs = warmCgroupDirs(t, inits[0], fmt.Sprintf("warm-%d", shims[0]))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s of an idle shim after Close: %v, want it removed", d, err)
		}
	}
}

// warmCgroupDirs lists the directories of the cgroups named name (or
// name-N: a shim's Nth idle init after its first) that pid is in, one per
// hierarchy, and fails when there is none.
func warmCgroupDirs(t *testing.T, pid int, name string) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for line := range strings.Lines(string(b)) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if base := filepath.Base(f[2]); len(f) != 3 || base != name && !strings.HasPrefix(base, name+"-") {
			continue
		}
		mounts := []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} // v2, pure or hybrid
		if f[1] != "" {
			mounts = []string{filepath.Join("/sys/fs/cgroup", strings.Split(f[1], ",")[0])}
		}
		for _, m := range mounts {
			if _, err := os.Stat(filepath.Join(m, f[2])); err == nil {
				dirs = append(dirs, filepath.Join(m, f[2]))
				break
			}
		}
	}
	if len(dirs) == 0 {
		t.Fatalf("idle warm init %d is in no cgroup %s:\n%s", pid, name, b)
	}
	return dirs
}

// spares lists the spare directories in dir.
func spares(tb testing.TB, dir string) []string {
	tb.Helper()
	found, err := filepath.Glob(filepath.Join(dir, ".spare-*"))
	if err != nil {
		tb.Fatal(err)
	}
	return found
}

// TestSpareDirectories: with warm shims, a start renames directories made
// ahead into place (its home under Root, its own in SpoolDir), the same
// id twice still fails, and Close leaves no spare behind.
func TestSpareDirectories(t *testing.T) {
	root, spool := t.TempDir(), t.TempDir()
	e := newExecutorConfig(t, executor.Config{Root: root, SpoolDir: spool, WarmShims: 1})
	full := func() bool { return len(spares(t, root)) == 4 && len(spares(t, spool)) == 4 }
	waitFor(t, "four spares of each kind", 10*time.Second, full)
	// The spares made first are taken first.
	home, own := spares(t, root)[0], spares(t, spool)[0]
	ownInfo, err := os.Stat(own)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(spool, "p1")
	p, err := e.StartSupervised(t.Context(), "p1", devops.Spec{Argv: []string{"sh", "-c", "pwd; echo err >&2"}}, dir)
	if err != nil {
		t.Fatalf("StartSupervised: %v", err)
	}
	if st := waitEnd(t, p, 20*time.Second); st.State != devops.StateSucceeded {
		t.Fatalf("status %+v, want succeeded", st)
	}
	stdout, stderr := readFrames(t, dir)
	if want := filepath.Join(root, "p1") + "\n"; stdout != want || stderr != "err\n" {
		t.Errorf("output %q, %q; want %q, %q", stdout, stderr, want, "err\n")
	}
	if st, err := os.Stat(dir); err != nil || !os.SameFile(st, ownInfo) {
		t.Errorf("the process's directory is not the first spare (%v)", err)
	}
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("the first spare home is still there (%v)", err)
	}
	waitFor(t, "the spares made again", 10*time.Second, full)

	before := spares(t, spool)
	_, err = e.StartSupervised(t.Context(), "p1", devops.Spec{Argv: []string{"true"}}, dir)
	if !errors.Is(err, devops.ErrAlreadyExists) {
		t.Errorf("StartSupervised of the same id again: %v, want ErrAlreadyExists", err)
	}
	if now := spares(t, spool); !slices.Equal(now, before) {
		t.Errorf("a refused start used a spare process directory: %v, had %v", now, before)
	}
	// The home comes before the process's directory, so a refused start
	// may have taken a spare home (the first one's is gone); it removes
	// it, and the pool makes another.
	waitFor(t, "four spares of each kind after a refused start", 10*time.Second, full)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if left := append(spares(t, root), spares(t, spool)...); len(left) != 0 {
		t.Errorf("spares left after Close: %v", left)
	}
}

// TestPoolInitKeepsNoDescriptors: an init that stays for command after
// command holds as many descriptors after the tenth as after the first.
// It reaps by itself, so the pidfd os/exec keeps for each command stayed
// open until a garbage collection, and each doubling of the table cost the
// next command a kernel grace period.
func TestPoolInitKeepsNoDescriptors(t *testing.T) {
	e := stayingInits(t, 1)
	fds := func(pid int) int {
		entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatalf("descriptors of init %d: %v", pid, err)
		}
		return len(entries)
	}
	init, after := 0, 0
	for i := range 10 {
		p, _ := startSupervised(t, e, fmt.Sprintf("p%d", i), devops.Spec{Argv: []string{"true"}})
		if init != 0 && p.Pid() != init {
			t.Fatalf("command %d ran under init %d, not %d", i, p.Pid(), init)
		}
		init = p.Pid()
		if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateSucceeded {
			t.Fatalf("command %d: status = %+v", i, st)
		}
		waitWarm(t, e, 1)
		if i == 0 {
			after = fds(init)
		}
	}
	if n := fds(init); n != after {
		t.Errorf("init %d holds %d descriptors after 10 commands, %d after the first", init, n, after)
	}
}

// TestPoolInitJoinsByItsMainThread: on cgroup v1 an init moves only its
// main thread into the command's cgroup (joinIdle), the one that starts the
// command, and the pids limit makes room for that one thread, not all the
// init's: a warm init while idle, a cold one before its go-ahead. (Moved
// whole, a cold init could not start a thread once its command had used the
// limit up, and died.)
func TestPoolInitJoinsByItsMainThread(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/pids/tasks"); err != nil {
		t.Skip("no cgroup v1 pids hierarchy")
	}
	script := `own=$(grep ':pids:' /proc/self/cgroup); n=0
for t in /proc/1/task/*; do [ "$(grep ':pids:' $t/cgroup)" = "$own" ] && n=$((n+1)); done
echo "init threads: $n of $(ls /proc/1/task | wc -l)"; cat /sys/fs/cgroup/pids${own##*:}/pids.max`
	for _, warm := range []bool{true, false} {
		t.Run(fmt.Sprintf("warm=%v", warm), func(t *testing.T) {
			var e *executor.Executor
			if warm {
				e = stayingInits(t, 1)
			} else {
				e = newExecutorConfig(t, executor.Config{})
				requireCgroups(t, e)
			}
			p, dir := startSupervised(t, e, "p1", devops.Spec{Argv: []string{"sh", "-c", script}, Limits: devops.Limits{Pids: 4}})
			if p.Pooled() != warm {
				t.Fatalf("Pooled = %v", p.Pooled())
			}
			if st := waitEnd(t, p, 10*time.Second); st.State != devops.StateSucceeded {
				t.Fatalf("status = %+v", st)
			}
			out, errOut := readFrames(t, dir)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "init threads: 1 of ") || lines[1] != "5" {
				t.Errorf("got %q (stderr %q), want the init's main thread alone in the cgroup and pids.max 5 (4 and that thread)", out, errOut)
			}
		})
	}
}

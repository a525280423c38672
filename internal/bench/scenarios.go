//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/client"
)

// sizes is how much each scenario does; QUICK mode shrinks them.
type sizes struct {
	rounds        int   // interleaved rounds of ours and the baseline (at least 5)
	dispatchPer   int   // dispatch samples per round and side
	dispatchPaced int   // dispatch samples per round, one at a time with full warm pools
	cliPer        int   // CLI round trips per round and side
	tputCommands  int   // commands per throughput run
	bulkBytes     int64 // bulk output size
	lines         int   // 100-byte lines
	stallBytes    int64 // output produced while the follower stalls
	stdinBytes    int64 // standard input sent with a command (run -i)
	fanout        []int // worker counts
	scale         []int // simulated worker counts
	scaleSettle   time.Duration
	scaleWindow   time.Duration
	idleCommands  int           // commands (and ssh sessions) sleeping at once
	idleWindow    time.Duration // one round's sample of their CPU
	failReps      int
	failHangReps  int
	scenarioLimit time.Duration
}

var fullSizes = sizes{
	// Sized so a full run stays under 15 minutes on this VM's slow days
	// (14m22s at 2aea347 with 128 commands per throughput run and 20
	// idle sleeps, throughput alone 132 s).
	rounds: 5, dispatchPer: 40, dispatchPaced: 8, cliPer: 4, tputCommands: 96,
	bulkBytes: 1 << 30, lines: 10_000_000, stallBytes: 1 << 30, stdinBytes: 256 << 20,
	// Idle is the steady state: the first seconds after the workers joined
	// carry their first metrics samples and the collection that follows the
	// heap's growth, and a 10 s window caught or missed a collection (~0.25 s
	// of CPU at 10,000 workers) by chance. A minute: the manager's
	// keepalive check of each connection comes once a minute, and workers
	// that joined together are checked together; a 30 s window counted
	// some of them and not others (5.29% of a core at 10,000 on the AMD VM,
	// where 150 s read 7.25%, when workers still pinged once a minute too;
	// now every 10 minutes, which the window does not see).
	fanout: []int{8, 32}, scale: []int{1000, 5000, 10000}, scaleSettle: 15 * time.Second, scaleWindow: time.Minute,
	// ssh sessions start one after the other at ~1 s each on a slow day.
	idleCommands: 12, idleWindow: 2 * time.Second,
	failReps: 5, failHangReps: 3, scenarioLimit: 4 * time.Minute,
}

var quickSizes = sizes{
	rounds: 5, dispatchPer: 8, dispatchPaced: 2, cliPer: 1, tputCommands: 16,
	bulkBytes: 64 << 20, lines: 500_000, stallBytes: 128 << 20, stdinBytes: 16 << 20,
	fanout: []int{8}, scale: []int{200}, scaleSettle: 3 * time.Second, scaleWindow: 4 * time.Second,
	idleCommands: 3, idleWindow: 500 * time.Millisecond,
	failReps: 1, failHangReps: 1, scenarioLimit: 38 * time.Second, // fan-out, with pdsh and Ansible installed, fills it
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// runTimes is what runOnce saw of one command, each time from its
// submission.
type runTimes struct {
	answer time.Duration // the manager's first answer (the process's record)
	first  time.Duration // the first output byte
	exit   time.Duration // the final record
	bytes  int64         // output bytes
}

// runOnce runs argv on the cluster and follows it to its end; a command
// that does not succeed is an error.
func runOnce(ctx context.Context, c *client.Client, argv []string) (runTimes, error) {
	spec := devops.Spec{Argv: argv}
	if filepath.IsAbs(argv[0]) {
		// Commands get a private /tmp: running from the program's own
		// directory binds it back, so a repository under /tmp works too.
		spec.Dir = filepath.Dir(argv[0])
	}
	var t runTimes
	var p devops.Process
	start := time.Now()
	err := c.Run(ctx, client.RunRequest{Spec: spec}, func(e client.Event) error {
		if e.Chunk != nil {
			if t.bytes == 0 {
				t.first = time.Since(start)
			}
			t.bytes += int64(len(e.Chunk.Data))
		}
		if e.Process != nil && t.answer == 0 {
			t.answer = time.Since(start)
		}
		if e.Process != nil && e.Process.State.Terminal() {
			t.exit = time.Since(start)
			p = *e.Process
		}
		return nil
	})
	if err == nil && p.State != devops.StateSucceeded {
		err = fmt.Errorf("%v ended %v (exit %d): %s", argv, p.State, p.ExitCode(), p.Reason)
	}
	return t, err
}

// localOnce spawns argv through pipes and reads both to the end.
func localOnce(ctx context.Context, argv []string) (first, exit time.Duration, n int64, err error) {
	start := time.Now()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	errp, err := cmd.StderrPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, err
	}
	var total atomic.Int64
	var once sync.Once
	read := func(r io.Reader) {
		buf := make([]byte, 256<<10)
		for {
			k, err := r.Read(buf)
			if k > 0 {
				once.Do(func() { first = time.Since(start) })
				total.Add(int64(k))
			}
			if err != nil {
				return
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); read(errp) }()
	read(out)
	wg.Wait()
	err = cmd.Wait()
	return first, time.Since(start), total.Load(), err
}

// dispatch: scenario 1.
func (b *bench) dispatch(ctx context.Context) ([]Row, error) {
	argv := []string{"/bin/echo", "hi"}
	if _, err := runOnce(ctx, b.c.client, argv); err != nil { // warm the client and the worker
		return nil, err
	}
	var answer, first, exit, lfirst, lexit, pfirst, pexit []float64
	var pacedErr error
	// Starts by the back-to-back runs, and how many a warm shim served.
	var tally startTally
	for range b.sz.rounds {
		tally.mark(ctx, b.c)
		for range b.sz.dispatchPer {
			t, err := runOnce(ctx, b.c.client, argv)
			if err != nil {
				return nil, err
			}
			answer, first, exit = append(answer, ms(t.answer)), append(first, ms(t.first)), append(exit, ms(t.exit))
		}
		tally.add(ctx, b.c)
		for range b.sz.dispatchPer {
			f, e, _, err := localOnce(ctx, argv)
			if err != nil {
				return nil, err
			}
			lfirst, lexit = append(lfirst, ms(f)), append(lexit, ms(e))
		}
		// One command at a time on workers whose pools are full: what a
		// command meets on a worker that is not busy starting others.
		for i := 0; i < b.sz.dispatchPaced && pacedErr == nil; i++ {
			if pacedErr = b.waitWarmPools(ctx, 10*time.Second); pacedErr != nil {
				break
			}
			t, err := runOnce(ctx, b.c.client, argv)
			if err != nil {
				return nil, err
			}
			pfirst, pexit = append(pfirst, ms(t.first)), append(pexit, ms(t.exit))
		}
	}
	goal := func(o, l Summary) string { return yesNo(o.Median <= l.Median+1 && o.P99 < 5) }
	// How many starts a warm shim served explains the spread: one run after
	// another drains each worker's pool faster than it refills.
	pool := tally.note("from the workers' warm pools")
	const goalText = "p50 ≤ local + 1 ms, p99 < 5 ms"
	rows := []Row{
		compare(Row{Scenario: "1. dispatch `echo hi` back to back, submit → first byte" + pool, Unit: "ms", Baseline: "local os/exec pipe", Goal: goalText}, first, lfirst, goal),
		compare(Row{Scenario: "1. dispatch `echo hi` back to back, submit → exit", Unit: "ms", Baseline: "local os/exec pipe", Goal: goalText}, exit, lexit, goal),
		// Where the time goes: the manager answers once the process is
		// placed and its record stored, while the command goes to the
		// worker beside; the rest of the first byte is the worker's side
		// and the output's way back.
		compare(Row{Scenario: "1. where dispatch's time goes: back to back, submit → the manager's first answer (the process placed and its record stored; the command goes to the worker beside it)", Unit: "ms", Goal: "reported"}, answer, nil, nil),
	}
	paced := "1. dispatch `echo hi` one at a time, the workers' warm pools full"
	if pacedErr != nil {
		return append(rows, Row{Scenario: paced + " (unavailable: " + pacedErr.Error() + ")", Unit: "ms", Met: "n/a"}), nil
	}
	return append(rows,
		compare(Row{Scenario: paced + ", submit → first byte", Unit: "ms", Baseline: "local os/exec pipe", Goal: goalText}, pfirst, lfirst, goal),
		compare(Row{Scenario: paced + ", submit → exit", Unit: "ms", Baseline: "local os/exec pipe", Goal: goalText}, pexit, lexit, goal),
	), nil
}

// warmShims is how many warm shims a worker keeps (its --warm-shims
// default, which the bench leaves alone).
const warmShims = 2

// idleSettle is how long the workers are left alone once their pools are
// full, before a paced run.
const idleSettle = 100 * time.Millisecond

// errNoPoolGauge: the devops binary under test does not tell its warm pools.
var errNoPoolGauge = errors.New("the workers do not export devops_worker_warm_shims_idle")

// waitWarmPools waits until every worker has its warm pool full again.
func (b *bench) waitWarmPools(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		full, ok := b.c.warmPoolsFull(ctx, warmShims)
		switch {
		case !ok:
			return errNoPoolGauge
		case full:
			// The shims just started may still be settling (their first
			// page faults, a collection): a command on an idle worker
			// meets none of that.
			time.Sleep(idleSettle)
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("warm pools not full within %v", timeout)
		}
		// A scrape costs the worker a little CPU, which the refill needs.
		time.Sleep(20 * time.Millisecond)
	}
}

// timeCmd runs a command and returns how long it took. The command runs
// in its own process group, killed whole when its context ends, and Wait
// gives up on pipes held open by orphans (Ansible's forks) after 5s.
func timeCmd(cmd *exec.Cmd) (time.Duration, []byte, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, out, fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, lastLine(out))
	}
	return d, out, nil
}

// baselineLimit bounds one run of a fan-out baseline: one that hangs (or
// is that slow) is recorded as failed, not waited for.
const baselineLimit = 90 * time.Second

// timeBaseline times the command cmd makes, stopped after limit or at the
// scenario's own; the error then says which rather than "signal: killed".
func timeBaseline(ctx context.Context, limit time.Duration, cmd func(context.Context) (*exec.Cmd, error)) (time.Duration, []byte, error) {
	bctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c, err := cmd(bctx)
	if err != nil {
		return 0, nil, err
	}
	d, out, err := timeCmd(c)
	switch {
	case err == nil || bctx.Err() == nil:
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = errors.New("stopped at the scenario's time limit")
	case ctx.Err() == nil:
		err = fmt.Errorf("did not finish within %v: stopped", limit)
	}
	return d, out, err
}

// cli: scenario 2.
func (b *bench) cli(ctx context.Context) ([]Row, error) {
	timeBin := func(args ...string) (time.Duration, error) {
		d, _, err := timeCmd(exec.CommandContext(ctx, b.bin, args...))
		return d, err
	}
	timeCLI := func(args ...string) (time.Duration, error) {
		return timeBin(append(append([]string{args[0], "--manager", b.c.addr}, b.c.clientFlags...), args[1:]...)...)
	}
	ours := func() (time.Duration, error) { return timeCLI("run", "--", "/bin/true") }
	// Where the round trip's time goes, measured beside it: the binary's
	// start alone, and the start with a TLS connection and one call.
	start := func() (time.Duration, error) { return timeBin("--version") }
	call := func() (time.Duration, error) { return timeCLI("workers") }
	for _, f := range []func() (time.Duration, error){ours, start, call} {
		if _, err := f(); err != nil {
			return nil, err
		}
	}
	var o, starts, calls, plain, mux []float64
	var sshErr error
	if b.ssh == nil {
		sshErr = errors.New("sshd unavailable")
	} else if _, _, err := timeCmd(b.ssh.command(ctx, true, "localhost", "true")); err != nil { // start the master
		sshErr = err
	}
	for range b.sz.rounds {
		for range b.sz.cliPer {
			d, err := ours()
			if err != nil {
				return nil, err
			}
			o = append(o, ms(d))
			if d, err = start(); err != nil {
				return nil, err
			}
			starts = append(starts, ms(d))
			if d, err = call(); err != nil {
				return nil, err
			}
			calls = append(calls, ms(d))
		}
		if sshErr != nil {
			continue
		}
		for range b.sz.cliPer {
			d, _, err := timeCmd(b.ssh.command(ctx, false, "localhost", "true"))
			if err != nil {
				sshErr = err
				break
			}
			plain = append(plain, ms(d))
			d, _, err = timeCmd(b.ssh.command(ctx, true, "localhost", "true"))
			if err != nil {
				sshErr = err
				break
			}
			mux = append(mux, ms(d))
		}
	}
	note := ""
	if sshErr != nil {
		note = "ssh unavailable: " + sshErr.Error()
		plain, mux = nil, nil
	}
	known := func(f func(o, base Summary) bool) func(o, base Summary) string {
		return func(o, base Summary) string {
			if base.N == 0 {
				return "n/a"
			}
			return yesNo(f(o, base))
		}
	}
	return []Row{
		compare(Row{Scenario: "2. CLI `devops run -- true`", Unit: "ms", Baseline: "`ssh -p 2222 localhost true`", Goal: "≥ 20x faster than ssh", Note: note}, o, plain,
			known(func(o, s Summary) bool { return o.Median*20 <= s.Median })),
		compare(Row{Scenario: "2. CLI `devops run -- true`", Unit: "ms", Baseline: "ssh with ControlMaster", Goal: "faster than ssh with ControlMaster", Note: note}, o, mux,
			known(func(o, s Summary) bool { return o.Median < s.Median })),
		compare(Row{Scenario: "2. where the CLI's time goes: the binary's start alone, `devops --version`", Unit: "ms", Baseline: "ssh with ControlMaster", Goal: "reported", Note: note}, starts, mux, nil),
		compare(Row{Scenario: "2. where the CLI's time goes: the start, a TLS connection and one call, `devops workers`", Unit: "ms", Baseline: "ssh with ControlMaster", Goal: "reported", Note: note}, calls, mux, nil),
	}, nil
}

// throughput: scenario 3.
func (b *bench) throughput(ctx context.Context) ([]Row, error) {
	argv := []string{"/bin/true"}
	n := b.sz.tputCommands
	concs := []int{1, 16, 64}
	// Starts at each concurrency, and how many a warm shim served.
	tallies := map[int]*startTally{}
	for _, c := range concs {
		tallies[c] = &startTally{}
	}
	ours := func(conc int) (float64, cpuSplit, error) {
		tallies[conc].mark(ctx, b.c)
		before := b.cpuSplit()
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, conc)
		for i := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					if _, err := runOnce(ctx, b.c.client, argv); err != nil {
						errs[i] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		d := time.Since(start)
		after := b.cpuSplit()
		tallies[conc].add(ctx, b.c)
		per := cpuSplit{
			(after.manager - before.manager) / time.Duration(n),
			(after.workers - before.workers) / time.Duration(n),
			(after.rest - before.rest) / time.Duration(n),
		}
		return float64(n) / d.Seconds(), per, errors.Join(errs...)
	}
	local := func() (float64, error) {
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					if err := exec.CommandContext(ctx, argv[0]).Run(); err != nil {
						errs[i] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		return float64(n) / time.Since(start).Seconds(), errors.Join(errs...)
	}
	rates := map[int][]float64{}
	mcpu, wcpu, rcpu := map[int][]float64{}, map[int][]float64{}, map[int][]float64{}
	var lrates []float64
	for range b.sz.rounds {
		for _, c := range concs {
			if c == 64 {
				b.profileStart("throughput-c64")
			}
			r, cpu, err := ours(c)
			if c == 64 {
				b.profileStop("throughput-c64")
			}
			if err != nil {
				return nil, err
			}
			rates[c] = append(rates[c], r)
			mcpu[c], wcpu[c], rcpu[c] = append(mcpu[c], ms(cpu.manager)), append(wcpu[c], ms(cpu.workers)), append(rcpu[c], ms(cpu.rest))
		}
		r, err := local()
		if err != nil {
			return nil, err
		}
		lrates = append(lrates, r)
	}
	var rows []Row
	for _, c := range concs {
		r := Row{Scenario: fmt.Sprintf("3. throughput `true`, concurrency %d, 2 workers%s", c, tallies[c].note("by warm shims")), Unit: "cmd/s", Rate: true, Baseline: "local os/exec, 2 at a time", Goal: "—"}
		var goal func(o, l Summary) string
		if c == 64 {
			r.Goal = "≥ 0.5x local"
			goal = func(o, l Summary) string { return yesNo(o.Median >= 0.5*l.Median) }
		}
		rows = append(rows, compare(r, rates[c], lrates, goal))
	}
	// Concurrency 1 shows what a command costs when every start is warm;
	// 64 what a burst costs.
	for _, c := range []int{1, 64} {
		rows = append(rows,
			compare(Row{Scenario: fmt.Sprintf("3. manager CPU per command, concurrency %d", c), Unit: "ms", Goal: "reported"}, mcpu[c], nil, nil),
			compare(Row{Scenario: fmt.Sprintf("3. workers' CPU per command, concurrency %d", c), Unit: "ms", Goal: "reported"}, wcpu[c], nil, nil),
			compare(Row{Scenario: fmt.Sprintf("3. the rest of the machine's CPU per command, concurrency %d (shims, inits, the commands, the kernel)", c), Unit: "ms", Goal: "reported"}, rcpu[c], nil, nil))
	}
	return rows, nil
}

// cpuSplit is where the machine's CPU went since boot: the manager, the
// workers, and the rest of its busy time less this program (the shims, the
// inits, the commands and the kernel's work for them). The difference of
// two samples is what happened between them.
type cpuSplit struct{ manager, workers, rest time.Duration }

func (b *bench) cpuSplit() cpuSplit {
	m := b.c.managerStats().CPU
	var w time.Duration
	for _, wk := range b.c.workers {
		if st, err := readProc(wk.proc.pid()); err == nil {
			w += st.CPU
		}
	}
	self, _ := readProc(os.Getpid())
	return cpuSplit{m, w, machineBusy() - m - w - self.CPU}
}

// machineBusy is the CPU time all CPUs spent on anything but idling and
// waiting for I/O since boot, from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 7 { // idle, iowait, steal (others ran); guest is in user already
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clkTck
}

// genLines is the command that writes lines 100-byte lines, alternating
// between stdout and stderr every 40 lines (one write each).
func (b *bench) genLines(lines int) []string {
	return []string{b.self, "-gen-lines", strconv.Itoa(lines)}
}

// bandwidth: scenario 4.
func (b *bench) bandwidth(ctx context.Context) ([]Row, error) {
	bulk := []string{"/usr/bin/head", "-c", strconv.FormatInt(b.sz.bulkBytes, 10), "/dev/zero"}
	lines := b.genLines(b.sz.lines)
	wantLines := int64(b.sz.lines) * 100
	var ob, lb, ol, ll []float64
	// Where the CPU of bulk output goes, in seconds a GiB: it stays put
	// where the rates move with the machine's day.
	var mcpu, wcpu, rcpu []float64
	mbps := func(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
	perGiB := func(d time.Duration) float64 { return d.Seconds() / (float64(b.sz.bulkBytes) / (1 << 30)) }
	for round := range b.sz.rounds {
		if round == 0 {
			b.profileStart("output-bulk")
		}
		before := b.cpuSplit()
		t, err := runOnce(ctx, b.c.client, bulk)
		d, n := t.exit, t.bytes
		after := b.cpuSplit()
		if round == 0 {
			b.profileStop("output-bulk")
		}
		if err != nil {
			return nil, err
		}
		if n != b.sz.bulkBytes {
			return nil, fmt.Errorf("bulk output: got %d bytes, want %d", n, b.sz.bulkBytes)
		}
		ob = append(ob, mbps(n, d))
		mcpu = append(mcpu, perGiB(after.manager-before.manager))
		wcpu = append(wcpu, perGiB(after.workers-before.workers))
		rcpu = append(rcpu, perGiB(after.rest-before.rest))
		_, d, n, err = localOnce(ctx, bulk)
		if err != nil || n != b.sz.bulkBytes {
			return nil, fmt.Errorf("local bulk: %d bytes: %v", n, err)
		}
		lb = append(lb, mbps(n, d))

		if round == 0 {
			b.profileStart("output-lines")
		}
		t, err = runOnce(ctx, b.c.client, lines)
		d, n = t.exit, t.bytes
		if round == 0 {
			b.profileStop("output-lines")
		}
		if err != nil {
			return nil, err
		}
		if n != wantLines {
			return nil, fmt.Errorf("lines output: got %d bytes, want %d", n, wantLines)
		}
		ol = append(ol, mbps(n, d))
		_, d, n, err = localOnce(ctx, lines)
		if err != nil || n != wantLines {
			return nil, fmt.Errorf("local lines: %d bytes: %v", n, err)
		}
		ll = append(ll, mbps(n, d))
	}
	note := ""
	if b.quick {
		note = "QUICK: smaller size"
	}
	return []Row{
		compare(Row{Scenario: fmt.Sprintf("4. output %s to stdout, followed to the end", mib(b.sz.bulkBytes)), Unit: "MB/s", Rate: true, Baseline: "local pipe", Goal: "≥ 300 MB/s and ≥ 0.25x local", Note: note}, ob, lb,
			func(o, l Summary) string { return yesNo(o.Median >= 300 && o.Median >= 0.25*l.Median) }),
		compare(Row{Scenario: fmt.Sprintf("4. output %d 100-byte lines, stdout/stderr interleaved", b.sz.lines), Unit: "MB/s", Rate: true, Baseline: "local pipe", Goal: "≥ 100 MB/s", Note: note}, ol, ll,
			func(o, l Summary) string { return yesNo(o.Median >= 100) }),
		compare(Row{Scenario: fmt.Sprintf("4. manager CPU per GiB of the %s followed", mib(b.sz.bulkBytes)), Unit: "s", Goal: "reported"}, mcpu, nil, nil),
		compare(Row{Scenario: fmt.Sprintf("4. workers' CPU per GiB of the %s followed", mib(b.sz.bulkBytes)), Unit: "s", Goal: "reported"}, wcpu, nil, nil),
		compare(Row{Scenario: fmt.Sprintf("4. the rest of the machine's CPU per GiB of the %s followed (the shim, the command, the kernel; not the bench's client)", mib(b.sz.bulkBytes)), Unit: "s", Goal: "reported"}, rcpu, nil, nil),
	}, nil
}

// stdin: with scenario 4, the other way. A standard input sent with the
// command (`run -i`, uploaded to the manager and handed to the worker
// before the command starts), as `tar c . | ssh host tar x` sends one
// (streamed): each the whole client process, the command counting the
// bytes. No goal: the issue sets none; the figure is for users who weigh
// it against ssh.
func (b *bench) stdin(ctx context.Context) ([]Row, error) {
	want := strconv.FormatInt(b.sz.stdinBytes, 10) + "\n"
	measure := func(cmd *exec.Cmd) (float64, error) {
		cmd.Stdin = io.LimitReader(zeros{}, b.sz.stdinBytes)
		d, out, err := timeCmd(cmd)
		if err != nil {
			return 0, err
		}
		if string(out) != want {
			return 0, fmt.Errorf("%s: wc -c printed %q, want %q", cmd.Args[0], out, want)
		}
		return float64(b.sz.stdinBytes) / 1e6 / d.Seconds(), nil
	}
	ours := func() *exec.Cmd {
		return exec.CommandContext(ctx, b.bin, append(append([]string{"run", "--manager", b.c.addr}, b.c.clientFlags...), "-i", "--", "wc", "-c")...)
	}
	var o, base []float64
	note := ""
	for range b.sz.rounds {
		v, err := measure(ours())
		if err != nil {
			return nil, err
		}
		o = append(o, v)
		if b.ssh == nil || note != "" {
			continue
		}
		if v, err = measure(b.ssh.command(ctx, false, "localhost", "wc", "-c")); err != nil {
			note, base = "ssh unavailable: "+err.Error(), nil
			continue
		}
		base = append(base, v)
	}
	if b.ssh == nil {
		note = "ssh unavailable: sshd did not start"
	}
	if b.quick {
		note = strings.TrimPrefix(note+"; QUICK: smaller size", "; ")
	}
	return []Row{
		compare(Row{Scenario: fmt.Sprintf("4. standard input %s, `devops run -i -- wc -c` as a whole process (read whole, then the command starts)", mib(b.sz.stdinBytes)),
			Unit: "MB/s", Rate: true, Baseline: "`ssh -p 2222 localhost wc -c` (streamed)", Goal: "reported", Note: note}, o, base, nil),
	}, nil
}

// zeros reads as /dev/zero does.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// stalled: scenario 5.
func (b *bench) stalled(ctx context.Context) ([]Row, error) {
	w := b.c.workers["main-1"]
	ps, err := b.c.client.Submit(ctx, client.RunRequest{
		Spec:   devops.Spec{Argv: []string{"/usr/bin/head", "-c", strconv.FormatInt(b.sz.stallBytes, 10), "/dev/zero"}},
		Target: client.Target{Worker: "main-1"},
	})
	if err != nil {
		return nil, err
	}
	if len(ps) != 1 {
		return nil, fmt.Errorf("submit: %d processes", len(ps))
	}
	id := ps[0].ID
	before := []int64{b.c.managerStats().RSS, 0}
	if st, err := readProc(w.proc.pid()); err == nil {
		before[1] = st.RSS
	}
	sampler := sampleRSS(20*time.Millisecond, b.c.manager.pid(), w.proc.pid())
	// A second connection follows, reads one chunk, then stops reading
	// until the process has ended.
	follower, err := b.c.dial()
	if err != nil {
		return nil, err
	}
	defer follower.Close()
	stalled := make(chan struct{})
	resume := make(chan struct{})
	var got int64
	var final devops.Process
	errc := make(chan error, 1)
	go func() {
		var once sync.Once
		errc <- follower.Logs(ctx, id, 0, true, func(e client.Event) error {
			if e.Chunk != nil {
				got += int64(len(e.Chunk.Data))
				once.Do(func() {
					close(stalled)
					<-resume
				})
			}
			if e.Process != nil {
				final = *e.Process
			}
			return nil
		})
	}()
	select {
	case <-stalled:
	case err := <-errc:
		return nil, fmt.Errorf("follow: ended before any output: %v", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// With -pprof: CPU from the stall to halfway, and the heap halfway.
	b.profileStart("stalled")
	profiling := true
	for {
		p, err := b.c.client.Status(ctx, id)
		if err != nil {
			close(resume)
			return nil, err
		}
		if profiling && (p.OutputBytes > b.sz.stallBytes/2 || p.State.Terminal()) {
			b.profileStop("stalled")
			profiling = false
		}
		if p.State.Terminal() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // while still stalled, after the end
	close(resume)
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("follow after resume: %w", err)
	}
	peak := sampler.end()
	lost := ""
	ok := got == b.sz.stallBytes && final.State == devops.StateSucceeded
	if !ok {
		lost = fmt.Sprintf("; got %d of %d bytes, final %v", got, b.sz.stallBytes, final.State)
	}
	note := "nothing lost on resume"
	if lost != "" {
		note = "LOST OUTPUT" + lost
	}
	if b.quick {
		note += "; QUICK: smaller size"
	}
	growth := func(i int) []float64 { return []float64{float64(max(peak[i]-before[i], 0)) / (1 << 20)} }
	return []Row{
		compare(Row{Scenario: fmt.Sprintf("5. stalled follower, %s produced: manager peak RSS growth", mib(b.sz.stallBytes)), Unit: "MiB", Goal: "< 64 MiB, nothing lost", Note: note}, growth(0), nil,
			func(o, _ Summary) string { return yesNo(o.Median < 64 && ok) }),
		compare(Row{Scenario: fmt.Sprintf("5. stalled follower, %s produced: worker peak RSS growth", mib(b.sz.stallBytes)), Unit: "MiB", Goal: "< 64 MiB, nothing lost", Note: note}, growth(1), nil,
			func(o, _ Summary) string { return yesNo(o.Median < 64 && ok) }),
	}, nil
}

// fanout: scenario 6. It starts the extra workers it needs and stops them after.
func (b *bench) fanout(ctx context.Context) ([]Row, error) {
	most := 0
	for _, n := range b.sz.fanout {
		most = max(most, n)
	}
	var names, hosts []string
	for i := range most {
		labels := fmt.Sprintf("fan%d=yes", most)
		for _, n := range b.sz.fanout {
			if i < n && n != most {
				labels += fmt.Sprintf(",fan%d=yes", n)
			}
		}
		name := fmt.Sprintf("fan-%02d", i)
		if _, err := b.c.addWorker(name, loopbackIP(i), labels); err != nil {
			return nil, err
		}
		names, hosts = append(names, name), append(hosts, loopbackIP(i))
	}
	defer func() {
		for _, n := range names {
			b.c.removeWorker(n)
		}
	}()
	if err := b.c.waitState(ctx, devops.WorkerUp, time.Minute, names...); err != nil {
		return nil, err
	}
	// Workers that just joined are still starting their warm shims, two
	// binary starts each, 128 at 32 workers: the first round would measure
	// that. The rounds after it find the pools refilled during the
	// baselines' rounds.
	if err := b.waitWarmPools(ctx, time.Minute); err != nil && !errors.Is(err, errNoPoolGauge) {
		return nil, err
	}
	var rows []Row
	pdshOK, ansibleOK := b.ssh != nil && b.available("pdsh"), b.ssh != nil && b.available("ansible")
	for _, n := range b.sz.fanout {
		var ours, pdsh, ans []float64
		var pdshErr, ansErr error
		wantOurs := make([]string, n)
		for i := range wantOurs {
			wantOurs[i] = names[i] + ":"
		}
		short := ""
		var last time.Duration
		for round := range b.sz.rounds {
			// On a slow machine Ansible's rounds at 32 hosts outlast the
			// scenario's limit: report the rounds done rather than none.
			if dl, ok := ctx.Deadline(); ok && round > 0 && time.Until(dl) < 2*last {
				short = fmt.Sprintf("%d of %d rounds, within the scenario's time limit", round, b.sz.rounds)
				break
			}
			roundStart := time.Now()
			d, out, err := timeCmd(exec.CommandContext(ctx, b.bin, append(append([]string{"run", "--manager", b.c.addr, "--selector", fmt.Sprintf("fan%d", n)}, b.c.clientFlags...), "--", "/usr/bin/uptime")...))
			if err == nil {
				err = allPresent(out, wantOurs)
			}
			if err != nil {
				return nil, err
			}
			ours = append(ours, ms(d))
			if pdshOK && pdshErr == nil {
				d, out, err := timeBaseline(ctx, baselineLimit, func(ctx context.Context) (*exec.Cmd, error) {
					return b.ssh.pdshCommand(ctx, hosts[:n]), nil
				})
				if err == nil {
					err = allPresent(out, prefixed(hosts[:n], ": "))
				}
				if pdshErr = err; err == nil {
					pdsh = append(pdsh, ms(d))
				}
			}
			// Ansible takes seconds a run (tens on a slow day): QUICK mode runs it once.
			if ansibleOK && ansErr == nil && (!b.quick || round < 1) {
				d, out, err := timeBaseline(ctx, baselineLimit, func(ctx context.Context) (*exec.Cmd, error) {
					return b.ssh.ansibleCommand(ctx, hosts[:n])
				})
				if err == nil {
					want := make([]string, n)
					for i := range want {
						want[i] = fmt.Sprintf("h%02d | CHANGED", i)
					}
					err = allPresent(out, want)
				}
				if ansErr = err; err == nil {
					ans = append(ans, ms(d))
				}
			}
			last = time.Since(roundStart)
		}
		why := func(ok bool, err error, name string) string {
			if !ok {
				return name + " unavailable"
			}
			if err != nil {
				return name + " failed: " + err.Error()
			}
			return short
		}
		faster := func(o, base Summary) string {
			if base.N == 0 {
				return "n/a"
			}
			return yesNo(o.Median < base.Median)
		}
		if pdshErr != nil {
			pdsh = nil
		}
		if ansErr != nil {
			ans = nil
		}
		rows = append(rows,
			compare(Row{Scenario: fmt.Sprintf("6. fan-out `uptime` on %d workers (CLI, every output checked)", n), Unit: "ms", Baseline: "`pdsh -R ssh`", Goal: "faster than pdsh", Note: why(pdshOK, pdshErr, "pdsh")}, ours, pdsh, faster),
			compare(Row{Scenario: fmt.Sprintf("6. fan-out `uptime` on %d workers (CLI, every output checked)", n), Unit: "ms", Baseline: "`ansible -m command -f 32`", Goal: "faster than ansible", Note: why(ansibleOK, ansErr, "ansible")}, ours, ans, faster),
		)
	}
	return rows, nil
}

func prefixed(xs []string, suffix string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x + suffix
	}
	return out
}

// failure: scenario 8.
func (b *bench) failure(ctx context.Context) ([]Row, error) {
	w, err := b.c.addWorker("victim", loopbackIP(60), "victim=yes")
	if err != nil {
		return nil, err
	}
	defer b.c.removeWorker("victim")
	if err := b.c.waitState(ctx, devops.WorkerUp, 30*time.Second, "victim"); err != nil {
		return nil, err
	}
	// detect polls ListWorkers until the victim is DOWN; the poll costs a
	// few ms, which bounds the resolution.
	detect := func(limit time.Duration) (time.Duration, error) {
		start := time.Now()
		for time.Since(start) < limit {
			ws, err := b.c.client.Workers(ctx)
			if err != nil {
				return 0, err
			}
			for _, x := range ws {
				if x.Name == "victim" && x.State == devops.WorkerDown {
					return time.Since(start), nil
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		return 0, fmt.Errorf("victim not DOWN after %v", limit)
	}
	var kill, hang []float64
	for range b.sz.failReps {
		time.Sleep(300 * time.Millisecond) // let the health streams settle
		w.proc.signal(syscall.SIGKILL)
		d, err := detect(30 * time.Second)
		if err != nil {
			return nil, fmt.Errorf("kill -9: %w", err)
		}
		kill = append(kill, ms(d))
		<-w.proc.done
		if err := b.c.restart(w); err != nil {
			return nil, err
		}
		if err := b.c.waitState(ctx, devops.WorkerUp, 30*time.Second, "victim"); err != nil {
			return nil, err
		}
	}
	for range b.sz.failHangReps {
		time.Sleep(500 * time.Millisecond)
		w.proc.signal(syscall.SIGSTOP)
		d, err := detect(40 * time.Second)
		w.proc.signal(syscall.SIGCONT)
		if err != nil {
			return nil, fmt.Errorf("SIGSTOP: %w", err)
		}
		hang = append(hang, ms(d)/1000)
		if err := b.c.waitState(ctx, devops.WorkerUp, 30*time.Second, "victim"); err != nil {
			return nil, fmt.Errorf("after SIGCONT: %w", err)
		}
	}
	note := "poll of ListWorkers every 5 ms; --worker-timeout 10s, --health-interval 5s (defaults)"
	return []Row{
		compare(Row{Scenario: "8. failure detection: kill -9 of a worker → DOWN", Unit: "ms", Goal: "< 1 s", Note: note}, kill, nil, func(o, _ Summary) string { return yesNo(o.P99 < 1000) }),
		compare(Row{Scenario: "8. failure detection: SIGSTOP of a worker → DOWN", Unit: "s", Goal: "< 10 s", Note: note}, hang, nil, func(o, _ Summary) string { return yesNo(o.P99 < 10) }),
	}, nil
}

// scale: scenario 7, on a manager of its own so that nothing earlier
// weighs on its memory.
func (b *bench) scale(ctx context.Context) ([]Row, error) {
	// At info the manager logs its heap trims, which the idle windows
	// leave out (idleCPU); the joins' lines are written before them.
	c, err := b.newCluster(ctx, "scale", "info")
	if err != nil {
		return nil, err
	}
	defer c.close()
	fleet := &simGroups{self: b.self, manager: c.addr, caFile: c.caFile, joinFile: c.joinFile}
	defer fleet.close()
	time.Sleep(b.sz.scaleSettle)
	base := c.managerStats()
	idle0, _ := b.idleCPU(c, b.sz.scaleWindow)
	logPath := filepath.Join(c.dir, "manager.log")
	var rows []Row
	for i, n := range b.sz.scale {
		_, logOff := readTrims(logPath, 0)
		start := time.Now()
		if err := fleet.grow(ctx, n); err != nil {
			return nil, err
		}
		reg := time.Since(start)
		// Wait for all to be UP, then let the first health and metrics
		// messages pass.
		if err := waitCount(ctx, c, n, 2*time.Minute); err != nil {
			return nil, err
		}
		time.Sleep(b.sz.scaleSettle)
		if i == len(b.sz.scale)-1 {
			b.profileStartOn(c, "idle-"+strconv.Itoa(n))
		}
		idle, idleNote := b.idleCPU(c, b.sz.scaleWindow)
		if i == len(b.sz.scale)-1 {
			b.profileStopOn(c, "idle-"+strconv.Itoa(n))
		}
		last := n == 10000
		trims, _ := readTrims(logPath, logOff)
		waitNote := ""
		if last && len(trims) == 0 {
			var waited time.Duration
			trims, waited = waitTrim(logPath, logOff, trimWait)
			waitNote = fmt.Sprintf(", read after waiting %.0fs for it", waited.Seconds())
			if len(trims) == 0 {
				waitNote = fmt.Sprintf(", none within %v more", trimWait)
			}
		}
		st := c.managerStats()
		per := float64(st.RSS-base.RSS) / float64(n) / 1024
		note := fmt.Sprintf("registered in %.1fs; RSS %d MiB (%d MiB with no worker), the manager's heap trims since they joined %d%s; idle CPU with no worker %.2f%%",
			reg.Seconds(), st.RSS>>20, base.RSS>>20, len(trims), waitNote, idle0)
		if b.quick {
			note += "; QUICK: 200 workers only"
		}
		rows = append(rows,
			compare(Row{Scenario: fmt.Sprintf("7. scale: %d idle simulated workers, manager RSS per worker", n), Unit: "KiB", Goal: goalIf(last, "< 64 KiB at 10,000"), Note: note}, []float64{per}, nil,
				goalFn(last, func(o Summary) bool { return o.Median < 64 })),
			compare(Row{Scenario: fmt.Sprintf("7. scale: %d idle simulated workers, manager CPU", n), Unit: "% of a core", Goal: goalIf(last, "< 5% at 10,000"), Note: idleNote}, []float64{idle}, nil,
				goalFn(last, func(o Summary) bool { return o.Median < 5 })),
		)
	}
	return rows, nil
}

// trimWait bounds how long scenario 7 waits, at 10,000 workers, for the
// manager's first heap trim after the joins before it reads the RSS. The
// trim gives back the heap the joins grew once their garbage has left the
// last minute's allocation rate (internal/heaptrim): about a minute after
// the joins end, which falls just before or just after the end of the idle
// window. Read before it, the figure measured when the joins' garbage is
// given back (64.9 KiB a worker in one run, 55.0 with it), not what an
// idle worker costs.
const trimWait = time.Minute

// waitTrim waits up to limit for a heap trim logged in the manager's log at
// path past off, and says how long it waited.
func waitTrim(path string, off int64, limit time.Duration) ([]heapTrim, time.Duration) {
	start := time.Now()
	for {
		trims, _ := readTrims(path, off)
		if len(trims) > 0 || time.Since(start) >= limit {
			return trims, time.Since(start)
		}
		time.Sleep(time.Second)
	}
}

func goalIf(ok bool, goal string) string {
	if ok {
		return goal
	}
	return "— (goal at 10,000)"
}

func goalFn(ok bool, f func(Summary) bool) func(o, _ Summary) string {
	if !ok {
		return nil
	}
	return func(o, _ Summary) string { return yesNo(f(o)) }
}

// waitCount waits until n workers are UP.
func waitCount(ctx context.Context, c *cluster, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ws, err := c.client.Workers(ctx)
		up := 0
		for _, w := range ws {
			if w.State == devops.WorkerUp {
				up++
			}
		}
		if err == nil && up >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d simulated workers UP after %v (last error %v)", up, n, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// genLinesMain writes n 100-byte lines, 40 lines per write, alternating
// between stdout and stderr.
func genLinesMain(n int) int {
	line := bytes.Repeat([]byte("x"), 99)
	line = append(line, '\n')
	block := bytes.Repeat(line, 40)
	outs := []*bufio.Writer{bufio.NewWriterSize(os.Stdout, len(block)), bufio.NewWriterSize(os.Stderr, len(block))}
	for i := 0; i < n; i += 40 {
		k := min(40, n-i)
		w := outs[(i/40)%2]
		if _, err := w.Write(block[:k*100]); err != nil {
			return 1
		}
		if err := w.Flush(); err != nil {
			return 1
		}
	}
	return 0
}

// idleSessions: part of scenario 7 on the main cluster. What a command
// that runs and does nothing costs its machine while it runs: the CPU of
// its shim and its init (ours), of its sshd session processes and its ssh
// client (the baseline), per command, sampled over the same windows.
func (b *bench) idleSessions(ctx context.Context) ([]Row, error) {
	n := b.sz.idleCommands
	// A duration no other process uses marks the sleeps of each side.
	oursArg, sshArg := "3607", "3608"
	var ids []devops.ProcessID
	defer func() {
		for _, id := range ids {
			b.c.client.Terminate(context.WithoutCancel(ctx), id, syscall.SIGKILL, 0)
		}
	}()
	for range n {
		ps, err := b.c.client.Submit(ctx, client.RunRequest{Spec: devops.Spec{Argv: []string{"sleep", oursArg}}})
		if err != nil {
			return nil, fmt.Errorf("submit sleep: %w", err)
		}
		for _, p := range ps {
			ids = append(ids, p.ID)
		}
	}
	var clients []*exec.Cmd
	defer func() {
		for _, c := range clients {
			c.Process.Kill()
			c.Wait()
		}
		// A remote command of a session without a terminal outlives its
		// client: sshd does not signal it when the connection drops.
		for _, pid := range sleepsWithArg(sshArg) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	if b.ssh != nil {
		for range n {
			c := b.ssh.command(ctx, false, "localhost", "sleep", sshArg)
			if err := c.Start(); err != nil {
				return nil, fmt.Errorf("ssh sleep: %w", err)
			}
			clients = append(clients, c)
		}
	}
	// Ours: each sleep's parent (the init) and grandparent (the shim).
	// ssh: each sleep's sshd session processes (parent and grandparent)
	// and the clients.
	var ours, theirs []int
	deadline := time.Now().Add(30 * time.Second)
	for {
		ours, theirs = nil, nil
		for _, pid := range sleepsWithArg(oursArg) {
			ours = append(ours, ancestors(pid, 2)...)
		}
		for _, pid := range sleepsWithArg(sshArg) {
			theirs = append(theirs, ancestors(pid, 2)...)
		}
		if len(ours) == 2*n && (b.ssh == nil || len(theirs) == 2*n) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("idle sessions: %d of %d of ours and %d of %d ssh processes found running", len(ours), 2*n, len(theirs), 2*n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range clients {
		theirs = append(theirs, c.Process.Pid)
	}
	var o, s []float64
	for range b.sz.rounds {
		o0, s0 := cpuOf(ours), cpuOf(theirs)
		start := time.Now()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(b.sz.idleWindow):
		}
		el := time.Since(start).Seconds()
		o = append(o, ms(cpuOf(ours)-o0)/el/float64(n))
		if b.ssh != nil {
			s = append(s, ms(cpuOf(theirs)-s0)/el/float64(n))
		}
	}
	note := fmt.Sprintf("%d commands `sleep` at once; ours: shim and init, ssh: sshd's two session processes and the client", n)
	if b.ssh == nil {
		note += "; ssh unavailable"
	}
	return []Row{
		compare(Row{Scenario: "7. idle cost of a running command: CPU while it sleeps", Unit: "ms CPU/s per command", Baseline: "ssh session running `sleep`", Goal: "reported", Note: note}, o, s, nil),
	}, nil
}

// sleepsWithArg returns the pids of the `sleep ARG` processes.
func sleepsWithArg(arg string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(argv) == 2 && filepath.Base(argv[0]) == "sleep" && argv[1] == arg {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ancestors returns the parent of pid, its parent, and so on, n of them
// (fewer when one is gone).
func ancestors(pid, n int) []int {
	var out []int
	for range n {
		f, err := statFields(pid)
		if err != nil || len(f) < 2 {
			break
		}
		if pid, err = strconv.Atoi(f[1]); err != nil || pid <= 1 {
			break
		}
		out = append(out, pid)
	}
	return out
}

// cpuOf sums the time the threads of pids spent on a CPU, from
// /proc/PID/task/TID/schedstat (in nanoseconds: /proc/PID/stat counts 10 ms
// ticks, too coarse for processes that wake a few times a second; and
// /proc/PID/schedstat covers the main thread only).
func cpuOf(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			if fs := strings.Fields(string(b)); len(fs) > 0 {
				ns, _ := strconv.ParseInt(fs[0], 10, 64)
				sum += time.Duration(ns)
			}
		}
	}
	return sum
}

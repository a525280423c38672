package executor

// The warm pool: each Executor keeps a few shims started ahead of need, each
// with its init already started in fresh namespaces and waiting for its
// config, so that StartSupervised only has to hand one a process.
//
// Why: a supervised process costs two starts of the devops binary, its shim
// and its init, and each spends ~13 ms of CPU and wall time (runtime start,
// page faults and the package initialisers of a 30 MB binary that links
// gRPC, NATS and Prometheus) before it does anything.
// That was most of the time from submission to first output byte. The
// other ways out, and why not them:
//
//   - a small shim and init that link nothing else (a second binary, or a
//     build of this one without the rest): every start gets cheaper, but
//     there are two artefacts to ship, version and keep in step, and the
//     shim still reads the worker's spool format and the process's cgroups;
//   - no shim (the worker supervises, as before shims): processes would die
//     with the worker again, which is why shims exist;
//   - one long-lived supervisor for every process of the machine: one crash
//     or upgrade of it takes every process with it;
//   - fork without exec: a Go process cannot fork its multi-threaded
//     runtime safely.
//
// A pool keeps one binary, the same protocols and the same process tree,
// and moves both starts off the critical path: they happen before the
// request arrives. It lowers the latency of a start while the worker has
// spare CPU to refill. And a shim is not thrown away with its process:
// once the status is on disk it says so on its ready pipe (Ended), and
// while the pool lacks one (counting those on their way back) the worker
// has it ready its init again and take its place (recycle, shimRounds):
// with namespaces and cgroups the init stays for the next command too
// (initRounds), so commands one after another cost no start at all, else
// one. A shim taken counts as on its way back for refillDelay: most
// commands are short. A take that finds the pool empty while shims are on
// their way back waits for one (returnWait); with none on its way back it
// starts cold rather than wait for the new shim the refill is starting:
// the cold start runs on another core beside it, where waiting would
// serialise the two (tried: commands run one after another took 17 ms to
// first byte against 10). But only so many cold starts at once
// (coldParallel): in a burst the takes past them wait, and a shim whose
// command ended comes back for them even when the pool would be full.
//
// What is done ahead and what waits for the process: the shim's and the
// init's runtime start, the init's namespaces (made by clone), and its move
// into a cgroup of its own with no limits yet ("warm-<shim pid>": a move
// waits for the kernel, 1-10 ms per v1 hierarchy, more than everything
// else in a start) are done ahead; everything that depends on the process
// waits for the take: the cgroup gets the process's limits before the
// go-ahead, so no user code runs outside them; the init then mounts /proc
// and /tmp, names the host, switches to the user and runs the command as
// always. The shim opens the output file (which the worker made,
// O_EXCL, before the take) and its log by path. What differs from a cold
// start: a warm init's mount namespace is a copy of the host's taken when
// it was started, so a mount the host makes meanwhile reaches it only
// through shared propagation (the default under systemd); the CPU and
// memory the init used to start are charged to the worker's cgroup, not
// the process's (it joins once started); the process's cgroup is named
// after the shim, not the process ("warm-<shim pid>", "-<n>" added for the
// nth after its first; the shim's state file records it); and
// in ps on the host neither the shim ("__init warm-shim") nor the init
// shows the process's id or command.
//
// Nothing idle may outlive the worker: an idle shim waits on its config
// pipe, whose only writer is the worker, so when the worker dies (or Close
// ends the pool) it reads EOF, ends its init the same way (EOF on the
// init's config pipe, which only the shim holds) and exits. A shim whose
// init died while idle exits too; take finds it gone and skips it. A shim
// running a process reads that EOF once the process ended: it records the
// status, then exits, as a shim started for that one process does.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/retry"
)

// warmShimArg follows initArg to make the init binary a warm shim.
const warmShimArg = "warm-shim"

// discardWait bounds how long ending an idle shim waits for it to exit by
// itself before it is killed.
const discardWait = 5 * time.Second

// errStale says a warm shim could not take a process and started nothing
// of it: the next one, or a cold start, may.
var errStale = errors.New("warm shim cannot take the process")

// startPool starts keeping size warm shims, where the init binary answers.
func (e *Executor) startPool(size int) {
	if size == 0 {
		return
	}
	if !e.platform.useInit {
		e.log.Warn("no warm shims: the init binary does not answer")
		return
	}
	e.pool = newPool(size, e.startWarmShim, e.warmUp, e.log)
}

// pool holds the idle warm shims and refills itself in the background.
type pool struct {
	size  int
	start func(ctx context.Context) (*warmShim, error)
	// rewarm has a shim whose process ended ready its init again (warmUp).
	rewarm func(ctx context.Context, ws *warmShim) error
	log    *slog.Logger
	// ctx ends with the pool: refill and the rewarms under way give up.
	ctx    context.Context
	cancel context.CancelFunc
	kick   chan struct{} // cap 1: a shim was taken; refill looks again
	done   chan struct{} // closed when refill returned
	// later runs f after d (time.AfterFunc; tests replace it).
	later func(d time.Duration, f func())

	mu   sync.Mutex // protects the fields below, warmShim.taken and warmShim.out
	idle []*warmShim
	// recent counts shims taken less than refillDelay ago whose process
	// has not ended: most commands are short, and such a shim is likely
	// to come back, so refill does not replace it yet (see refillDelay).
	recent    int
	out       int       // shims taken whose process has not ended
	returning int       // shims whose process ended, readying their init again
	lastBack  time.Time // when a shim whose process ended last landed in idle
	cold      int       // cold starts under way that take allowed
	coldMax   int       // how many it allows at once (coldParallel)
	// queue holds the takes waiting for a shim, in the order they began
	// to: a shim that lands in idle goes to the first, and shims whose
	// process ended come back for them even past the pool's size. Woken
	// all at once, the last of 30 takes waiting could lose every race for
	// a second and start cold (~130 ms of CPU on a 2-core VM), and each
	// shim coming back woke all of them.
	queue  []*waiter
	closed bool
	// returns counts the shims reserve let come back; close waits for them.
	returns sync.WaitGroup
}

// refillDelay is how long a shim taken from the pool counts as coming
// back (pool.recent) before refill replaces it, if its process has not
// ended by then. A refill starts the devops binary twice (tens of ms of
// CPU, more on a slow machine) and ran on the same two cores as the
// command just handed over, on its way to its first byte: the command's
// own exec waited 8 ms for a CPU in a trace of one `echo hi`. After the
// delay a short command has ended and its shim is back. Measured on this
// project's 2-core VM against kicking at once (p50 of 40 each, scenario 1
// of make bench QUICK=1): one `echo hi` every 0.7 s, first byte 23.4 ->
// 13.9 ms, exit 35.6 -> 21.3 ms; back to back, first byte 29.0, 26.4 ->
// 24.9, 23.5 ms, warm starts and p99 unchanged. `uptime` on 8 workers of
// one machine, run after run: 600-720 ms each before; now 280-300 ms when
// the pools are full and 900-1050 when the delayed kicks of the run before
// land in it (mean 645 against 677).
//
// Counting only the shims idle, as refill did before, commands in a row
// had one shim out whenever a delayed kick landed: refill started a new
// shim for it, and the one that came back then found the pool full and
// ended. One command after another (`true`, one worker, 300 commands)
// started 14 shims that way, 28 starts of the binary where none was
// needed.
//
// It was 250 ms: too short where many commands start at once on a busy
// machine. `uptime` on 32 workers of this 2-core VM took 0.2-1.7 s each
// inside its sandbox, so every worker's kick found its command running and
// started a replacement (64 starts of the binary), and those starts slowed
// the very round they refilled for: 2.6-3.0 s a round. With 1 s, 0.5-1.0
// s (five rounds each). Throughput of `true` (make bench scenario 3, two
// interleaved full-size pairs) was not hurt: 83.2 / 87.6 / 87.0 and 86.7 /
// 96.8 / 85.7 commands a second at concurrency 1 / 16 / 64, against 63.1 /
// 80.2 / 60.8 and 73.3 / 87.9 / 87.5 with 250 ms.
const refillDelay = time.Second

func newPool(size int, start func(context.Context) (*warmShim, error), rewarm func(context.Context, *warmShim) error, log *slog.Logger) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pool{size: size, start: start, rewarm: rewarm, log: log, ctx: ctx, cancel: cancel, coldMax: max(coldParallel, runtime.NumCPU()), kick: make(chan struct{}, 1), done: make(chan struct{}), later: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
	go p.refill(ctx)
	return p
}

// refillParallel is how many shims a refill starts at once. A start is
// two starts of the devops binary, CPU, and the init's first move into a
// cgroup, mostly waiting on the kernel (an RCU grace period, ~10 ms on a
// quiet machine): 30-70 ms of wall time for ~20 ms of CPU. One at a time,
// the pool fell behind commands arriving every 40 ms or so, and a third of
// them started cold (scenario 1 of make bench: 130 of 200 warm); two at a
// time take at most the machine's two cores for a moment.
const refillParallel = 2

// startResult is what one start of a refill gave.
type startResult struct {
	ws  *warmShim
	err error
}

// refill starts shims, refillParallel at a time, until the pool is full,
// then waits for a take. It is owned by the pool and returns when ctx ends,
// once the starts under way have ended.
func (p *pool) refill(ctx context.Context) {
	defer close(p.done)
	b := retry.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	results := make(chan startResult)
	inFlight := 0
	defer func() {
		for ; inFlight > 0; inFlight-- {
			if r := <-results; r.ws != nil {
				r.ws.discard()
			}
		}
	}()
	for {
		for inFlight < refillParallel && p.missing() > inFlight {
			inFlight++
			go func() {
				ws, err := p.start(ctx)
				results <- startResult{ws, err}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case r := <-results:
			inFlight--
			if r.err != nil {
				if ctx.Err() != nil {
					return
				}
				p.log.Warn("warm shim did not start; starting cold meanwhile", logKeyError, r.err)
				if retry.Sleep(ctx, b.Next()) != nil {
					return
				}
				continue
			}
			b.Reset()
			p.mu.Lock()
			// A shim whose process ended may have taken its place.
			full := len(p.idle) >= p.size
			if !full {
				p.idle = append(p.idle, r.ws)
				p.wakeFirstLocked()
			}
			p.mu.Unlock()
			if full {
				r.ws.discard()
			}
		}
	}
}

// idleCount is how many shims wait in the pool now; 0 without a pool.
func (p *pool) idleCount() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// missing is how many shims the pool lacks, counting those coming back
// and those taken recently.
func (p *pool) missing() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size - len(p.idle) - p.returning - p.recent
}

// ended says that the process of ws, taken from p, ended and ws will not
// come back (see reserve for one that may). Nil p or ws: nothing to do.
func (p *pool) ended(ws *warmShim) {
	if p == nil || ws == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endedLocked(ws)
}

// endedLocked stops counting ws as out and as taken recently. p.mu is held.
func (p *pool) endedLocked(ws *warmShim) {
	p.forgetLocked(ws.taken)
	ws.taken = nil
	if ws.out {
		ws.out = false
		p.out--
	}
}

// recentTake is one take of a shim while it counts in pool.recent.
type recentTake struct{ over bool }

// forgetLocked stops counting t in p.recent, once. p.mu is held.
func (p *pool) forgetLocked(t *recentTake) {
	if t != nil && !t.over {
		t.over = true
		p.recent--
	}
}

// waiter is a take waiting in pool.queue.
type waiter struct {
	wake chan struct{} // cap 1: look again
}

// wakeFirstLocked has the first take in line look again: a shim landed in
// idle, or the first changed. p.mu is held.
func (p *pool) wakeFirstLocked() {
	if len(p.queue) > 0 {
		p.queue[0].poke()
	}
}

// wakeAllLocked has every take waiting look again: a cold start ended,
// which any of them may begin, or the pool closed. p.mu is held.
func (p *pool) wakeAllLocked() {
	for _, w := range p.queue {
		w.poke()
	}
}

func (w *waiter) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// reserve counts ws, a shim whose process ended, as on its way back (see
// shimRounds) until recycle or gone ends that: close waits for it, in idle
// or ended. It is asked before the process's status is known, so that
// whoever sees the status and then closes the executor finds the shim
// counted. Either way ws no longer counts as out. It reports whether the
// pool takes ws back (it lacks one, or a take waits for one: a take then
// waits for it); false: the shim is to end (the pool is full and no take
// waits, the pool is closed, or there is none).
func (p *pool) reserve(ws *warmShim) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ws != nil {
		p.endedLocked(ws)
	}
	p.returns.Add(1)
	if p.closed || len(p.idle)+p.returning >= p.size+len(p.queue) {
		return false
	}
	p.returning++
	return true
}

// gone ends reserve's count for a shim that did not come back, once it is
// reaped.
func (p *pool) gone(reserved bool) {
	if p == nil {
		return
	}
	if reserved {
		p.mu.Lock()
		p.returning--
		// Those waiting for it to come back look again.
		p.wakeAllLocked()
		p.mu.Unlock()
	}
	p.returns.Done()
}

// recycle takes back a shim counted by reserve: reserved, it readies its
// init again (the same one when it stayed, else a new one: one start of
// the devops binary where a new shim costs two) and waits in the pool.
// Otherwise, or when that fails, it ends. It returns once the shim is idle
// or reaped.
func (p *pool) recycle(ws *warmShim, reserved bool) {
	if p == nil {
		ws.discard()
		return
	}
	defer p.returns.Done()
	if !reserved {
		ws.discard()
		return
	}
	err := p.rewarm(p.ctx, ws)
	p.mu.Lock()
	p.returning--
	keep := err == nil && !p.closed && len(p.idle) < p.size+len(p.queue)
	if keep {
		p.idle = append(p.idle, ws)
		p.lastBack = time.Now()
		p.wakeFirstLocked()
	} else {
		// Those waiting for it to come back look again.
		p.wakeAllLocked()
	}
	p.mu.Unlock()
	if keep {
		return
	}
	ws.discard()
	if err != nil && p.ctx.Err() == nil {
		p.log.Warn("a shim could not ready its init again", logKeyError, err)
		p.kickRefill()
	}
}

// returnWait bounds how long a take that finds the pool empty waits for a
// shim coming back (one whose process ended, or, while the machine's cores
// are busy with them, one taken less than refillDelay ago, whose short
// command may end any moment) before it starts cold, counted from the
// take or from the last shim that came back, whichever is later: while
// shims keep coming back a take waits its turn, up to returnWaitMax. A
// shim comes back within at most one start of the devops binary (a new
// init's) and a cold start costs two, ~130 ms of CPU each on this
// project's 2-core VM under load: in a burst of short commands, waiting
// lets a few shims run them one after another. Before,
// a take waited only for shims whose process had ended, and only 100 ms
// from its own start: 32 `true` at once on one worker started about a
// third of them cold, 44-57 commands a second (300 in a row, two runs)
// against 96-112 now.
//
// It was 100 ms and 1 s in all: too short for the first burst on a busy
// machine. 300 `true`, 64 at once, on two workers of this VM, each on a
// fresh cluster: under that load the first shims took longer than 100 ms
// to come back, so takes started cold, and those starts slowed the
// commands and the next returns further. Seven such rounds took 8.9-14
// s (21-34 commands a second, 60-110 cold starts); with 500 ms and 2 s,
// six of six took 3.1-4.2 s (72-96 a second, 3-6 cold starts). 1 s and 1
// s, and 500 ms and 1 s, still fell into it now and then. At concurrency
// 16 the first burst went from 55-58 to 69-78 a second. The cost is where
// no shim comes back soon: 64 `sleep 3` at once took 6.9-7.7 s against
// 6.9-7.8 before (most of it cold starts, a few at a time).
const (
	returnWait    = 500 * time.Millisecond
	returnWaitMax = 2 * time.Second
)

// coldParallel is the least number of cold starts under way that take
// allows at once; it allows one per core of the machine. The takes past
// them wait for a shim to come back or a cold start to end. A start is
// CPU, so starting more at once than the machine has cores does not end
// them sooner, it only makes each one slower; and a shim whose short
// command ended meanwhile serves the next one for less. Measured with 64
// `true` at once on two workers of a 2-core machine (make bench, scenario
// 3), see bench/FINDINGS.md.
const coldParallel = 2

// take returns an idle shim that is still there, oldest first, and has the
// pool refilled after refillDelay if the shim's process still runs. With
// none idle it returns nil and a func to call once the caller's cold start
// ended (started or not): shims coming back are waited for first (see
// returnWait), and with coldParallel cold starts under way it waits
// for one of those to end or a shim to land in the pool. It gives up when
// ctx ends, with ctx's error.
func (p *pool) take(ctx context.Context) (*warmShim, func(), error) {
	if p == nil {
		return nil, func() {}, nil
	}
	var ws *warmShim
	var gone []*warmShim
	cold := false
	begun := time.Now()
	var me *waiter // in p.queue while this take waits
	p.mu.Lock()
	for {
		for len(p.idle) > 0 && ws == nil && (len(p.queue) == 0 || p.queue[0] == me) {
			w := p.idle[0]
			p.idle = p.idle[1:]
			if w.exited() {
				gone = append(gone, w)
			} else {
				ws = w
			}
		}
		if ws != nil {
			break
		}
		sinceBegun := time.Since(begun)
		wait := min(returnWait-min(sinceBegun, time.Since(p.lastBack)), returnWaitMax-sinceBegun)
		// A shim whose process ended lands in idle within milliseconds;
		// one taken recently is worth waiting for only while as many
		// commands, or cold starts, as the machine has cores keep it
		// busy: below that a cold start runs on a core that would idle.
		forReturn := wait > 0 && (p.returning > 0 || p.recent > 0 && p.out+p.cold >= p.coldMax)
		if !forReturn && (p.cold < p.coldMax || p.closed) {
			p.cold++
			cold = true
			break
		}
		if ctx.Err() != nil {
			break
		}
		if me == nil {
			me = &waiter{wake: make(chan struct{}, 1)}
			p.queue = append(p.queue, me)
		}
		p.mu.Unlock()
		var timeout <-chan time.Time
		var t *time.Timer
		if forReturn {
			t = time.NewTimer(wait)
			timeout = t.C
		}
		select {
		case <-me.wake:
		case <-timeout:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		p.mu.Lock()
	}
	if me != nil {
		p.queue = slices.DeleteFunc(p.queue, func(w *waiter) bool { return w == me })
		// The next in line may take a shim left idle.
		p.wakeFirstLocked()
	}
	// Shims that came back for takes that then started cold or gave up.
	var extra []*warmShim
	if len(p.queue) == 0 && len(p.idle) > p.size {
		extra = slices.Clone(p.idle[p.size:])
		p.idle = p.idle[:p.size]
	}
	var t *recentTake
	if ws != nil {
		t = &recentTake{}
		ws.taken = t
		p.recent++
		ws.out = true
		p.out++
	}
	p.mu.Unlock()
	if t != nil {
		p.later(refillDelay, func() {
			p.mu.Lock()
			p.forgetLocked(t)
			p.mu.Unlock()
			p.kickRefill()
		})
	}
	for _, w := range append(gone, extra...) {
		w.discard()
	}
	switch {
	case ws != nil:
		return ws, nil, nil
	case cold:
		return nil, p.coldEnded, nil
	}
	return nil, nil, fmt.Errorf("wait for a shim: %w", ctx.Err())
}

// coldEnded is what take returns for the caller to call once its cold
// start ended.
func (p *pool) coldEnded() {
	p.mu.Lock()
	p.cold--
	p.wakeAllLocked()
	p.mu.Unlock()
}

// kickRefill has refill look again at what the pool lacks. After close it
// does nothing: no refill reads kick any more.
func (p *pool) kickRefill() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// close stops the refill and ends every idle shim; it returns once they
// are reaped. A nil pool does nothing.
func (p *pool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.wakeAllLocked()
	p.mu.Unlock()
	p.cancel()
	<-p.done
	// Those on their way back give up (ctx) and end, or land in idle.
	p.returns.Wait()
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	// All at once, then one by one: they end in parallel.
	for _, ws := range idle {
		ws.cfg.Close()
	}
	for _, ws := range idle {
		ws.discard()
	}
}

// warmShim is the worker's side of a shim whose pipes it holds: one waiting
// in the pool, or one running a process it may come back from.
type warmShim struct {
	pid     int
	pidfd   int      // watches and reaps the shim
	initPid int      // its init, waiting for a config
	cfg     *os.File // the process's config goes here; EOF ends the shim
	ready   *os.File
	answers *json.Decoder // on ready: first the warm-up, then the start
	// taken is the take that handed it out while it counts in pool.recent
	// (pool.mu).
	taken *recentTake
	out   bool // taken, its process not ended: counted in pool.out (pool.mu)
}

// startWarmShim starts a shim with no process yet and waits until it has
// started its init. ctx ending gives up on it.
func (e *Executor) startWarmShim(ctx context.Context) (*warmShim, error) {
	pl := e.platform
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("config pipe: %w", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return nil, fmt.Errorf("ready pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path: pl.initPath,
		Args: []string{pl.initPath, initArg, warmShimArg},
		// No Docker environment: containers start cold.
		Env:        []string{"GORACE=atexit_sleep_ms=0"},
		Dir:        "/",
		ExtraFiles: []*os.File{cfgR, readyW},
		// Like every shim: its own session and no Pdeathsig. While idle it
		// ends at EOF on its config pipe instead.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	cfgR.Close()
	readyW.Close()
	if err != nil {
		cfgW.Close()
		readyR.Close()
		return nil, fmt.Errorf("start warm shim: %w", err)
	}
	pid := cmd.Process.Pid
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		cfgW.Close()
		readyR.Close()
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("open warm shim pidfd: %w", err)
	}
	// From here the pidfd watches and reaps the shim, not os/exec.
	cmd.Process.Release()
	ws := &warmShim{pid: pid, pidfd: pidfd, cfg: cfgW, ready: readyR, answers: json.NewDecoder(readyR)}
	if err := e.warmUp(ctx, ws); err != nil {
		ws.discard()
		return nil, err
	}
	return ws, nil
}

// warmUp tells ws what New found about the machine and waits until it has
// started an init: a new warm shim, or one whose process ended.
func (e *Executor) warmUp(ctx context.Context, ws *warmShim) error {
	if err := json.NewEncoder(ws.cfg).Encode(e.newShimConfig("", devops.Spec{}, prepared{}, "")); err != nil {
		return fmt.Errorf("configure warm shim: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { ws.ready.SetReadDeadline(time.Now()) })
	var hello shimReady
	err := ws.answers.Decode(&hello)
	if !stop() {
		err = ctx.Err()
	}
	if err == nil && hello.Error != "" {
		err = errors.New(hello.Error)
	}
	if err != nil {
		return fmt.Errorf("warm shim: %w", err)
	}
	ws.initPid = hello.InitPid
	return nil
}

// handOff gives process c to ws and returns its Process once ws started
// it, or errStale when ws could not take it (it is ended then). The config
// pipe stays open: the Process gives ws back to the pool once it ended.
func (e *Executor) handOff(ws *warmShim, c shimConfig) (*Process, error) {
	err := json.NewEncoder(ws.cfg).Encode(c)
	if err != nil {
		// It ended after take looked.
		ws.discard()
		return nil, errStale
	}
	var ready shimReady
	err = ws.answers.Decode(&ready)
	if err == nil && ready.Stale {
		ws.discard()
		return nil, errStale
	}
	return e.shimAnswered(c, ws, true, ready, err)
}

// exited reports whether the shim has ended.
func (ws *warmShim) exited() bool {
	fds := []unix.PollFd{{Fd: int32(ws.pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// discard ends an idle shim: at EOF on its config pipe it ends its init and
// exits; after discardWait it is killed. It returns once the shim is reaped.
func (ws *warmShim) discard() {
	ws.cfg.Close()
	ws.ready.Close()
	fds := []unix.PollFd{{Fd: int32(ws.pidfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(discardWait)
	for {
		n, err := unix.Poll(fds, max(0, int(time.Until(deadline).Milliseconds())))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if n == 0 && err == nil {
			// Its init, now without a shim, still ends at EOF on its config.
			unix.PidfdSendSignal(ws.pidfd, unix.SIGKILL, nil, 0)
		}
		break
	}
	reapShim(ws.pidfd)
	unix.Close(ws.pidfd)
}

// warmInit is the shim's side of an init it started before it had a
// process: the init waits for its config; its output comes on outR and errR.
type warmInit struct {
	idle       *idleInit
	outR, errR *os.File
	pidfd      int // watches the init while idle
}

// spawnWarm starts an init with no process yet, in the namespaces when
// there are some, and pipes for its output. An init told again (see
// initRounds) gets them with its config, as it will the next command's.
func (pl *platform) spawnWarm(again bool) (*warmInit, error) {
	outR, outW, errR, errW, err := outputPipes()
	if err != nil {
		return nil, err
	}
	stdout, stderr := outW, errW
	if again {
		stdout, stderr = nil, nil
	}
	in, err := pl.spawnInit(nil, stdout, stderr)
	if err == nil && again {
		in.again, in.outW, in.errW = true, outW, errW
	} else {
		// The init has its own copies of the write ends.
		outW.Close()
		errW.Close()
	}
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	pidfd, err := unix.PidfdOpen(in.cmd.Process.Pid, 0)
	if err != nil {
		in.abandon()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("open init pidfd: %w", err)
	}
	return &warmInit{idle: in, outR: outR, errR: errR, pidfd: pidfd}, nil
}

// outputPipes makes the pipes of a command's stdout and stderr.
func outputPipes() (outR, outW, errR, errW *os.File, err error) {
	if outR, outW, err = outputPipe(); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("stdout pipe: %w", err)
	}
	if errR, errW, err = outputPipe(); err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, nil, nil, fmt.Errorf("stderr pipe: %w", err)
	}
	return outR, outW, errR, errW, nil
}

// renew readies an init that stayed after its command (initRounds) for
// the next one: reports whether it is still there, with new output pipes.
func (in *warmInit) renew() bool {
	if !in.idle.stayed || in.exited() {
		return false
	}
	outR, outW, errR, errW, err := outputPipes()
	if err != nil {
		return false
	}
	in.outR, in.errR = outR, errR
	in.idle.outW, in.idle.errW = outW, errW
	in.idle.stayed, in.idle.cg = false, nil
	return true
}

// waitTake blocks until something comes on fd (the config, or EOF) and
// reports false when the init ended first.
func (in *warmInit) waitTake(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(in.pidfd), Events: unix.POLLIN}}
	poll(fds)
	// Neither ready (poll failed): the read decides.
	return fds[0].Revents != 0 || fds[1].Revents == 0
}

// exited reports whether the init has ended.
func (in *warmInit) exited() bool {
	fds := []unix.PollFd{{Fd: int32(in.pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// abandon ends an init that never got a process.
func (in *warmInit) abandon() {
	in.idle.abandon()
	in.outR.Close()
	in.errR.Close()
	unix.Close(in.pidfd)
}

// launchWarm is launch through an init a warm shim started beforehand.
func (e *Executor) launchWarm(id devops.ProcessID, spec devops.Spec, pr prepared, in *warmInit, stdout, stderr io.Writer) (*Process, error) {
	p := e.newProcess(id, spec, pr.home, stdout, stderr)
	sb, err := e.platform.startWarm(context.Background(), newLaunch(id, spec, pr), in.idle, p.log)
	if err != nil {
		in.outR.Close()
		in.errR.Close()
		p.removeDir()
		return nil, err
	}
	p.begin(sb, in.outR, in.errR)
	return p, nil
}

// runWarmShim is a shim started before its process is known: it reads
// what New found about the machine, starts the init, says so, and waits.
// Given a process, it checks the init is still there and becomes that
// process's shim; EOF instead (the worker closed the pool or died) ends the
// init and the shim. Once the process ended it may start over (shimRounds).
func runWarmShim() int {
	stops, ok := shimSetup(warmShimArg, shimConfigFD, shimReadyFD)
	if !ok {
		return 2
	}
	ready := os.NewFile(shimReadyFD, "shim-ready")
	configs := json.NewDecoder(os.NewFile(shimConfigFD, "shim-config"))
	return shimRounds(configs, ready, stops)
}

// shimRounds is a shim between processes: each round it reads what New
// found about the machine (the worker's word that it wants the shim back),
// readies an init ahead (the last one when it stayed, see warmRound), says
// so and waits for a process, which it runs as superviseShim does. It ends
// at EOF on its config pipe: the worker closed it (it keeps enough shims,
// its pool closed, or the shim could not take the process) or died; or
// when a round failed.
//
// Why a shim runs more than one process: a start of the devops binary is
// a third of what a command costs the machine (its runtime start, page
// faults and package initialisers; a command's shim and init are two). A
// shim that stays needs no start per command when its init stays too, and
// one (a new init's, made while idle as a warm shim does) otherwise.
func shimRounds(configs *json.Decoder, ready *os.File, stops <-chan os.Signal) int {
	// The init that stayed after the last round's command, if any.
	var kept *warmInit
	defer func() {
		if kept != nil {
			kept.abandon()
		}
	}()
	for round := 0; ; round++ {
		var base shimConfig
		if err := configs.Decode(&base); err != nil || base.ID != "" {
			return 0
		}
		var code int
		if code, kept = warmRound(base, round, kept, configs, ready, stops); code != 0 {
			return code
		}
	}
}

// warmRound readies an init as base says, waits for a process and runs it:
// kept, the init of the round before when it stayed for another command
// (initRounds), or a new one. 0 says the shim may wait for the worker's
// next word: the process ran to its end and its status is down, or the
// worker ends the shim anyway (EOF, or a process it could not take). The
// init it returns stayed for the next round, when not nil.
func warmRound(base shimConfig, round int, kept *warmInit, configs *json.Decoder, ready *os.File, stops <-chan os.Signal) (int, *warmInit) {
	pl := &platform{initPath: base.InitPath, namespaces: base.Namespaces}
	pl.cgroups = base.Cgroups.cgroups(slog.Default())
	again := pl.initsStay()
	in := kept
	if in != nil && (!again || !in.renew()) {
		in.abandon()
		in = nil
	}
	if in == nil {
		var err error
		if in, err = pl.spawnWarm(again); err != nil {
			json.NewEncoder(ready).Encode(shimReady{Error: err.Error()})
			return 1, nil
		}
	}
	if pl.cgroups != nil {
		// A cgroup of its own each round: the last one's limits stay with it.
		name := "warm-" + strconv.Itoa(os.Getpid())
		if round > 0 {
			name += "-" + strconv.Itoa(round)
		}
		if err := in.idle.joinCgroup(pl.cgroups, name); err != nil {
			json.NewEncoder(ready).Encode(shimReady{Error: err.Error()})
			in.abandon()
			return 1, nil
		}
	}
	json.NewEncoder(ready).Encode(shimReady{InitPid: in.idle.cmd.Process.Pid})
	// The config cannot have come with the first message (it is sent only
	// after the answer above), so the pipe is where to wait for it.
	if !in.waitTake(shimConfigFD) {
		// The init died while idle: so does the shim, and take skips it.
		in.abandon()
		return 1, nil
	}
	var c shimConfig
	if err := configs.Decode(&c); err != nil {
		in.abandon()
		return 0, nil
	}
	if in.exited() || !c.UseInit || c.InitPath != base.InitPath || c.Namespaces != base.Namespaces || (c.Cgroups == nil) != (base.Cgroups == nil) {
		json.NewEncoder(ready).Encode(shimReady{Stale: true})
		in.abandon()
		return 0, nil
	}
	// What a cold shim is given at exec: its output and its log.
	out, err := os.OpenFile(filepath.Join(c.Dir, OutputFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		json.NewEncoder(ready).Encode(shimReady{Error: "open output: " + err.Error()})
		in.abandon()
		return 1, nil
	}
	if logf, err := os.OpenFile(filepath.Join(c.Dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		unix.Dup3(int(logf.Fd()), 2, 0)
		logf.Close()
	}
	// A stop for the last process that came after it ended is not this one's.
	for len(stops) > 0 {
		<-stops
	}
	code := superviseShim(c, ready, out, stops, in, true)
	if !in.idle.stayed {
		// The sandbox saw the init's end; its pidfd only watched it idle.
		unix.Close(in.pidfd)
		return code, nil
	}
	return code, in
}

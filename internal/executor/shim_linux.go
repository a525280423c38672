package executor

// A supervised process is held by a shim, a small per-process supervisor
// like Nomad's executor or containerd's shim: the devops binary re-run as
// "__init shim <id>", in its own session, outside the process's cgroup and
// namespaces, with no parent-death signal. The shim runs the process exactly
// as Start does in the worker (through the init, in the cgroup, with the
// timeout), writes its output itself into a file in the worker's framed
// format and, once it ended, its ExitStatus beside it. So a worker that dies
// (kill -9, an upgrade) takes nothing with it, and the next one finds the
// process again with Adopt.
//
// Why a parent of the init rather than the init itself: the init must live
// in the process's cgroup and be PID 1 of its namespace, so every kill of the
// tree kills it too, and without namespaces it execs the command. Only a
// process outside both can see the end, read the cgroup's usage, remove it
// and record the status. It costs one more exec at start, once: a shim
// whose process ended and whose worker wants it back readies its init again
// (keeps it, where it stays: initRounds) and waits in the warm pool for the
// next process (shimRounds).
//
// The directory of a supervised process holds:
//
//	output        the framed output (1 byte stream, 4 bytes big-endian length, data)
//	dropped.json  where the output starts again once the oldest was dropped (DroppedFile)
//	shim.json     shimState: how to find the shim again, written before it reports ready
//	stop.json     the last stop asked (Terminate), read by the shim on SIGUSR1
//	exit.json     the devops.ExitStatus, written (temp + rename) after the output is complete
//	shim.log      the shim's own log

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devops-platform/devops"
)

// shimArg follows initArg to make the init binary a shim.
const shimArg = "shim"

// The shim's file descriptors, after stdin, stdout and stderr.
const (
	shimConfigFD = 3
	shimReadyFD  = 4
	shimOutputFD = 5
)

// shimConfig is what the worker tells the shim, as JSON on shimConfigFD:
// a checked spec, its prepared directory and what New found the machine
// can do, so the shim need not probe again.
type shimConfig struct {
	ID         devops.ProcessID `json:"id"`
	Spec       devops.Spec      `json:"spec"`
	Dir        string           `json:"dir"`
	Root       string           `json:"root"`
	Home       string           `json:"home"`
	Cwd        string           `json:"cwd"`
	Cred       *initCred        `json:"cred,omitempty"`
	User       string           `json:"user,omitempty"`
	InitPath   string           `json:"init_path"`
	RunAsRoot  bool             `json:"run_as_root,omitempty"`
	UseInit    bool             `json:"use_init,omitempty"`
	Namespaces bool             `json:"namespaces,omitempty"`
	Cgroups    *cgroupsState    `json:"cgroups,omitempty"`
	SpoolMax   int64            `json:"spool_max,omitempty"`
}

type cgroupsState struct {
	Version string            `json:"version"`
	Base    map[string]string `json:"base"`
	Memory  bool              `json:"memory,omitempty"`
	CPU     bool              `json:"cpu,omitempty"`
	Pids    bool              `json:"pids,omitempty"`
}

// cgroups is the worker's cgroups as the shim uses them, logging to log;
// nil when the worker has none.
func (cs *cgroupsState) cgroups(log *slog.Logger) *cgroups {
	if cs == nil {
		return nil
	}
	return &cgroups{version: cs.Version, log: log, base: cs.Base, memory: cs.Memory, cpu: cs.CPU, pids: cs.Pids}
}

// shimReady is the shim's answer on shimReadyFD: the command started, or why not.
// A warm shim (pool_linux.go) answers twice: once its init is started, then
// for the process it was given.
type shimReady struct {
	InitPid int    `json:"init_pid,omitempty"`
	Error   string `json:"error,omitempty"`
	Invalid bool   `json:"invalid,omitempty"`
	// Stale: a warm shim could not take the process and started nothing
	// of it (its init ended meanwhile, or the machine's settings changed).
	Stale bool `json:"stale,omitempty"`
	// Status: the process ended so, and all its output is in the output
	// file. The output and the status are not on disk yet (exit.json):
	// the shim puts them there next, then says Ended, or closes the pipe.
	Status *devops.ExitStatus `json:"status,omitempty"`
	// Back, with Status: the shim may run another process, and will say
	// Ended rather than close the pipe.
	Back bool `json:"back,omitempty"`
	// Ended: after a Status with Back, the output and the status are on
	// disk and the shim waits on its config pipe for the worker's word
	// (shimRounds).
	Ended bool `json:"ended,omitempty"`
}

// shimState is stateFile: enough to find and control the process after the
// worker restarted.
type shimState struct {
	Pid int `json:"pid"` // the shim
	// StartTicks is the shim's start time (field 22 of /proc/<pid>/stat):
	// a pid reused by a stranger does not match it.
	StartTicks uint64            `json:"start_ticks"`
	InitPid    int               `json:"init_pid"`
	StartedAt  time.Time         `json:"started_at"`
	Cgroup     map[string]string `json:"cgroup,omitempty"` // controller ("" on v2) -> directory
	CgroupV    string            `json:"cgroup_version,omitempty"`
	Argv       []string          `json:"argv"`
	Timeout    time.Duration     `json:"timeout,omitempty"` // enforced by the shim
	Grace      time.Duration     `json:"grace,omitempty"`
	Home       string            `json:"home"`
	KeepDir    bool              `json:"keep_dir,omitempty"`
}

// stopRequest is stopFile.
type stopRequest struct {
	Signal int           `json:"signal"`
	Grace  time.Duration `json:"grace"`
}

// StartSupervised starts spec as process id under a shim that outlives the
// caller, with its output, state and exit status in dir (created if
// missing; OutputFile exists when it returns). It returns the errors Start
// returns. The Process's Wait and Terminate go through the shim; StartedAt
// says when it started. With Config.SpoolMax set, the shim keeps at most
// that many bytes of frames on disk, dropping the oldest (see DroppedFile).
func (e *Executor) StartSupervised(ctx context.Context, id devops.ProcessID, spec devops.Spec, dir string) (*Process, error) {
	pr, err := e.prepare(ctx, id, &spec)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	p, err := e.startShim(ctx, id, spec, pr, dir)
	if err != nil {
		os.RemoveAll(pr.home)
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	return p, nil
}

func (e *Executor) startShim(ctx context.Context, id devops.ProcessID, spec devops.Spec, pr prepared, dir string) (*Process, error) {
	out, err := e.createProcessDir(id, dir)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	switch {
	case spec.StdinFile != "":
		// Staged by the worker in the same file system: no copy.
		if err := os.Rename(spec.StdinFile, filepath.Join(dir, StdinFile)); err != nil {
			return nil, fmt.Errorf("move the standard input in place: %w", err)
		}
	case len(spec.Stdin) > 0:
		// Not synced: a crash of the machine ends the process with it.
		if err := os.WriteFile(filepath.Join(dir, StdinFile), spec.Stdin, 0o600); err != nil {
			return nil, fmt.Errorf("write the standard input: %w", err)
		}
		// What tells the shim to give it to the command: the bytes
		// themselves do not go in its config (devops.Spec.Stdin).
		spec.StdinBytes = int64(len(spec.Stdin))
	}
	c := e.newShimConfig(id, spec, pr, dir)
	// A container's shim needs the Docker environment, and no init: it
	// starts cold.
	for spec.Image == "" {
		ws, coldEnded, err := e.pool.take(ctx)
		if err != nil {
			return nil, err
		}
		if ws == nil {
			defer coldEnded()
			break
		}
		p, err := e.handOff(ws, c)
		if err != nil {
			e.pool.ended(ws) // it is gone
		}
		if !errors.Is(err, errStale) {
			return p, err
		}
	}
	logf, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create shim log: %w", err)
	}
	defer logf.Close()
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
	pl := e.platform
	cmd := &exec.Cmd{
		Path:       pl.initPath,
		Args:       []string{pl.initPath, initArg, shimArg, string(id)},
		Env:        append([]string{"GORACE=atexit_sleep_ms=0"}, dockerEnv()...), // the engine the worker reaches
		Dir:        "/",
		Stderr:     logf,
		ExtraFiles: []*os.File{cfgR, readyW, out},
		// Its own session and no Pdeathsig: the shim outlives the worker.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	cfgR.Close()
	readyW.Close()
	if err != nil {
		cfgW.Close()
		readyR.Close()
		return nil, fmt.Errorf("start shim: %w", err)
	}
	// An unreaped child: its pid cannot have been reused yet.
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		cfgW.Close()
		readyR.Close()
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("open shim pidfd: %w", err)
	}
	// From here the pidfd watches and reaps the shim, not os/exec.
	cmd.Process.Release()
	ws := &warmShim{pid: cmd.Process.Pid, pidfd: pidfd, cfg: cfgW, ready: readyR, answers: json.NewDecoder(readyR)}
	json.NewEncoder(cfgW).Encode(c) // a shim that died shows below
	if !reusable(c) {
		// It ends with its process: EOF is all it will read.
		cfgW.Close()
	}
	var ready shimReady
	err = ws.answers.Decode(&ready)
	return e.shimAnswered(c, ws, false, ready, err)
}

// createProcessDir makes dir, the directory of process id, with its empty
// output (opened for appends) and shim log; a spare when one is ready. It
// fails with devops.ErrAlreadyExists when dir holds an output already.
func (e *Executor) createProcessDir(id devops.ProcessID, dir string) (*os.File, error) {
	if e.spoolSpares(dir).Take(dir) {
		out, err := os.OpenFile(filepath.Join(dir, OutputFile), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return nil, fmt.Errorf("open output: %w", err)
		}
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create process state directory: %w", err)
	}
	out, err := os.OpenFile(filepath.Join(dir, OutputFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: output of %s exists", devops.ErrAlreadyExists, id)
		}
		return nil, fmt.Errorf("create output: %w", err)
	}
	return out, nil
}

// newShimConfig is what a shim needs to run the prepared spec as process id
// with its files in dir. With no id, it is only what New found about the
// machine: what a warm shim is told first.
func (e *Executor) newShimConfig(id devops.ProcessID, spec devops.Spec, pr prepared, dir string) shimConfig {
	pl := e.platform
	c := shimConfig{
		ID: id, Spec: spec, Dir: dir, Root: e.root, Home: pr.home, Cwd: pr.cwd, User: pr.user,
		InitPath: pl.initPath, RunAsRoot: pl.root, UseInit: pl.useInit, Namespaces: pl.namespaces,
		SpoolMax: e.spoolMax,
	}
	if pr.cred != nil {
		c.Cred = &initCred{UID: pr.cred.uid, GID: pr.cred.gid, Groups: pr.cred.groups}
	}
	if cg := pl.cgroups; cg != nil {
		c.Cgroups = &cgroupsState{Version: cg.version, Base: cg.base, Memory: cg.memory, CPU: cg.cpu, Pids: cg.pids}
	}
	return c
}

// shimAnswered makes the Process of the shim ws that was given c and
// answered ready; err is why its answer could not be read. A shim that did
// not start the process is killed and reaped, and the error says why.
// pooled says the shim came warm from the pool. The Process keeps ws's
// pipes: the shim says on ready how the process ended, and one that may
// run another process waits on its config pipe then (see
// watchShim).
func (e *Executor) shimAnswered(c shimConfig, ws *warmShim, pooled bool, ready shimReady, err error) (*Process, error) {
	pid, pidfd := ws.pid, ws.pidfd
	if err != nil || ready.Error != "" {
		ws.cfg.Close()
		ws.ready.Close()
		unix.Kill(pid, unix.SIGKILL)
		reapShim(pidfd)
		unix.Close(pidfd)
		if err != nil {
			msg, _ := os.ReadFile(filepath.Join(c.Dir, logFile))
			return nil, fmt.Errorf("shim did not start: %s", strings.TrimSpace(string(msg)))
		}
		if ready.Invalid {
			return nil, fmt.Errorf("%w: %s", devops.ErrInvalid, ready.Error)
		}
		return nil, errors.New(ready.Error)
	}
	log := e.log.With(logKeyProcessID, string(c.ID))
	p := newShimProcess(c.ID, c.Spec, log, c.Home, ready.InitPid, &shimHandle{pid: pid, pidfd: pidfd, back: ws, pool: e.pool, dir: c.Dir, log: log, pooled: pooled})
	log.Debug("process started under a shim", logKeyPid, p.pid, "shim_pid", pid, "pooled", pooled)
	return p, nil
}

// Adopt finds process id, started by StartSupervised with dir, again: after
// the caller (a previous worker) died. A process still running comes back
// under its shim; one that ended meanwhile comes back ended, with its exit
// status. Anything else (a shim that died without a status, a directory
// without a shim) yields devops.ErrNotFound, after what was left of the
// process (its tree, its cgroup, its own directory) is removed; the caller
// removes dir.
func (e *Executor) Adopt(id devops.ProcessID, dir string) (*Process, error) {
	log := e.log.With(logKeyProcessID, string(id))
	var st shimState
	stErr := readJSON(filepath.Join(dir, stateFile), &st)
	if p, ok := e.adoptEnded(id, dir, st, log); ok {
		return p, nil
	}
	if stErr != nil {
		return nil, fmt.Errorf("adopt %s: %w: no supervisor state (%v)", id, devops.ErrNotFound, stErr)
	}
	spec := devops.Spec{Argv: st.Argv, Timeout: st.Timeout, Grace: st.Grace, KeepDir: st.KeepDir}
	pidfd, err := openShim(st)
	if err == nil {
		p := newShimProcess(id, spec, log, st.Home, st.InitPid, &shimHandle{pid: st.Pid, pidfd: pidfd, dir: dir, log: log})
		p.started = st.StartedAt
		log.Info("process adopted", logKeyPid, st.InitPid, "shim_pid", st.Pid)
		return p, nil
	}
	// It may have ended between the two looks.
	if p, ok := e.adoptEnded(id, dir, st, log); ok {
		return p, nil
	}
	// The shim is gone without a word: nothing can tell how it ended. What
	// it left must not run on unseen.
	e.removeLeftovers(st, log)
	log.Warn("process lost: its supervisor died without a status", logKeyError, err)
	return nil, fmt.Errorf("adopt %s: %w: supervisor gone (%v)", id, devops.ErrNotFound, err)
}

// adoptEnded returns the ended process when dir holds its exit status.
func (e *Executor) adoptEnded(id devops.ProcessID, dir string, st shimState, log *slog.Logger) (*Process, bool) {
	var status devops.ExitStatus
	if readJSON(filepath.Join(dir, ExitFile), &status) != nil {
		return nil, false
	}
	// A shim cleans up once the status is down (statusFirst): one that
	// died in between left the cgroup and the directory behind.
	if !shimRunning(st) {
		e.removeLeftovers(st, log)
	}
	p := &Process{id: id, log: log, dir: st.Home, pid: st.InitPid, started: st.StartedAt, exited: make(chan struct{}), done: make(chan struct{})}
	p.ended = p.done
	p.status = status
	close(p.exited)
	close(p.done)
	return p, true
}

// removeLeftovers removes what a shim that is gone left of its process:
// the cgroup, after killing whatever still runs in it, and the process's
// own directory unless its spec keeps it.
func (e *Executor) removeLeftovers(st shimState, log *slog.Logger) {
	if len(st.Cgroup) > 0 {
		cg := &cgroup{version: st.CgroupV, log: log, dirs: st.Cgroup}
		cg.kill()
		cg.destroy()
	}
	if st.Home != "" && !st.KeepDir && filepath.Dir(st.Home) == e.root {
		os.RemoveAll(st.Home)
	}
}

// openShim opens a pidfd on the shim st names, if it is still that shim.
func openShim(st shimState) (int, error) {
	if st.Pid <= 0 {
		return -1, errors.New("no shim pid")
	}
	fd, err := unix.PidfdOpen(st.Pid, 0)
	if err != nil {
		return -1, fmt.Errorf("shim %d: %w", st.Pid, err)
	}
	// Checked after the open: the fd now pins this pid, so a match means
	// the fd is the shim's.
	if ticks, err := startTicks(st.Pid); err != nil || ticks != st.StartTicks {
		unix.Close(fd)
		return -1, fmt.Errorf("shim %d is gone (pid reused or ended)", st.Pid)
	}
	return fd, nil
}

// startTicks reads when pid started, in clock ticks since boot.
func startTicks(pid int) (uint64, error) {
	_, ticks, err := procStat(pid)
	return ticks, err
}

// procStat reads pid's state (R, S, Z...) and start time from /proc.
func procStat(pid int) (state byte, ticks uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// from the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, 0, errors.New("malformed stat")
	}
	ticks, err = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], ticks, err
}

// shimRunning reports whether the shim st names still runs: the same
// process (its start time matches), not yet a zombie.
func shimRunning(st shimState) bool {
	state, ticks, err := procStat(st.Pid)
	return err == nil && ticks == st.StartTicks && state != 'Z'
}

func newShimProcess(id devops.ProcessID, spec devops.Spec, log *slog.Logger, home string, pid int, h *shimHandle) *Process {
	p := &Process{id: id, spec: spec, log: log, dir: home, pid: pid, shim: h, started: time.Now(), exited: make(chan struct{}), ended: make(chan struct{}), done: make(chan struct{})}
	go p.watchShim()
	return p
}

// watchShim waits for the process's status: the shim's word on its ready
// pipe, else what the shim left on disk when it ended. Once the shim has
// the status on disk too (its next word, or its pipe's close), the shim
// goes back to the pool (recycle) when its word said it would. It is owned
// by the Process and ends with the shim, or once the shim went back.
func (p *Process) watchShim() {
	h := p.shim
	ended := false
	// counted: reserve counted the shim, and recycle or gone ends that.
	counted, reserved := false, false
	if h.back != nil {
		var word shimReady
		if h.word(&word) && word.Status != nil {
			// Before the status is out: an executor closed by whoever saw
			// it waits for a shim on its way back, or on its way out.
			if word.Back && h.pool != nil {
				counted, reserved = true, h.pool.reserve(h.back)
			}
			p.end(*word.Status)
			ended = true
			var stored shimReady
			back := h.word(&stored) && stored.Ended && word.Back
			p.settle()
			if back {
				h.mu.Lock()
				h.back.pidfd, h.pidfd = h.pidfd, -1
				h.mu.Unlock()
				h.pool.recycle(h.back, reserved)
				return
			}
		}
		// It will not be given another process.
		h.pool.ended(h.back)
		h.back.cfg.Close()
		h.back.ready.Close()
	}
	poll([]unix.PollFd{{Fd: int32(h.pidfd), Events: unix.POLLIN}})
	reapShim(h.pidfd)
	h.mu.Lock()
	unix.Close(h.pidfd)
	h.pidfd = -1
	h.mu.Unlock()
	if counted {
		h.pool.gone(reserved)
	}
	if ended {
		return
	}
	var st devops.ExitStatus
	if err := readJSON(filepath.Join(h.dir, ExitFile), &st); err != nil {
		st = devops.ExitStatus{State: devops.StateFailed, Code: -1, Reason: "supervisor died without a status", EndedAt: time.Now()}
		p.log.Warn("shim ended without a status", logKeyError, err)
	}
	p.end(st)
	p.settle()
}

// word reads the shim's next word on its ready pipe into w, and reports
// whether there was one: false once the shim has ended or closed the pipe.
func (h *shimHandle) word(w *shimReady) bool {
	fds := []unix.PollFd{{Fd: int32(h.pidfd), Events: unix.POLLIN}, {Fd: int32(pollableFD(h.back.ready)), Events: unix.POLLIN}}
	// It may have come with the word before.
	if !pending(h.back.answers) {
		poll(fds)
	}
	if fds[0].Revents != 0 {
		return false
	}
	// Whole or not at all: the shim writes each at once, and a pipe does
	// not split writes this small.
	return h.back.answers.Decode(w) == nil
}

// end records the status of a supervised process and says it ended
// (Ended); settle then says its shim is done with it (Done).
func (p *Process) end(st devops.ExitStatus) {
	p.mu.Lock()
	p.status = st
	close(p.exited)
	p.mu.Unlock()
	close(p.ended)
}

func (p *Process) settle() { close(p.done) }

// pending says whether d holds more than white space it has read ahead.
func pending(d *json.Decoder) bool {
	b, _ := io.ReadAll(d.Buffered())
	return len(bytes.TrimSpace(b)) > 0
}

// poll waits until one of fds is ready, and sets their Revents as
// poll(2) does.
//
// It waits in Go's netpoller, not in poll(2), which would hold a P (see
// pollableFD): fds go into an epoll instance of their own, and the
// netpoller waits on that (an epoll descriptor is readable while one of
// its descriptors is ready).
func poll(fds []unix.PollFd) {
	if sysPoll(fds, 0) {
		return
	}
	if ep, err := epollOf(fds); err == nil {
		defer ep.Close()
		// Read calls sysPoll again each time the epoll descriptor turns
		// readable; it fails when the netpoller would not take it.
		if rc, err := ep.SyscallConn(); err == nil && rc.Read(func(uintptr) bool { return sysPoll(fds, 0) }) == nil {
			return
		}
	}
	sysPoll(fds, -1) // in the system call after all
}

// sysPoll is poll(2) with a timeout in milliseconds (-1: none), again after
// EINTR. It reports whether it is done: one of fds is ready, or it failed.
func sysPoll(fds []unix.PollFd, timeout int) bool {
	for {
		n, err := unix.Poll(fds, timeout)
		if !errors.Is(err, unix.EINTR) {
			return n > 0 || err != nil
		}
	}
}

// epollOf returns a non-blocking epoll instance watching fds for input, as
// a File in the netpoller.
func epollOf(fds []unix.PollFd) (*os.File, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	for _, fd := range fds {
		if err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, int(fd.Fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: fd.Fd}); err != nil {
			break
		}
	}
	if err == nil {
		err = unix.SetNonblock(ep, true)
	}
	if err != nil {
		unix.Close(ep)
		return nil, err
	}
	return os.NewFile(uintptr(ep), "epoll"), nil
}

// reapShim collects the shim's exit status when it is our child; for an
// adopted shim (whose parent died) there is nothing to collect.
func reapShim(pidfd int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// shimHandle is the worker's side of a shim.
type shimHandle struct {
	pid    int
	dir    string
	log    *slog.Logger
	pooled bool // it came warm from the pool
	// back holds the shim's pipes while it runs the process (nil when
	// adopted): its ready pipe says when the exit status is written. pool
	// (nil: none) takes it back once the process ended.
	back *warmShim
	pool *pool

	mu    sync.Mutex // protects pidfd, closed (-1) once the shim ended, and stopFile
	pidfd int
}

// terminate asks the shim to stop the process: the request goes in stopFile,
// SIGUSR1 says it is there.
func (h *shimHandle) terminate(sig syscall.Signal, grace time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := writeJSONAtomic(filepath.Join(h.dir, stopFile), stopRequest{Signal: int(sig), Grace: grace}); err != nil {
		h.log.Warn("ask shim to stop", logKeyError, err)
		return
	}
	if h.pidfd < 0 {
		return
	}
	if err := unix.PidfdSendSignal(h.pidfd, unix.SIGUSR1, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		h.log.Warn("signal shim", logKeyError, err)
	}
}

// StartedAt is when the process started (as its shim recorded it, for an
// adopted one).
func (p *Process) StartedAt() time.Time { return p.started }

// Pooled reports whether a shim of the warm pool started the process, rather
// than one started for it (a cold start, or a container's).
func (p *Process) Pooled() bool { return p.shim != nil && p.shim.pooled }

// runShim is the shim: it starts the command, reports, then supervises it
// until it ended and records how.
func runShim(args []string) int {
	_ = args // the process id, for ps on the host
	stops, ok := shimSetup(shimArg, shimConfigFD, shimReadyFD, shimOutputFD)
	if !ok {
		return 2
	}
	ready := os.NewFile(shimReadyFD, "shim-ready")
	out := os.NewFile(shimOutputFD, "output")
	configs := json.NewDecoder(os.NewFile(shimConfigFD, "shim-config"))
	var c shimConfig
	if err := configs.Decode(&c); err != nil {
		fmt.Fprintf(os.Stderr, "devops: shim: read config: %v\n", err)
		return 125
	}
	// A container's shim runs no init and has the Docker environment: it
	// ends with its process.
	reuse := reusable(c)
	code := superviseShim(c, ready, out, stops, nil, reuse)
	if !reuse || code != 0 {
		return code
	}
	return shimRounds(configs, ready, stops)
}

// reusable says whether the shim of c may run other processes after it:
// those that go through the init, as a warm shim's do.
func reusable(c shimConfig) bool { return c.UseInit && c.Spec.Image == "" }

// shimSetup is how every shim begins: it checks that the executor gave it
// fds (a person running "__init <mode>" by hand is told off) and keeps them
// from the init and the command; it ignores the signals meant for the
// worker's session or group and returns SIGUSR1, the worker's word.
func shimSetup(mode string, fds ...int) (<-chan os.Signal, bool) {
	for _, fd := range fds {
		var st syscall.Stat_t
		if syscall.Fstat(fd, &st) != nil {
			fmt.Fprintf(os.Stderr, "devops: __init %s is started by the executor only\n", mode)
			return nil, false
		}
		syscall.CloseOnExec(fd)
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	// SIGPIPE is caught, not ignored: a write to a worker that is gone
	// fails with EPIPE either way, but the init inherits an ignored one,
	// and Go's runtime then hands a SIGPIPE sent to it to that inherited
	// SIG_IGN rather than to its Notify: `devops kill -s PIPE` reached
	// nothing. A caught signal is reset at exec.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	stops := make(chan os.Signal, 1)
	signal.Notify(stops, syscall.SIGUSR1)
	return stops, true
}

// superviseShim is the shim once it has its config: it starts the command
// (through in, when a warm shim started the init beforehand), reports on
// ready, then supervises it until it ended and records how in out's
// directory. stops tells of SIGUSR1. With reuse, ready stays open for the
// next process: the end is a word on it (shimReady.Ended), not its close.
func superviseShim(c shimConfig, ready, out *os.File, stops <-chan os.Signal, in *warmInit, reuse bool) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With(logKeyProcessID, string(c.ID))
	pl := &platform{log: log, initPath: c.InitPath, root: c.RunAsRoot, useInit: c.UseInit, namespaces: c.Namespaces}
	pl.cgroups = c.Cgroups.cgroups(log)
	e := &Executor{root: c.Root, log: log, platform: pl, statusFirst: true}
	pr := prepared{home: c.Home, cwd: c.Cwd, user: c.User}
	if c.Spec.StdinBytes > 0 {
		pr.stdin = filepath.Join(c.Dir, StdinFile)
	}
	if c.Cred != nil {
		pr.cred = &credential{uid: c.Cred.UID, gid: c.Cred.GID, groups: c.Cred.Groups}
	}
	fw := newFrameWriter(out, c.Dir, c.SpoolMax, log)
	defer fw.close()
	var (
		p   *Process
		err error
	)
	if in != nil {
		p, err = e.launchWarm(c.ID, c.Spec, pr, in, fw.stream(devops.Stdout), fw.stream(devops.Stderr))
	} else {
		p, err = e.launch(context.Background(), c.ID, c.Spec, pr, fw.stream(devops.Stdout), fw.stream(devops.Stderr))
	}
	if err != nil {
		json.NewEncoder(ready).Encode(shimReady{Error: err.Error(), Invalid: errors.Is(err, devops.ErrInvalid)})
		return 1
	}
	ticks, _ := startTicks(os.Getpid())
	st := shimState{
		Pid: os.Getpid(), StartTicks: ticks, InitPid: p.pid, StartedAt: time.Now(),
		Argv: c.Spec.Argv, Timeout: c.Spec.Timeout, Grace: c.Spec.Grace, Home: c.Home, KeepDir: c.Spec.KeepDir,
	}
	if ib, ok := p.sandbox.(*initSandbox); ok && ib.cg != nil {
		st.Cgroup, st.CgroupV = ib.cg.dirs, ib.cg.version
	}
	// Not synced to disk: it is on the way to ready, and the shim it
	// describes does not outlive a crash of the machine either.
	if err := replaceJSON(filepath.Join(c.Dir, stateFile), st, false); err != nil {
		// Without it no worker could find the process again.
		log.Error("write shim state", logKeyError, err)
		p.stop(devops.StateFailed, syscall.SIGKILL, 0)
		p.Wait()
		json.NewEncoder(ready).Encode(shimReady{Error: "write shim state: " + err.Error()})
		return 1
	}
	json.NewEncoder(ready).Encode(shimReady{InitPid: p.pid})
	// The worker learns the status from a word on ready, ahead of this
	// shim's exit (a Go process's exit, then the worker's wake-up on the
	// pidfd: ~1 ms) and of the syncs that put the output and the status on
	// disk (0.5-2 ms each here): the worker reads the output from the file
	// whether it is synced or not, and sends it and the status on to the
	// manager, which stores them. The files on disk are for a worker that
	// died before it had them: one that restarts finds the status there
	// (this shim exits only once it is written), and until then the
	// process still runs under this shim as far as it can tell. A second
	// word, or ready's close, says when they are on disk: until then the
	// process's directory is in use (Process.Done). This shim's exit tells
	// a worker that adopted it.
	//
	// The output's pipes end as the init exits, before the kernel has torn
	// down the init's namespaces (~1 ms) and the process's cgroup and
	// directory are gone: syncing from then on takes the sync off the path
	// to the status on disk.
	drained := make(chan struct{})
	synced := make(chan error, 1)
	go func() {
		p.out.wg.Wait()
		close(drained)
		if fw.empty() {
			// No data to sync, and the file's creation (by the worker) is
			// made durable by the sync of the status just after: on ext4,
			// which this relies on as the renames here do, one journal
			// commit holds every change before it. A command with no
			// output saves one sync (~1.3 ms here) on its way to the status.
			synced <- nil
			return
		}
		synced <- out.Sync()
	}()
	for done := false; !done; {
		select {
		case <-stops:
			var req stopRequest
			if err := readJSON(filepath.Join(c.Dir, stopFile), &req); err != nil {
				log.Warn("read stop request", logKeyError, err)
				continue
			}
			log.Info("terminating", "signal", req.Signal, "grace", req.Grace)
			p.stop(devops.StateTerminated, syscall.Signal(req.Signal), req.Grace)
		case <-p.done:
			done = true
		}
	}
	status := p.Wait()
	if pr.stdin != "" {
		// Up to 4 MiB that the finished output would keep for
		// --keep-finished otherwise; the manager has the input.
		os.Remove(pr.stdin)
	}
	// Every byte of output is in the file before the status goes: the
	// worker reads the file to its end once it has it.
	<-drained
	// A worker that is gone does not read it (EPIPE; SIGPIPE is caught).
	json.NewEncoder(ready).Encode(shimReady{Status: &status, Back: reuse})
	if err := <-synced; err != nil {
		log.Warn("sync output", logKeyError, err)
	}
	out.Close()
	err = writeJSONAtomic(filepath.Join(c.Dir, ExitFile), status)
	if err != nil {
		log.Error("write exit status", logKeyError, err)
	}
	if reuse && err == nil {
		json.NewEncoder(ready).Encode(shimReady{Ended: true})
	} else {
		ready.Close()
	}
	// The worker has the status: the cgroup and the directory go now.
	<-p.cleaned
	if err != nil {
		return 1
	}
	return 0
}

// writeJSONAtomic writes v to path through a temporary file and a rename,
// so a reader sees all of it or none, synced to disk.
func writeJSONAtomic(path string, v any) error { return replaceJSON(path, v, true) }

// replaceJSON is writeJSONAtomic; durable says whether to sync to disk
// before the rename.
func replaceJSON(path string, v any, durable bool) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

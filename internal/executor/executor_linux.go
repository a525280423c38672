package executor

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
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devops-platform/devops"
)

// namespaceFlags are the namespaces each process gets when the worker is
// root: its own PIDs (so killing its init kills all of it), mounts (private
// /proc and /tmp), host name and IPC.
const namespaceFlags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC

// platform is what this Linux machine offers, found once by New.
type platform struct {
	log      *slog.Logger
	initPath string
	root     bool     // the worker can switch users
	cgroups  *cgroups // nil: none usable
	// useInit: the init binary answers; processes start through it.
	useInit bool
	// namespaces: the init runs as PID 1 in fresh namespaces.
	namespaces bool
}

func newPlatform(cfg Config, log *slog.Logger) (*platform, error) {
	pl := &platform{log: log, initPath: cfg.InitPath, root: os.Geteuid() == 0}
	var missing []string
	if pl.root {
		if err := pl.probe(true); err == nil {
			pl.useInit, pl.namespaces = true, true
		} else {
			missing = append(missing, "namespaces ("+err.Error()+")")
		}
	} else {
		missing = append(missing, "namespaces and run-as (not root)")
	}
	if !pl.useInit {
		if err := pl.probe(false); err == nil {
			pl.useInit = true
		} else {
			missing = append(missing, "init binary ("+err.Error()+")")
		}
	}
	if !pl.useInit {
		// Only an init moves a command into its cgroup: without one each
		// command left an empty cgroup behind, and its limits were not
		// enforced though the fingerprint offered them.
		missing = append(missing, "cgroups (without the init nothing joins them)")
	} else if cg, err := detectCgroups(cfg.CgroupRoot, log); err != nil {
		missing = append(missing, "cgroups ("+err.Error()+")")
	} else {
		pl.cgroups = cg
		for c, ok := range map[string]bool{"memory": cg.memory, "cpu": cg.cpu, "pids": cg.pids} {
			if !ok {
				missing = append(missing, c+" cgroup controller")
			}
		}
	}
	if len(missing) > 0 {
		log.Warn("executor runs without some isolation", logKeyMissing, strings.Join(missing, "; "), logKeyCgroups, pl.cgroupVersion())
	} else {
		log.Info("executor ready", logKeyCgroups, pl.cgroupVersion())
	}
	return pl, nil
}

// checkReach warns when a command run as another user (--user) could not
// reach its own directory under root: every directory above it must let
// other users pass (o+x). Such a command fails at its start with
// "permission denied", which says nothing of where.
func (pl *platform) checkReach(root string) {
	if !pl.root {
		return
	}
	for dir := root; ; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o001 == 0 {
			pl.log.Warn("commands run as another user (--user) cannot reach their directories", "dir", dir, "fix", "chmod o+x "+dir)
			return
		}
		if dir == filepath.Dir(dir) {
			return
		}
	}
}

// probe starts the init once with nothing to run, to learn whether the
// binary speaks the init protocol and the kernel lets us make namespaces.
func (pl *platform) probe(namespaces bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stderr := &strings.Builder{}
	cmd := exec.CommandContext(ctx, pl.initPath, initArg, "probe")
	cmd.Env = []string{"GORACE=atexit_sleep_ms=0"}
	cmd.Stderr = stderr
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if namespaces {
		cmd.SysProcAttr.Cloneflags = namespaceFlags
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return err
	}
	statR, statW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return err
	}
	defer statR.Close()
	cmd.ExtraFiles = []*os.File{cfgR, statW}
	err = cmd.Start()
	cfgR.Close()
	statW.Close()
	if err != nil {
		cfgW.Close()
		return err
	}
	json.NewEncoder(cfgW).Encode(initConfig{Probe: true, Namespaces: namespaces})
	cfgW.Close()
	werr := cmd.Wait()
	var res initResult
	if err := json.NewDecoder(statR).Decode(&res); err != nil {
		return fmt.Errorf("%s does not answer %q (%v: %s)", pl.initPath, initArg, werr, strings.TrimSpace(stderr.String()))
	}
	if res.Code != 0 || res.Reason != "" {
		return errors.New(res.Reason)
	}
	return nil
}

func (pl *platform) cgroupVersion() string {
	if pl.cgroups == nil {
		return ""
	}
	return pl.cgroups.version
}

func (pl *platform) close() error {
	if pl.cgroups == nil {
		return nil
	}
	return pl.cgroups.close()
}

func (pl *platform) fingerprint(fp *devops.Fingerprint) {
	fp.Cgroups = pl.cgroupVersion()
	fp.Namespaces = pl.namespaces
	fp.RunAs = pl.root
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err == nil {
		fp.MemoryBytes = uint64(si.Totalram) * uint64(si.Unit)
	}
}

// check refuses limits this machine cannot enforce, naming what is missing.
func (pl *platform) check(spec devops.Spec) error {
	lim := spec.Limits
	cg := pl.cgroups
	// Without cgroups, RLIMIT_AS approximates a memory limit; only an init
	// that execs the command itself (no namespaces) can set it for it alone.
	rlimitMemory := pl.useInit && !pl.namespaces
	if lim.MemoryBytes > 0 && (cg == nil || !cg.memory) && !rlimitMemory {
		return fmt.Errorf("%w: memory limit needs cgroups (memory controller)", devops.ErrInvalid)
	}
	if lim.CPUs > 0 && (cg == nil || !cg.cpu) {
		return fmt.Errorf("%w: cpu limit needs cgroups (cpu controller)", devops.ErrInvalid)
	}
	if lim.Pids > 0 && (cg == nil || !cg.pids) {
		return fmt.Errorf("%w: pids limit needs cgroups (pids controller)", devops.ErrInvalid)
	}
	return nil
}

// lookupUser resolves spec.User; nil means "as the worker".
func (pl *platform) lookupUser(s string) (*credential, error) {
	if s == "" {
		return nil, nil
	}
	cred, err := parseUser(s)
	if err != nil {
		return nil, err
	}
	if cred.uid == uint32(os.Geteuid()) && cred.gid == uint32(os.Getegid()) {
		return nil, nil
	}
	if !pl.root {
		return nil, fmt.Errorf("%w: running as user %q needs a worker running as root", devops.ErrInvalid, s)
	}
	return cred, nil
}

// start launches the process: through the init when it answers, directly
// otherwise.
func (pl *platform) start(ctx context.Context, l launch, log *slog.Logger) (sandbox, error) {
	cg, err := pl.newCgroup(l)
	if err != nil {
		return nil, err
	}
	var sb sandbox
	if pl.useInit {
		sb, err = pl.startInit(ctx, l, cg, log)
	} else {
		sb, err = startDirect(l, log)
	}
	if err != nil && cg != nil {
		cg.destroy()
	}
	return sb, err
}

// startWarm launches the process through in, an init a warm shim started
// before the process was known (pool_linux.go): the cgroup it joined while
// idle gets the process's limits, or, when it has none, one is made now and
// the init joins it before its go-ahead, as in startInit. l's stdout and
// stderr are unused: in already has its own. On error in is ended.
func (pl *platform) startWarm(ctx context.Context, l launch, in *idleInit, log *slog.Logger) (sandbox, error) {
	var (
		cg  *cgroup
		err error
	)
	if in.cg != nil && pl.cgroups != nil {
		cg = in.cg
		cg.log = pl.cgroups.log
		err = cg.limit(pl.cgroupLimits(l))
	} else {
		cg, err = pl.newCgroup(l)
	}
	if err != nil {
		in.abandon()
		return nil, err
	}
	sb, err := pl.goAhead(ctx, in, l, cg, log)
	if err != nil && cg != nil {
		cg.destroy()
	}
	return sb, err
}

// initsStay says whether an init run by a shim that runs one process after
// another may stay for the next (initRounds): only where its namespaces let
// it clean up after a command and a cgroup counts what the command used.
func (pl *platform) initsStay() bool { return pl.namespaces && pl.cgroups != nil }

// newCgroup makes the cgroup of l with its limits; nil when there are no
// cgroups.
func (pl *platform) newCgroup(l launch) (*cgroup, error) {
	if pl.cgroups == nil {
		return nil, nil
	}
	return pl.cgroups.create(l.id, pl.cgroupLimits(l))
}

// cgroupLimits is what the cgroup of l is given.
func (pl *platform) cgroupLimits(l launch) devops.Limits {
	lim := l.spec.Limits
	if pl.useInit && pl.namespaces {
		// The init writes the pids limit itself, raised by its own threads,
		// before it starts the command (see goAhead). In force before
		// that, it would count the init's threads, and a Go runtime that
		// cannot start a thread dies: an init joins with all of them
		// started when it was started ahead (pool_linux.go).
		lim.Pids = 0
	}
	return lim
}

// startInit starts the init, puts it in the cgroup and only then hands it the
// command: no user code runs outside the cgroup.
func (pl *platform) startInit(ctx context.Context, l launch, cg *cgroup, log *slog.Logger) (sandbox, error) {
	in, err := pl.spawnInit(l.spec.Argv, l.stdout, l.stderr)
	if err != nil {
		return nil, err
	}
	return pl.goAhead(ctx, in, l, cg, log)
}

// idleInit is an init started and waiting for its config, which is also
// its go-ahead: until then it runs nothing of the command's.
type idleInit struct {
	cmd   *exec.Cmd
	cfgW  *os.File // the config goes here; EOF instead ends the init
	statR *os.File // how the command ended, when the init outlived it
	cg    *cgroup  // the cgroup it joined while idle (joinCgroup); nil: none yet
	// again: the init stays for another command after this one
	// (initRounds), and outW and errW, the command's output, go to it
	// with the config.
	again      bool
	outW, errW *os.File
	// stayed: its last command ended and it waits for the next, still in
	// prevCg, that command's cgroup, which goes once it moved out.
	stayed bool
	prevCg *cgroup
}

// spawnInit starts the init, in the namespaces when there are some, with
// stdout and stderr as its output; argv is only shown to ps on the host.
func (pl *platform) spawnInit(argv []string, stdout, stderr *os.File) (*idleInit, error) {
	// A socket, not a pipe: an init that stays gets each command's output
	// with its config (see sendConfig).
	cfgR, cfgW, err := socketPair()
	if err != nil {
		return nil, fmt.Errorf("config socket: %w", err)
	}
	statR, statW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return nil, fmt.Errorf("status pipe: %w", err)
	}
	// The command's argv follows for whoever reads ps on the host.
	cmd := &exec.Cmd{
		Path: pl.initPath,
		Args: append([]string{pl.initPath, initArg, "--"}, argv...),
		// Not nil, which would mean the worker's own. The command gets its
		// env from the config; GORACE only spares a race-built init the
		// detector's one-second pause at exit. GOMAXPROCS here, rather
		// than only RunInit's call, starts the runtime with one P: the
		// call alone stopped the world to shrink it, 1.4% of all CPU when
		// commands start back to back (make bench, throughput at 64).
		Env:        []string{"GORACE=atexit_sleep_ms=0", "GOMAXPROCS=1"},
		Dir:        "/",
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: []*os.File{cfgR, statW},
		SysProcAttr: &syscall.SysProcAttr{
			Setsid: true,
		},
	}
	if pl.namespaces {
		cmd.SysProcAttr.Cloneflags = namespaceFlags
	}
	err = cmd.Start()
	cfgR.Close()
	statW.Close()
	if err != nil {
		cfgW.Close()
		statR.Close()
		return nil, fmt.Errorf("start init: %w", err)
	}
	return &idleInit{cmd: cmd, cfgW: cfgW, statR: statR}, nil
}

// abandon ends an init that never got its go-ahead: at EOF on its config
// pipe it exits at once. It returns once the init is reaped.
func (in *idleInit) abandon() {
	in.cfgW.Close()
	in.outW.Close()
	in.errW.Close()
	in.cmd.Wait()
	in.statR.Close()
	for _, cg := range []*cgroup{in.cg, in.prevCg} {
		if cg != nil {
			cg.destroy()
		}
	}
}

// joinCgroup makes a cgroup with no limits yet, named name, and has the
// idle init move itself into it (see joinIdle). startWarm later gives it the
// process's limits, so the go-ahead no longer waits for the move. On error
// the caller abandons the init, which removes the cgroup.
func (in *idleInit) joinCgroup(cs *cgroups, name string) error {
	cg, err := cs.create(devops.ProcessID(name), devops.Limits{})
	if err != nil {
		return err
	}
	// From here abandon removes it, once the init is gone: an init that
	// joined some hierarchies and failed on the next is still in them.
	in.cg = cg
	if err := in.moveInto(cg); err != nil {
		return err
	}
	if in.prevCg != nil {
		in.prevCg.destroy()
		in.prevCg = nil
	}
	return nil
}

// moveInto has the init move itself into cg (see joinIdle: on v1 its main
// thread alone) and waits until it did.
func (in *idleInit) moveInto(cg *cgroup) error {
	procs := make([]string, 0, len(cg.dirs))
	for _, dir := range cg.dirs {
		procs = append(procs, filepath.Join(dir, "cgroup.procs"))
	}
	if err := json.NewEncoder(in.cfgW).Encode(initConfig{Join: procs}); err != nil {
		return fmt.Errorf("send cgroup to init: %w", err)
	}
	// Byte by byte up to the newline: the rest of the pipe is the command's
	// status, read whole at its end.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 4096 {
		if n, err := in.statR.Read(b); n == 0 || err != nil || b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	if string(line) != "ok" {
		if len(line) == 0 {
			return errors.New("init ended before it joined its cgroup")
		}
		return fmt.Errorf("init: %s", line)
	}
	return nil
}

// goAhead puts the init in the cgroup and only then sends it the command:
// no user code runs outside the cgroup. On error the init is killed.
func (pl *platform) goAhead(ctx context.Context, in *idleInit, l launch, cg *cgroup, log *slog.Logger) (sandbox, error) {
	cmd, cfgW := in.cmd, in.cfgW
	sb := &initSandbox{cmd: cmd, statR: in.statR, cg: cg, pidns: pl.namespaces, log: log}
	if in.again {
		sb.stays = in
	}
	fail := func(err error) (sandbox, error) {
		cfgW.Close()
		cmd.Process.Kill()
		sb.wait()
		return nil, err
	}
	if cg != nil && cg != in.cg {
		// The init moves itself, as a warm one does while idle: on v1 its
		// main thread alone, so the threads its runtime starts later are
		// not the command's to count. Moved whole, an init whose command
		// used its pids limit up could not start one, and a Go runtime
		// that cannot start a thread dies (TestPoolSameAsCold's "pids
		// limit", now and then under the race detector).
		if err := in.moveInto(cg); err != nil {
			return fail(err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	c := initConfig{
		Namespaces: pl.namespaces,
		Argv:       l.spec.Argv,
		Env:        l.env,
		Dir:        l.dir,
		Home:       envValue(l.env, "HOME"),
		Hostname:   l.hostname,
		Stdin:      l.stdin,
	}
	if l.spec.Limits.Pids > 0 && pl.namespaces && cg != nil {
		// The pids controller counts threads: the init, which outlives the
		// exec here, raises the limit by its own before starting the command.
		c.Pids, c.PidsFile = l.spec.Limits.Pids, cg.pidsFile()
	}
	if l.cred != nil {
		c.Cred = &initCred{UID: l.cred.uid, GID: l.cred.gid, Groups: l.cred.groups}
	}
	if l.spec.Limits.MemoryBytes > 0 && (cg == nil || !pl.cgroups.memory) {
		c.RlimitAS = uint64(l.spec.Limits.MemoryBytes)
	}
	if in.again {
		c.Again = true
		fds := []*os.File{in.outW, in.errW}
		if l.stdin != "" {
			// As a file of its own, like the output: this init's mounts
			// may hide the path by now (a /tmp of an earlier command).
			stdin, err := openStdin(l.stdin)
			if err != nil {
				return fail(err)
			}
			defer stdin.Close()
			fds, c.Stdin = append(fds, stdin), ""
		}
		err := sendConfig(cfgW, c, fds...)
		// The init has its own copies: EOF comes when the command's last
		// process is gone.
		in.outW.Close()
		in.errW.Close()
		in.outW, in.errW = nil, nil
		if err != nil {
			return fail(fmt.Errorf("send config to init: %w", err))
		}
		return sb, nil
	}
	if err := json.NewEncoder(cfgW).Encode(c); err != nil {
		return fail(fmt.Errorf("send config to init: %w", err))
	}
	cfgW.Close()
	return sb, nil
}

// sendConfig sends c on the init's config socket with the files fds
// (SCM_RIGHTS) on a space before it, which the init's JSON decoder skips.
// One message: the init wakes once for it (a wake-up of its own for the
// fds, then one for the config, took 3.4 ms on a busy 2-core machine).
func sendConfig(sock *os.File, c initConfig, fds ...*os.File) error {
	msg, err := json.Marshal(c)
	if err != nil {
		return err
	}
	msg = append(append([]byte{' '}, msg...), '\n')
	rights := make([]int, len(fds))
	for i, f := range fds {
		rights[i] = int(f.Fd())
	}
	conn, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	var sent int
	var sendErr error
	err = conn.Write(func(fd uintptr) bool {
		sent, sendErr = unix.SendmsgN(int(fd), msg, unix.UnixRights(rights...), nil, 0)
		return !errors.Is(sendErr, unix.EAGAIN)
	})
	if err == nil {
		err = sendErr
	}
	if err != nil {
		return err
	}
	// A large config may go in parts (a signal can cut a send short).
	_, err = sock.Write(msg[sent:])
	return err
}

// initSandbox is a process started through the init.
type initSandbox struct {
	cmd   *exec.Cmd
	statR *os.File
	cg    *cgroup // nil: none
	pidns bool
	log   *slog.Logger
	// signalled is the last signal sent to the init as PID 1, 0 if none.
	signalled atomic.Int32
	// exiting: wait returned on the init's word, before its exit; destroy
	// waits for that.
	exiting atomic.Bool
	// stays is the init when it was told Again: it reports on a line and
	// may wait for another command instead of exiting.
	stays *idleInit
}

func (s *initSandbox) pid() int { return s.cmd.Process.Pid }

func (s *initSandbox) wait() (initResult, *syscall.Rusage) {
	// The init writes its result only when it outlived the command, and
	// closes the pipe before it exits; when it exec'd the command, or was
	// killed, EOF comes with its end and the wait status is the truth.
	var res initResult
	var parsed bool
	if s.stays != nil {
		// One line per command. Nothing follows it until the executor's
		// next word, so the decoder reads no further.
		parsed = json.NewDecoder(s.statR).Decode(&res) == nil
		if parsed && res.Stays {
			// It killed and reaped whatever the command left, and the
			// cgroup counts the usage. kill is a no-op from here: the
			// init is the next command's.
			s.stays.stayed = true
			s.exiting.Store(true)
			return res, nil
		}
	} else {
		data, _ := io.ReadAll(io.LimitReader(s.statR, 64<<10))
		parsed = len(data) > 0 && json.Unmarshal(data, &res) == nil
	}
	s.statR.Close()
	if parsed && s.pidns && s.cg != nil {
		// As PID 1 it killed whatever the command left before it wrote
		// this, and the cgroup counts the usage: the status need not wait
		// for its exit, which took 2-7 ms more here (a Go runtime's
		// threads, then its namespaces). destroy reaps it.
		s.exiting.Store(true)
		return res, nil
	}
	s.cmd.Wait()
	ps := s.cmd.ProcessState
	ru, _ := ps.SysUsage().(*syscall.Rusage)
	ws, _ := ps.Sys().(syscall.WaitStatus)
	if parsed {
		return res, ru
	}
	if sig := s.signalled.Load(); sig != 0 && ws.Exited() && ws.ExitStatus() == 2 {
		// A signal that reached the init between its runtime's handlers
		// (signal waits for those) and its own (a stop right after a cold
		// start): as PID 1 it cannot die of a signal, so Go's runtime
		// exits with 2 instead. It ended because of the signal, as the
		// command would have.
		return initResult{Signal: int(sig)}, ru
	}
	return waitResult(ws), ru
}

func (s *initSandbox) signal(sig syscall.Signal) {
	switch {
	case s.pidns && !initForwards(sig) && s.cg != nil:
		// The init cannot catch it (STOP), or must not: each other process
		// of the command gets it, as the init's forwarding would do.
		s.cg.signalExcept(sig, s.cmd.Process.Pid)
	case s.pidns:
		// The init forwards it to every process of its namespace. As PID 1
		// of that namespace it gets from us only the signals it catches, so
		// one sent before its runtime installed its handlers (a cold start
		// on a loaded machine) would be lost: wait until it catches sig.
		s.signalled.Store(int32(sig))
		waitCaught(s.cmd.Process.Pid, sig, catchWait)
		s.cmd.Process.Signal(sig)
	case s.cg != nil:
		s.cg.signal(sig)
	default:
		syscall.Kill(-s.cmd.Process.Pid, sig)
	}
}

// catchWait bounds how long a signal waits for the init to catch it; past
// it the signal is sent anyway, and SIGKILL after the grace still ends it.
const catchWait = 5 * time.Second

// waitCaught waits, up to d, until process pid catches sig (the SigCgt mask
// of /proc/PID/status), or has ended (gone, or a zombie).
func waitCaught(pid int, sig syscall.Signal, d time.Duration) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(path)
		if err != nil || strings.Contains(string(b), "\nState:\tZ") {
			return
		}
		_, rest, ok := strings.Cut(string(b), "\nSigCgt:")
		if !ok {
			return
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]), 16, 64)
		if err != nil || mask&(1<<(uint(sig)-1)) != 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (s *initSandbox) kill() {
	if s.exiting.Load() {
		// The init killed the rest and is on its way out: destroy waits.
		return
	}
	if s.pidns {
		// Killing PID 1 kills its whole namespace. os.Process refuses once
		// the init was reaped, so its pid cannot hit a stranger.
		s.cmd.Process.Kill()
	}
	if s.cg != nil {
		s.cg.kill()
		return
	}
	if !s.pidns {
		// Without a cgroup or namespace, the session is all we know.
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (s *initSandbox) usage(ru *syscall.Rusage) usage {
	u := rusage(ru)
	if s.cg != nil {
		cu := s.cg.usage()
		if cu.cpu > 0 {
			u.cpu = cu.cpu
		}
		if cu.peak > 0 {
			u.peak = cu.peak
		}
		u.oomKilled = cu.oomKilled
	}
	return u
}

func (s *initSandbox) destroy() {
	if s.stays != nil && s.stays.stayed {
		// Its init is still in the cgroup, waiting for the next command:
		// the cgroup goes once it moved out (joinCgroup), or with it.
		s.stays.prevCg = s.cg
		return
	}
	if s.exiting.Load() {
		s.cmd.Wait()
		s.cg.kill()
	}
	if s.cg != nil {
		s.cg.destroy()
	}
}

// rusage reads CPU time and peak RSS (KiB on Linux) from a rusage.
func rusage(ru *syscall.Rusage) usage {
	if ru == nil {
		return usage{}
	}
	return usage{
		cpu:  time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		peak: ru.Maxrss * 1024,
	}
}

// Output pipes hold pipeSize bytes and are read readBuffer at a time: with
// the kernel's 64 KiB and 32 KiB reads, a command writing lines stopped on
// a full pipe every few hundred lines, and each stop cost a wake-up of it
// and of its shim. 10 million 100-byte lines followed to the end (make
// bench, scenario 4, interleaved runs): 115-146 MB/s before, 145-164
// after; 1 GiB in one stream unchanged. 256 KiB rather than the 1 MiB a
// process may ask for: the kernel caps the pipe pages of a user without
// privileges (pipe-user-pages-soft, 64 MiB by default) and gives every
// pipe past it one page, so 64 processes of a worker not running as root
// stay at half that.
const (
	pipeSize   = 256 << 10
	readBuffer = 256 << 10
)

// outputPipe makes a pipe for a command's stdout or stderr, pipeSize deep
// where the kernel allows it.
func outputPipe() (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err == nil {
		// Best effort: a pipe of the default size works, only slower.
		unix.FcntlInt(uintptr(pollableFD(r)), unix.F_SETPIPE_SZ, pipeSize)
	}
	return r, w, err
}

// pollableFD returns f's descriptor for a system call of our own, leaving
// f in Go's netpoller, where f.Fd() would switch it to blocking mode for
// good. It is -1 once f is closed.
//
// Why it matters: a goroutine blocked in a system call keeps its P (one of
// GOMAXPROCS, 2 here) until sysmon takes it back, and sysmon takes it only
// on its second look at the same call, 10 ms apart in a process that has
// been idle. A goroutine woken just before the call waits on that P
// meanwhile. In the worker, the warm-up read on a shim's ready pipe (made
// blocking by an Fd() call) held the goroutine that watchShim had just
// woken for 13 ms; with the file watch's and watchShim's poll(2), one
// command in ten, paced 50 ms apart, took 10–20 ms to give its output or
// its exit (execution traces: 60 waits over 1 ms for a runnable goroutine
// in 10 s, none once every wait was in the netpoller).
func pollableFD(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}

// socketPair makes a connected pair of Unix stream sockets.
func socketPair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "socket"), os.NewFile(uintptr(fds[1]), "socket"), nil
}

// localSignal and wireSignal turn the API's signal numbers, which are
// Linux's, into this OS's and back: here they are the same.
func localSignal(sig syscall.Signal) syscall.Signal { return sig }
func wireSignal(sig syscall.Signal) syscall.Signal  { return sig }

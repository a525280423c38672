package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The init's file descriptors, after stdin, stdout and stderr: the executor
// writes the config on one and reads the result from the other.
const (
	initConfigFD = 3
	initStatusFD = 4
)

// initConfig is what the executor tells the init, as JSON on initConfigFD.
// Writing it is also the go-ahead: the init is in its cgroup by then.
type initConfig struct {
	Probe      bool      `json:"probe,omitempty"`
	Namespaces bool      `json:"namespaces,omitempty"`
	Argv       []string  `json:"argv,omitempty"`
	Env        []string  `json:"env,omitempty"`
	Dir        string    `json:"dir,omitempty"`
	Home       string    `json:"home,omitempty"`
	Hostname   string    `json:"hostname,omitempty"`
	Cred       *initCred `json:"cred,omitempty"`
	RlimitAS   uint64    `json:"rlimit_as,omitempty"`
	// Pids is the command's pids limit; the init writes it plus its own
	// threads to PidsFile.
	Pids     int64  `json:"pids,omitempty"`
	PidsFile string `json:"pids_file,omitempty"`
	// Join, alone in an init's first config, names the cgroup.procs files
	// of the cgroup it moves into (on v1 by its main thread's "tasks" file
	// beside each): a warm init's while idle, a cold one's before its
	// go-ahead. It answers on initStatusFD with one line ("ok", or why
	// not) and waits for its next config, the command's. See joinIdle.
	Join []string `json:"join,omitempty"`
	// Stdin is the file the command reads as its standard input; empty:
	// /dev/null, or the third file that came with the config (Again). The
	// init opens it before it mounts anything, as the worker's.
	Stdin string `json:"stdin,omitempty"`
	// Again: the init stays for another command once this one ended (see
	// initRounds). The command's stdout and stderr come with the config
	// (SCM_RIGHTS, on the space before it), not as the init's own.
	Again bool `json:"again,omitempty"`
}

type initCred struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups"`
}

// initForwards reports whether the init passes sig on to every process of
// its namespace; as PID 1 it would otherwise ignore it. These are the
// signals people send; the executor sends any other to each process of the
// command's cgroup itself (initSandbox.signal), STOP among them, which the
// init cannot catch. The init catches no more than these because each
// costs its start a round trip to the runtime's signal thread (52 took
// 1.5-3.9 ms on the AMD VM, 9 took 0.2-0.5). Before session 33 SIGPIPE was
// not one, and `devops kill -s PIPE` reached nothing.
func initForwards(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
		syscall.SIGCONT, syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGPIPE:
		return true
	}
	return false
}

// RunInit is the init the executor re-executes: the devops binary's main
// calls it when os.Args[1] is "__init" and exits with what it returns. args
// (what follows "__init") are only there for ps on the host; the executor
// passes the real config on file descriptor 3. In namespaces, it mounts a
// fresh /proc and a private /tmp, sets the host name, starts the command,
// forwards signals, reaps every orphan and exits with the command's status;
// it writes how the command ended on descriptor 4, so the executor can tell
// a signal death from an exit code. Without namespaces it execs the command.
func RunInit(args []string) int {
	if len(args) > 0 && args[0] == shimArg {
		return runShim(args[1:])
	}
	if len(args) > 0 && args[0] == warmShimArg {
		return runWarmShim()
	}
	// Fewer threads: the init only waits, and the pids limit counts them.
	// spawnInit already starts it with GOMAXPROCS=1, which makes this a
	// no-op; it stays for an init started any other way.
	runtime.GOMAXPROCS(1)
	// One thread joins each command's cgroup and starts the command from
	// it (see joinIdle): this goroutine's, the main thread unless the
	// goroutine moved before this (joinIdle checks).
	runtime.LockOSThread()
	var st syscall.Stat_t
	if syscall.Fstat(initConfigFD, &st) != nil || syscall.Fstat(initStatusFD, &st) != nil {
		fmt.Fprintln(os.Stderr, "devops: __init is started by the executor only")
		return 2
	}
	// The command must inherit neither pipe.
	syscall.CloseOnExec(initConfigFD)
	syscall.CloseOnExec(initStatusFD)
	// PID 1 of its namespaces, it will supervise the command: what that
	// needs is done before the config arrives, so a warm init has it
	// behind it when its command comes, and a cold one does it while the
	// executor makes its cgroup. The handlers also keep a stop
	// sent from now on: PID 1 without one drops it.
	var sigs chan os.Signal
	if os.Getpid() == 1 {
		sigs = notifySupervised()
		// os/exec checks once per process that pidfds work, with a clone
		// of its own (~0.2 ms here); finding a process makes that check.
		if self, err := os.FindProcess(os.Getpid()); err == nil {
			self.Release()
		}
	}
	status := os.NewFile(initStatusFD, "init-status")
	in := &rightsReader{fd: initConfigFD}
	configs := json.NewDecoder(in)
	c, ok := nextConfig(configs, status, sigs)
	if !ok {
		// The executor gave up before the go-ahead.
		return 125
	}
	if c.Again {
		return initRounds(c, configs, in, status, sigs)
	}
	syscall.Close(initConfigFD)
	report := func(r initResult) int {
		json.NewEncoder(status).Encode(r)
		status.Close()
		if r.Signal != 0 {
			return 128 + r.Signal
		}
		return r.Code
	}
	if c.Probe {
		if c.Namespaces && os.Getpid() != 1 {
			return report(initResult{Code: 125, Reason: "init is not PID 1 in its namespace"})
		}
		return report(initResult{})
	}
	if len(c.Argv) == 0 {
		return report(initResult{Code: 125, Reason: "init: empty command"})
	}
	stdin, err := openStdin(c.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "devops: init: %v\n", err)
		return report(initResult{Code: 125, Reason: "init: " + err.Error()})
	}
	if c.Namespaces {
		if err := new(roundMounts).setup(c); err != nil {
			fmt.Fprintf(os.Stderr, "devops: init: %v\n", err)
			return report(initResult{Code: 125, Reason: "init: " + err.Error()})
		}
	}
	path, fail := lookPath(c.Argv[0], c.Env, c.Dir)
	if fail != nil {
		fmt.Fprint(os.Stderr, execMessage(c.Argv[0], *fail))
		return report(*fail)
	}
	if !c.Namespaces {
		res := execCommand(c, path, stdin)
		fmt.Fprint(os.Stderr, execMessage(c.Argv[0], res))
		return report(res)
	}
	if sigs == nil {
		sigs = notifySupervised()
	}
	return report(supervise(c, path, sigs, stdin, os.Stdout, os.Stderr))
}

// nextConfig reads the executor's next config, moving the init into the
// cgroups a Join names first. false: EOF (the executor is done with the
// init), or a move failed.
func nextConfig(configs *json.Decoder, status *os.File, sigs <-chan os.Signal) (initConfig, bool) {
	for {
		var c initConfig
		if err := configs.Decode(&c); err != nil {
			return c, false
		}
		if len(c.Join) == 0 {
			return c, true
		}
		// A signal the last command's stop sent once it had ended is
		// not the next one's: it was sent before the executor asked for
		// this move, which comes only after it wrote the last status.
		// Dropped before the move is acknowledged, not after: the next
		// command's stop may come as soon as the executor has the answer
		// (a cold start's timeout of a microsecond), and a drain after
		// it dropped that stop when the init was slow to get there
		// (TestStopDuringColdStart, once in CI; every time with a pause
		// put between the two).
		for len(sigs) > 0 {
			<-sigs
		}
		if !joinIdle(c.Join, status) {
			return c, false
		}
	}
}

// initRounds is an init that runs one command after another, each in
// namespaces of its own, for a shim that runs one process after another
// (shimRounds): it saves that shim a start of the devops binary (its
// runtime start and package initialisers: the biggest part of what a
// command costs the machine) per command. Between two commands nothing of
// the first is left: supervise killed and reaped every process of the PID
// namespace, the command had mount and IPC namespaces of its own (gone with
// it), and the next one gets a new /tmp and host name, and its own cgroup
// (the executor's Join). The init's own mounts are the same for each.
// It reports each command's end on status as one line and waits for the
// next config; EOF ends it.
func initRounds(c initConfig, configs *json.Decoder, in *rightsReader, status *os.File, sigs chan os.Signal) int {
	// Its own stdout and stderr are /dev/null (spawnWarm): not any
	// command's.
	if sigs == nil {
		sigs = notifySupervised()
	}
	var m roundMounts
	for {
		res, stays := initRound(c, in.take(), sigs, &m)
		res.Stays = stays
		if json.NewEncoder(status).Encode(res) != nil || !stays {
			return 0
		}
		// The next command's /tmp now, while the init waits for it: an
		// unmount waits for an RCU grace period, and both were on the
		// way from a start to the command's exec. A failure is met again
		// by that command, which reports it.
		m.renewTmp()
		var ok bool
		if c, ok = nextConfig(configs, status, sigs); !ok || !c.Again {
			return 0
		}
	}
}

// initRound runs one command of initRounds with the stdout, stderr and
// (when it has one) stdin that came with its config; stays says whether
// the init may take another.
func initRound(c initConfig, fds []int, sigs <-chan os.Signal, m *roundMounts) (initResult, bool) {
	if len(fds) != 2 && len(fds) != 3 {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return initResult{Code: 125, Reason: "init: the command's output did not come with its config"}, false
	}
	stdout, stderr := os.NewFile(uintptr(fds[0]), "stdout"), os.NewFile(uintptr(fds[1]), "stderr")
	var stdin *os.File
	if len(fds) == 3 {
		stdin = os.NewFile(uintptr(fds[2]), "stdin")
		defer stdin.Close()
	}
	// A command that never started: its output ends here.
	end := func(r initResult, stays bool) (initResult, bool) {
		stdout.Close()
		stderr.Close()
		return r, stays
	}
	if len(c.Argv) == 0 {
		return end(initResult{Code: 125, Reason: "init: empty command"}, false)
	}
	if err := m.setup(c); err != nil {
		fmt.Fprintf(stderr, "devops: init: %v\n", err)
		return end(initResult{Code: 125, Reason: "init: " + err.Error()}, false)
	}
	path, notFound := lookPath(c.Argv[0], c.Env, c.Dir)
	if notFound != nil {
		fmt.Fprint(stderr, execMessage(c.Argv[0], *notFound))
		return end(*notFound, true)
	}
	res := supervise(c, path, sigs, stdin, stdout, stderr)
	return res, reapAll(time.Now().Add(reapWait))
}

// reapWait bounds how long an init that stays waits for the processes it
// killed to be gone; one stuck (in the kernel, unkillable) ends the init
// instead, which takes the rest of its namespace with it.
const reapWait = time.Second

// reapAll waits, up to deadline, until the init has no child left.
func reapAll(deadline time.Time) bool {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.ECHILD):
			return true
		case errors.Is(err, syscall.EINTR), pid > 0:
			continue
		case err != nil || time.Now().After(deadline):
			return false
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// joinIdle moves the init into a cgroup and says so on status: a cgroup
// made ahead, by an idle init in a warm shim, off the path of every start;
// or its command's, by a cold init before its go-ahead. The init is past
// its runtime start by now, so what that cost stays charged to the
// worker.
//
// On v1 only the init's main thread moves, by itself (its "tasks" file):
// the one that starts each command (RunInit locks it), so the command and
// all it starts are in the cgroup, and the one /proc/<pid>/cgroup and the
// cgroup's process list show. Moving a whole process (cgroup.procs) takes
// the kernel's lock on every thread group, whose first writer after a
// quiet moment waits for an RCU grace period (8-17 ms here) while holding
// the cgroup mutex, which every mkdir and rmdir of a cgroup on the machine
// then waits for: other commands' starts and ends. A thread moving itself
// skips that lock (0.1 ms). v2 has no "tasks" file; there the whole
// process moves.
func joinIdle(procs []string, status *os.File) bool {
	leader := syscall.Gettid() == os.Getpid()
	for _, f := range procs {
		if leader {
			err := os.WriteFile(filepath.Join(filepath.Dir(f), "tasks"), []byte("0"), 0)
			if err == nil {
				continue
			}
			if !errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintf(status, "join cgroup: %v\n", err)
				return false
			}
		}
		if err := os.WriteFile(f, []byte("0"), 0); err != nil {
			fmt.Fprintf(status, "join cgroup: %v\n", err)
			return false
		}
	}
	fmt.Fprintln(status, "ok")
	return true
}

// roundMounts is where the namespaces of an init stand, for one command
// or for one after another (initRounds).
type roundMounts struct {
	done    bool // the mounts are private, /proc and a /tmp mounted
	fresh   bool // /tmp is a new one that no command has seen
	hostTmp int  // the host's /tmp (O_PATH), under the init's own
}

// setup prepares the namespaces for the next command: the first time it
// makes the mounts private and mounts /proc and a tmpfs on /tmp; after
// that the last command's /tmp goes (with what it held) for a new one,
// unless renewTmp made that already. Then it names the host and binds the
// process's directories under the host's /tmp (as in tests) back into the
// new one.
func (m *roundMounts) setup(c initConfig) error {
	if !m.done {
		// First, so none of what follows propagates back to the host.
		if err := syscall.Mount("", "/", "", syscall.MS_PRIVATE|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("make mounts private: %w", err)
		}
		if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount /proc: %w", err)
		}
		fd, err := syscall.Open("/tmp", unixOPath|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /tmp: %w", err)
		}
		m.hostTmp = fd
		if err := mountTmp(); err != nil {
			return err
		}
		m.done = true
	} else if err := m.renewTmp(); err != nil {
		return err
	}
	m.fresh = false
	if err := syscall.Sethostname([]byte(c.Hostname)); err != nil {
		return fmt.Errorf("set host name: %w", err)
	}
	var bound []string
	for _, d := range []string{c.Home, c.Dir} {
		d = filepath.Clean(d)
		rel, ok := strings.CutPrefix(d, "/tmp/")
		if !ok || slices.Contains(bound, d) {
			continue
		}
		fd, err := syscall.Openat(m.hostTmp, rel, unixOPath|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", d, err)
		}
		err = os.MkdirAll(d, 0o755)
		if err == nil {
			err = syscall.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), d, "", syscall.MS_BIND|syscall.MS_REC, "")
		}
		syscall.Close(fd)
		if err != nil {
			return fmt.Errorf("bind %s: %w", d, err)
		}
		bound = append(bound, d)
	}
	return nil
}

// renewTmp replaces the last command's /tmp with a new, empty one; it
// does nothing while /tmp is new already, or before setup mounted one.
func (m *roundMounts) renewTmp() error {
	if !m.done || m.fresh {
		return nil
	}
	if err := syscall.Unmount("/tmp", syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the last command's /tmp: %w", err)
	}
	if err := mountTmp(); err != nil {
		return err
	}
	m.fresh = true
	return nil
}

func mountTmp() error {
	if err := syscall.Mount("tmpfs", "/tmp", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
	return nil
}

// execCommand replaces the init with the command, as the user asked, with
// stdin (when not nil) as its standard input; it returns only when that
// failed.
func execCommand(c initConfig, path string, stdin *os.File) initResult {
	if stdin != nil {
		if err := syscall.Dup3(int(stdin.Fd()), 0, 0); err != nil {
			return initResult{Code: 125, Reason: "init: set the standard input: " + err.Error()}
		}
	}
	if c.RlimitAS > 0 {
		lim := syscall.Rlimit{Cur: c.RlimitAS, Max: c.RlimitAS}
		if err := syscall.Setrlimit(syscall.RLIMIT_AS, &lim); err != nil {
			return initResult{Code: 125, Reason: "init: set memory rlimit: " + err.Error()}
		}
	}
	if c.Cred != nil {
		groups := make([]int, len(c.Cred.Groups))
		for i, g := range c.Cred.Groups {
			groups[i] = int(g)
		}
		if err := syscall.Setgroups(groups); err != nil {
			return initResult{Code: 125, Reason: "init: set groups: " + err.Error()}
		}
		if err := syscall.Setgid(int(c.Cred.GID)); err != nil {
			return initResult{Code: 125, Reason: "init: set gid: " + err.Error()}
		}
		if err := syscall.Setuid(int(c.Cred.UID)); err != nil {
			return initResult{Code: 125, Reason: "init: set uid: " + err.Error()}
		}
	}
	// After the switch, so the user's own rights decide.
	if err := os.Chdir(c.Dir); err != nil {
		return execFailure(err)
	}
	return execFailure(syscall.Exec(path, c.Argv, c.Env))
}

// notifySupervised starts catching what supervise needs: SIGCHLD, and the
// signals it forwards. Before the command starts, so none is missed.
func notifySupervised() chan os.Signal {
	sigs := make(chan os.Signal, 32)
	caught := []os.Signal{syscall.SIGCHLD}
	for n := syscall.Signal(1); n <= 64; n++ {
		if initForwards(n) {
			caught = append(caught, n)
		}
	}
	signal.Notify(sigs, caught...)
	return sigs
}

// supervise runs the command as a child of this PID 1 with stdin (nil:
// /dev/null), stdout and stderr (closed here once it ended), forwards the signals sigs gets to the
// namespace, reaps every process that ends and returns how the command
// ended once it did, after killing whatever it left.
func supervise(c initConfig, path string, sigs <-chan os.Signal, stdin, stdout, stderr *os.File) initResult {
	cmd := &exec.Cmd{
		Path:        path,
		Args:        c.Argv,
		Env:         c.Env,
		Dir:         c.Dir,
		Stdout:      stdout,
		Stderr:      stderr,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if c.Again {
		// Mounts and IPC objects of its own, gone with it: an init that
		// stays has the next command in the same namespaces otherwise.
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC
	}
	if c.Cred != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: c.Cred.UID, Gid: c.Cred.GID, Groups: c.Cred.Groups}
	}
	if c.PidsFile != "" {
		n := strconv.FormatInt(c.Pids+int64(ownTasks(filepath.Dir(c.PidsFile))), 10)
		if err := os.WriteFile(c.PidsFile, []byte(n), 0); err != nil {
			return initResult{Code: 125, Reason: "init: set pids limit: " + err.Error()}
		}
	}
	if err := cmd.Start(); err != nil {
		res := execFailure(err)
		fmt.Fprint(stderr, execMessage(c.Argv[0], res))
		stdout.Close()
		stderr.Close()
		return res
	}
	main := cmd.Process.Pid
	// The init reaps with wait4 itself (every orphan, not only the
	// command), so cmd.Wait never closes the pidfd os/exec holds. An init
	// that stays kept one per command until a garbage collection, and each
	// time its descriptor table doubled, the next command's start waited
	// for an RCU grace period in the kernel (8-14 ms here).
	defer cmd.Process.Release()
	for {
		if ws, done := reap(main); done {
			// Orphans die with the command; exiting would kill them too,
			// but explicitly is clearer than relying on it.
			syscall.Kill(-1, syscall.SIGKILL)
			// Its output ends here, not when this process is gone: the
			// kernel took 1.2-1.4 ms to end this one (a Go runtime; the
			// namespaces themselves cost little), and the shim syncs the
			// output meanwhile instead of after.
			stdout.Close()
			stderr.Close()
			return waitResult(ws)
		}
		sig := <-sigs
		if sig != syscall.SIGCHLD {
			syscall.Kill(-1, sig.(syscall.Signal))
		}
	}
}

// reap collects every ended child and reports whether main was one.
func reap(main int) (syscall.WaitStatus, bool) {
	var mainWS syscall.WaitStatus
	done := false
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return mainWS, done
		}
		if pid == main {
			mainWS, done = ws, true
		}
	}
}

// unixOPath is O_PATH, which package syscall does not name: an fd that
// only marks a place in the tree, enough to bind-mount it.
const unixOPath = 0x200000

// ownTasks counts the init's threads in the pids cgroup dir, before the
// command starts there: all of them when the init moved as a whole, its
// main thread alone when only that one did (joinIdle). Its threads in all
// when the cgroup cannot tell.
func ownTasks(dir string) int {
	for _, f := range []string{"tasks", "cgroup.threads"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			if n := len(strings.Fields(string(b))); n > 0 {
				return n
			}
		}
	}
	return threads()
}

// threads counts the init's own threads; 1 when it cannot tell.
func threads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 1
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				return n
			}
		}
	}
	return 1
}

// rightsReader reads the init's config socket, keeping the file
// descriptors that come with the bytes (SCM_RIGHTS) until take.
type rightsReader struct {
	fd  int
	fds []int
}

func (r *rightsReader) Read(b []byte) (int, error) {
	oob := make([]byte, syscall.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := syscall.Recvmsg(r.fd, b, oob, syscall.MSG_CMSG_CLOEXEC)
		if errors.Is(err, syscall.ENOTSOCK) {
			// A pipe (the probe's): bytes only.
			n, err = syscall.Read(r.fd, b)
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if oobn > 0 {
			msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
			if err == nil {
				for _, m := range msgs {
					if fds, err := syscall.ParseUnixRights(&m); err == nil {
						r.fds = append(r.fds, fds...)
					}
				}
			}
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// take returns the descriptors received so far and forgets them.
func (r *rightsReader) take() []int {
	fds := r.fds
	r.fds = nil
	return fds
}

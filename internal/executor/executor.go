// Package executor runs one command in isolation on a worker: its own
// directory, session, clean environment, cgroup and (where the worker is
// root on Linux) its own PID, mount, UTS and IPC namespaces; a spec with an
// Image runs in a container of the local Docker engine instead (docker.go).
// It reports how
// the command ended as a devops.ExitStatus and copies its output to the
// caller's writers. It speaks domain types only and must not import the API,
// the manager or the worker.
package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/dockerapi"
	"github.com/devops-platform/devops/internal/spare"
)

// Log keys, in one place so every line of this package reads the same.
const (
	logKeyProcessID = "process_id"
	logKeyPid       = "pid"
	logKeyError     = "error"
	logKeyMissing   = "missing"
	logKeyCgroups   = "cgroups"
)

// defaultPath is the only PATH a command gets unless its spec sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// copyDelay bounds how long Wait keeps copying output after the tree was
// killed: a process that escaped every kill (only possible without cgroups
// and namespaces) must not hold Wait forever by keeping a pipe open.
const copyDelay = 2 * time.Second

// Reasons written into ExitStatus.Reason.
const (
	ReasonOOMKilled       = "OOM_KILLED"
	ReasonOutputTruncated = "output truncated"
	reasonNotFound        = "command not found"
	reasonNotExecutable   = "permission denied"
)

// Config says where and how an Executor runs processes.
type Config struct {
	// Root is required: per-process working directories are created under
	// Root/<process id>. Root and its parents must be searchable by the
	// users processes run as.
	Root string
	// Logger receives what the executor handles itself; nil discards.
	Logger *slog.Logger
	// MaxLimits are worker-wide maximums; a request's limits are capped by
	// them. Zero fields cap nothing.
	MaxLimits devops.Limits
	// CgroupRoot names the cgroup subtree the worker owns; empty means
	// "devops". Tests use a unique name each.
	CgroupRoot string
	// InitPath is the devops binary re-executed as the init inside the
	// namespaces (its main must call RunInit for "__init"); empty means
	// os.Executable().
	InitPath string
	// WarmShims is how many shims, each with its init, StartSupervised
	// keeps started ahead of need (pool_linux.go); 0 starts every process
	// cold.
	WarmShims int
	// NoDocker leaves the Docker engine alone: no ping at New, and specs
	// with an Image are refused. By default New pings the engine the
	// DOCKER_* environment names (the local socket when unset).
	NoDocker bool
	// SpoolMax bounds the output a supervised process keeps on disk (see
	// StartSupervised); zero keeps all of it.
	SpoolMax int64
	// SpoolDir is where StartSupervised's directories usually go (the
	// worker's spool): with warm shims, spare ones are made there ahead
	// of need, named ".spare-<n>". Empty: none.
	SpoolDir string
}

// Executor starts processes. It is safe for concurrent use.
type Executor struct {
	root     string
	log      *slog.Logger
	max      devops.Limits
	spoolMax int64
	platform *platform
	userName string // the worker's own user, for USER in its commands' environment

	dockerMu sync.Mutex        // protects docker
	docker   *dockerapi.Client // nil: no engine answered (docker.go)

	pool *pool // warm shims for StartSupervised; nil: none (pool_linux.go)

	// Directories made ahead, as the warm shims are: a start renames one
	// into place instead of creating it (see package spare). None without
	// warm shims.
	homes    *spare.Pool // for Root/<id>; nil: none
	spool    *spare.Pool // for StartSupervised's dirs in Config.SpoolDir; nil: none
	spoolDir string

	// statusFirst makes a process's status final before its cgroup and
	// directory are removed. A shim sets it: it writes the status down
	// first and cleans up after, which tells the worker of the end ~2 ms
	// sooner (a directory per cgroup v1 hierarchy to remove, and the
	// process's own).
	statusFirst bool
}

// New checks cfg, creates Root and finds what this machine can enforce
// (cgroups, namespaces, switching users). Missing abilities are logged once
// here and reported by Fingerprint; Start refuses specs that need them.
func New(cfg Config) (*Executor, error) {
	if cfg.Root == "" {
		return nil, fmt.Errorf("new executor: %w: empty root", devops.ErrInvalid)
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("new executor: %w", err)
	}
	// 0711: users processes run as must reach their own directory below,
	// without listing the others.
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, fmt.Errorf("new executor: create root: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Each process makes and later frees a directory and its files in
	// each: spread over the file system, not in one place (spare.Spread).
	for _, dir := range []string{root, cfg.SpoolDir} {
		if dir == "" {
			continue
		}
		if err := spare.Spread(dir); err != nil {
			log.Debug("directories made in one place", "dir", dir, logKeyError, err)
		}
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "devops"
	}
	if cfg.WarmShims < 0 {
		return nil, fmt.Errorf("new executor: %w: %d warm shims", devops.ErrInvalid, cfg.WarmShims)
	}
	if strings.Contains(cfg.CgroupRoot, "..") {
		return nil, fmt.Errorf("new executor: %w: cgroup root %q", devops.ErrInvalid, cfg.CgroupRoot)
	}
	if cfg.InitPath == "" {
		if cfg.InitPath, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("new executor: find init binary: %w", err)
		}
	}
	pl, err := newPlatform(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("new executor: %w", err)
	}
	pl.checkReach(root)
	e := &Executor{root: root, log: log, max: cfg.MaxLimits, spoolMax: cfg.SpoolMax, platform: pl}
	if u, err := user.Current(); err == nil {
		e.userName = u.Username
	}
	if !cfg.NoDocker {
		if e.docker, err = newDockerClient(context.Background()); err != nil {
			log.Info("containers unavailable", logKeyMissing, "docker", logKeyError, err)
		}
	}
	e.startPool(cfg.WarmShims)
	if cfg.WarmShims > 0 {
		n := max(cfg.WarmShims, minSpares)
		e.homes = spare.New(root, spareDirPrefix, n, func(path string) error { return os.Mkdir(path, 0o700) }, log)
		if cfg.SpoolDir != "" {
			e.spoolDir = filepath.Clean(cfg.SpoolDir)
			e.spool = spare.New(e.spoolDir, spareDirPrefix, n, makeProcessDir, log)
		}
	}
	return e, nil
}

// minSpares is the fewest directories of each kind kept made ahead when
// there are warm shims: a burst of starts past them creates its own.
// They are made in place, not in nests as the manager's output files are
// (spare.NewNested): a mkdir in the spread root costs a pass over every
// block group, but a take from a nest renames a directory across
// directories, which the kernel serializes over the whole file system;
// at 64 commands at once, threads renaming then waited on that lock for
// 7.7 s of every 8, summed, against 0.15 s with the spares made here
// (bench/FINDINGS.md, session 27).
const minSpares = 4

// spareDirPrefix names the directories made ahead; a process id never
// starts with a dot.
const spareDirPrefix = ".spare-"

// spoolSpares is the pool of spare directories for dir: nil unless dir is
// in Config.SpoolDir.
func (e *Executor) spoolSpares(dir string) *spare.Pool {
	if filepath.Dir(dir) != e.spoolDir {
		return nil
	}
	return e.spool
}

// Files in a supervised process's directory. They are here, not beside the
// shim, because every Unix build makes and reads them.
const (
	// OutputFile holds the output as frames: one byte of stream, four bytes
	// of length (big endian), then the data. Each frame is one write.
	OutputFile = "output"
	// ExitFile holds the devops.ExitStatus as JSON once the process ended.
	ExitFile = "exit.json"
	// StdinFile holds the command's standard input, when it has one.
	StdinFile = "stdin"
	stateFile = "shim.json"
	stopFile  = "stop.json"
	logFile   = "shim.log"
)

// FrameHeader is the size of a frame's header in OutputFile.
const FrameHeader = 5

// makeProcessDir makes a spare process directory for StartSupervised: the
// directory with its empty output and shim log, as a start would.
func makeProcessDir(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return err
	}
	for _, name := range []string{OutputFile, logFile} {
		if err := spare.EmptyFile(filepath.Join(path, name)); err != nil {
			os.RemoveAll(path)
			return err
		}
	}
	return nil
}

// WarmIdle is how many warm shims wait for a process now (see
// Config.WarmShims).
func (e *Executor) WarmIdle() int { return e.pool.idleCount() }

// Close ends the shims kept warm for StartSupervised and removes the cgroup
// subtree New made when no process is left in it. Processes still running
// keep running. A process that exits need not call it: its warm shims end
// with it.
func (e *Executor) Close() error {
	e.pool.close()
	e.homes.Close()
	e.spool.Close()
	e.dockerMu.Lock()
	if e.docker != nil {
		e.docker.Close()
		e.docker = nil
	}
	e.dockerMu.Unlock()
	return e.platform.close()
}

// Fingerprint reports the machine and what the executor can enforce on it.
func (e *Executor) Fingerprint() devops.Fingerprint {
	fp := devops.Fingerprint{
		OS:   runtime.GOOS,
		Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(),
	}
	e.platform.fingerprint(&fp)
	e.dockerMu.Lock()
	fp.Docker = e.docker != nil
	e.dockerMu.Unlock()
	return fp
}

// Process is one started command.
type Process struct {
	id      devops.ProcessID
	spec    devops.Spec
	log     *slog.Logger
	dir     string
	sandbox sandbox
	pid     int
	out     *output
	started time.Time

	// shim is set for a process held by a supervisor (StartSupervised,
	// Adopt): Terminate and Wait go through it, and the fields below it
	// that concern the sandbox stay unused.
	shim *shimHandle

	exited  chan struct{} // closed once the main process (or init) exited
	ended   chan struct{} // closed once status is set: done, or earlier for a shim's (Ended)
	done    chan struct{} // closed once status is final (and, but for statusFirst, cleanup ran)
	cleaned chan struct{} // closed once the cgroup and the directory are removed (by run; nil for a shim's handle)
	wg      sync.WaitGroup
	// statusFirst makes the status final before the cgroup and the
	// directory are removed rather than after (Executor.statusFirst).
	statusFirst bool

	mu sync.Mutex // protects the fields below
	// stopState is set by the first Terminate or the timeout; it decides
	// between TERMINATED and TIMED_OUT.
	stopState devops.State
	status    devops.ExitStatus
}

// launch is what a platform needs to start one process.
type launch struct {
	id       devops.ProcessID
	spec     devops.Spec
	dir      string // cwd
	env      []string
	cred     *credential
	hostname string
	stdin    string // the file the command reads as its stdin; "": /dev/null
	stdout   *os.File
	stderr   *os.File
}

// credential is the user and groups a command runs as.
type credential struct {
	uid, gid uint32
	groups   []uint32
	name     string // the user's name; "" for a uid with no passwd entry
}

// usage is what a process consumed, read after it ended.
type usage struct {
	cpu       time.Duration
	peak      int64
	oomKilled bool
}

// initResult is how the command itself ended, as the init (or the direct
// start) saw it: a failed exec is told apart from an exit.
type initResult struct {
	Code   int    `json:"code"`
	Signal int    `json:"signal"`
	Reason string `json:"reason,omitempty"`
	// Stays: an init told Again waits for another command (initRounds).
	Stays bool `json:"stays,omitempty"`
}

// sandbox is one running process and what confines it; the platform files
// implement it.
type sandbox interface {
	// pid is the host pid of the started process (the init when there is one).
	pid() int
	// wait blocks until that process exited and says how the command ended.
	wait() (initResult, *syscall.Rusage)
	// signal sends sig to every process of the tree.
	signal(sig syscall.Signal)
	// kill SIGKILLs every process of the tree and returns once none is
	// left (or it gave up, logged).
	kill()
	// usage reads CPU time, peak memory and OOM kills; rusage is the
	// fallback where no cgroup counts them.
	usage(ru *syscall.Rusage) usage
	// destroy removes what the sandbox made (its cgroups).
	destroy()
}

// Start runs spec as process id and copies its output to stdout and stderr
// (which may be the same writer; writes are serialized). ctx bounds the start
// only: the process lives on after ctx ends. A spec that is invalid, or that
// asks a limit or feature this executor cannot enforce, yields an error
// wrapping devops.ErrInvalid. A command that cannot be executed is not an
// error: its Process ends FAILED with Code 127 or 126.
func (e *Executor) Start(ctx context.Context, id devops.ProcessID, spec devops.Spec, stdout, stderr io.Writer) (*Process, error) {
	pr, err := e.prepare(ctx, id, &spec)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	if len(spec.Stdin) > 0 || spec.StdinFile != "" {
		// Beside the process's directory, not in it: that is the
		// command's own (its HOME).
		pr.stdin = pr.home + ".stdin"
		var err error
		if spec.StdinFile != "" {
			err = os.Rename(spec.StdinFile, pr.stdin)
		} else {
			err = os.WriteFile(pr.stdin, spec.Stdin, 0o600)
		}
		if err != nil {
			os.RemoveAll(pr.home)
			return nil, fmt.Errorf("start %s: put its standard input in place: %w", id, err)
		}
	}
	p, err := e.launch(ctx, id, spec, pr, stdout, stderr)
	if pr.stdin != "" {
		if err != nil {
			os.Remove(pr.stdin)
		} else {
			// The command may open it any time until then.
			go func() {
				<-p.done
				os.Remove(pr.stdin)
			}()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	return p, nil
}

// prepared is what prepare found and made for one process.
type prepared struct {
	cred  *credential // nil: as the worker
	user  string      // the name the command runs as, for USER and LOGNAME; "": unknown
	home  string      // the process's own directory, made by prepare
	cwd   string
	stdin string // the file holding the command's standard input; "": none
}

// prepare checks spec (capping its limits), resolves its user and makes the
// process's directory.
func (e *Executor) prepare(ctx context.Context, id devops.ProcessID, spec *devops.Spec) (prepared, error) {
	if err := e.check(id, spec); err != nil {
		return prepared{}, err
	}
	if err := ctx.Err(); err != nil {
		return prepared{}, err
	}
	var cred *credential
	if spec.Image == "" {
		// In a container the user is the image's to resolve.
		c, err := e.platform.lookupUser(spec.User)
		if err != nil {
			return prepared{}, err
		}
		cred = c
	}
	home := filepath.Join(e.root, string(id))
	// A spare is made with Mkdir's mode, by this process.
	if !e.homes.Take(home) {
		if err := os.Mkdir(home, 0o700); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return prepared{}, fmt.Errorf("%w: directory %s exists", devops.ErrAlreadyExists, home)
			}
			return prepared{}, fmt.Errorf("create directory: %w", err)
		}
	}
	if cred != nil {
		if err := os.Chown(home, int(cred.uid), int(cred.gid)); err != nil {
			os.RemoveAll(home)
			return prepared{}, fmt.Errorf("chown directory: %w", err)
		}
	}
	cwd := home
	if spec.Dir != "" || spec.Image != "" {
		cwd = spec.Dir
	}
	user := e.userName
	if cred != nil {
		user = cred.name
	}
	if spec.Image != "" {
		user = "" // the image's
	}
	return prepared{cred: cred, user: user, home: home, cwd: cwd}, nil
}

// launch starts a checked and prepared spec in this process: the command's
// output comes through pipes into stdout and stderr. On error it removes
// the process's directory.
func (e *Executor) launch(ctx context.Context, id devops.ProcessID, spec devops.Spec, pr prepared, stdout, stderr io.Writer) (*Process, error) {
	p := e.newProcess(id, spec, pr.home, stdout, stderr)
	outR, outW, err := outputPipe()
	if err != nil {
		p.removeDir()
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := outputPipe()
	if err != nil {
		outR.Close()
		outW.Close()
		p.removeDir()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	l := newLaunch(id, spec, pr)
	l.stdout, l.stderr = outW, errW
	var sb sandbox
	if spec.Image != "" {
		// It owns the write ends and closes them when the output ends.
		sb, err = e.startContainer(ctx, l, p.log)
	} else {
		sb, err = e.platform.start(ctx, l, p.log)
		// The child has its own copies of the write ends: ours must go, or
		// the readers never see EOF.
		outW.Close()
		errW.Close()
	}
	if err != nil {
		outR.Close()
		errR.Close()
		p.removeDir()
		return nil, err
	}
	p.begin(sb, outR, errR)
	return p, nil
}

// newProcess is the Process of a command about to start, writing its
// output to stdout and stderr; home is its own directory.
func (e *Executor) newProcess(id devops.ProcessID, spec devops.Spec, home string, stdout, stderr io.Writer) *Process {
	log := e.log.With(logKeyProcessID, string(id))
	p := &Process{
		id:      id,
		spec:    spec,
		log:     log,
		dir:     home,
		started: time.Now(),
		exited:  make(chan struct{}),
		done:    make(chan struct{}),
		cleaned: make(chan struct{}),

		statusFirst: e.statusFirst,
	}
	p.ended = p.done
	p.out = newOutput(stdout, stderr, spec.Limits.MaxOutputBytes, log)
	return p
}

// newLaunch is what the platform needs to start a prepared spec, but for
// its output.
func newLaunch(id devops.ProcessID, spec devops.Spec, pr prepared) launch {
	return launch{
		id:       id,
		spec:     spec,
		dir:      pr.cwd,
		env:      buildEnv(spec.Env, pr.home, pr.user, id),
		cred:     pr.cred,
		hostname: hostname(id),
		stdin:    pr.stdin,
	}
}

// begin follows the started sandbox: it copies the output from outR and
// errR, arms the timeout and waits for the end.
func (p *Process) begin(sb sandbox, outR, errR *os.File) {
	p.sandbox = sb
	p.pid = sb.pid()
	p.out.copy(outR, errR)
	if p.spec.Timeout > 0 {
		p.wg.Go(p.timeout)
	}
	go p.run()
	p.log.Debug("process started", logKeyPid, p.pid)
}

// check validates the spec and caps its limits by the worker's maximums.
func (e *Executor) check(id devops.ProcessID, spec *devops.Spec) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(string(id), "/\x00") {
		return fmt.Errorf("%w: process id %q cannot name a directory", devops.ErrInvalid, id)
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	for k := range spec.Env {
		if strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("%w: environment variable name %q", devops.ErrInvalid, k)
		}
	}
	if spec.Dir != "" {
		if !filepath.IsAbs(spec.Dir) {
			return fmt.Errorf("%w: directory %q is not absolute", devops.ErrInvalid, spec.Dir)
		}
		// In a container it is a directory of the image (made if missing).
		if spec.Image == "" {
			if fi, err := os.Stat(spec.Dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("%w: directory %q does not exist", devops.ErrInvalid, spec.Dir)
			}
		}
	}
	lim := &spec.Limits
	if lim.MemoryBytes < 0 || lim.CPUs < 0 || lim.Pids < 0 || lim.MaxOutputBytes < 0 {
		return fmt.Errorf("%w: negative limit", devops.ErrInvalid)
	}
	lim.MemoryBytes = capInt(lim.MemoryBytes, e.max.MemoryBytes)
	lim.Pids = capInt(lim.Pids, e.max.Pids)
	lim.MaxOutputBytes = capInt(lim.MaxOutputBytes, e.max.MaxOutputBytes)
	if e.max.CPUs > 0 && (lim.CPUs == 0 || lim.CPUs > e.max.CPUs) {
		lim.CPUs = e.max.CPUs
	}
	if spec.Grace == 0 {
		spec.Grace = devops.DefaultGrace
	}
	if spec.Image != "" {
		// The engine enforces the limits, users and namespaces.
		return e.checkImage(*spec)
	}
	return e.platform.check(*spec)
}

// capInt caps v by max, where zero means "none" on both sides.
func capInt(v, max int64) int64 {
	if max > 0 && (v == 0 || v > max) {
		return max
	}
	return v
}

// buildEnv makes the whole environment of a command: nothing of the worker's
// own leaks in. USER and LOGNAME name who it runs as, as ssh, cron and
// systemd set them: scripts read $USER. The spec may set any of them;
// DEVOPS_PROCESS_ID is ours.
func buildEnv(specEnv map[string]string, home, user string, id devops.ProcessID) []string {
	env := map[string]string{"PATH": defaultPath, "HOME": home}
	if user != "" {
		env["USER"], env["LOGNAME"] = user, user
	}
	for k, v := range specEnv {
		env[k] = v
	}
	env["DEVOPS_PROCESS_ID"] = string(id)
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// envValue returns the value of key in env.
func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// hostname is the short form of id a process sees as its host name: the tail
// of the id, since UUIDv7 ids start with the (shared) time.
func hostname(id devops.ProcessID) string {
	s := strings.ReplaceAll(string(id), "-", "")
	if len(s) > 12 {
		s = s[len(s)-12:]
	}
	return s
}

// lookPath finds file like a shell does with the command's own PATH and cwd.
// It returns the initResult to report when the command cannot be executed.
func lookPath(file string, env []string, cwd string) (string, *initResult) {
	notFound := &initResult{Code: 127, Reason: reasonNotFound}
	if strings.Contains(file, "/") {
		path := file
		if !filepath.IsAbs(path) {
			path = filepath.Join(cwd, path)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return "", &initResult{Code: 127, Reason: "no such file or directory"}
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", &initResult{Code: 126, Reason: reasonNotExecutable}
		}
		return path, nil
	}
	var found *initResult = notFound
	for _, d := range filepath.SplitList(envValue(env, "PATH")) {
		if d == "" {
			d = "."
		}
		path := filepath.Join(d, file)
		if !filepath.IsAbs(path) {
			path = filepath.Join(cwd, path)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Mode()&0o111 == 0 {
			// Like a shell: keep looking, but remember it was there.
			found = &initResult{Code: 126, Reason: reasonNotExecutable}
			continue
		}
		return path, nil
	}
	return "", found
}

// execFailure turns an error from starting an already found command into
// the initResult a shell would give.
func execFailure(err error) initResult {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return initResult{Code: 127, Reason: reasonNotFound}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EPERM),
		errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENOTDIR):
		return initResult{Code: 126, Reason: reasonNotExecutable + ": " + err.Error()}
	}
	return initResult{Code: 126, Reason: err.Error()}
}

// execMessage is the line a shell writes when it cannot run argv0.
func execMessage(argv0 string, r initResult) string {
	return fmt.Sprintf("devops: %s: %s\n", argv0, r.Reason)
}

// Pid is the host pid of the process started: the init when the command
// runs in its own namespaces, the command itself otherwise.
func (p *Process) Pid() int { return p.pid }

// Done is closed once Wait would return without blocking.
func (p *Process) Done() <-chan struct{} { return p.done }

// Ended is closed once Status has the process's status: when Done is, or
// before it for a supervised process whose shim has told how it ended but
// not yet put that on disk (it still writes into the process's directory
// until Done).
func (p *Process) Ended() <-chan struct{} { return p.ended }

// Status returns how the process ended, once Ended is closed.
func (p *Process) Status() devops.ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Wait blocks until the command, all its children and the copy of all its
// output are done, then returns how it ended. Any number of goroutines may
// call it.
func (p *Process) Wait() devops.ExitStatus {
	<-p.done
	return p.Status()
}

// Terminate sends sig to the whole tree and SIGKILL after grace if it still
// runs. The process then ends TERMINATED with the signal that ended it. It
// returns without waiting; call Wait for the end. Terminating an ended
// process does nothing.
func (p *Process) Terminate(sig syscall.Signal, grace time.Duration) {
	if p.shim != nil {
		p.shim.terminate(sig, grace)
		return
	}
	p.stop(devops.StateTerminated, sig, grace)
}

// timeout terminates the process when its spec's timeout expires.
func (p *Process) timeout() {
	t := time.NewTimer(p.spec.Timeout)
	defer t.Stop()
	select {
	case <-t.C:
		p.log.Info("process timed out")
		p.stop(devops.StateTimedOut, syscall.SIGTERM, p.spec.Grace)
	case <-p.exited:
	}
}

// stop signals the tree and arms the SIGKILL after grace. The first stop
// decides the final state.
func (p *Process) stop(state devops.State, sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	select {
	case <-p.exited:
		p.mu.Unlock()
		return
	default:
	}
	if p.stopState == devops.StateUnknown {
		p.stopState = state
	}
	// Added under the lock, before run can see exited and start waiting on
	// the group, so wg.Add never races wg.Wait, and run destroys the
	// sandbox only after this stop is done with it.
	p.wg.Add(1)
	p.mu.Unlock()

	if sig == syscall.SIGKILL {
		defer p.wg.Done()
		p.sandbox.kill()
		return
	}
	p.sandbox.signal(sig)
	go func() {
		defer p.wg.Done()
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
			p.log.Info("grace over, killing", "grace", grace)
			p.sandbox.kill()
		case <-p.exited:
		}
	}()
}

// run waits for the process, cleans up after it and sets the final status.
func (p *Process) run() {
	res, ru := p.sandbox.wait()
	p.mu.Lock()
	close(p.exited)
	p.mu.Unlock()

	// Whatever the command left behind dies with it.
	p.sandbox.kill()
	p.out.wait(copyDelay)
	p.wg.Wait()

	u := p.sandbox.usage(ru)
	if !p.statusFirst {
		p.cleanup()
	}

	p.mu.Lock()
	p.status = classify(res, u, p.stopState, p.out.truncated())
	p.status.EndedAt = time.Now()
	st := p.status
	p.mu.Unlock()
	close(p.done)
	if p.statusFirst {
		p.cleanup()
	}
	close(p.cleaned)
	p.log.Info("process ended", "state", st.State.String(), "code", st.Code, "signal", st.Signal, "reason", st.Reason)
}

// cleanup removes what the ended process leaves: its cgroup and, unless
// its spec keeps it, its directory.
func (p *Process) cleanup() {
	p.sandbox.destroy()
	if !p.spec.KeepDir {
		p.removeDir()
	}
}

// classify turns how the command ended into an ExitStatus.
func classify(res initResult, u usage, stopState devops.State, truncated bool) devops.ExitStatus {
	st := devops.ExitStatus{Code: res.Code, Signal: res.Signal, CPUTime: u.cpu, PeakMemory: u.peak}
	var reasons []string
	switch {
	case res.Reason != "" && res.Signal == 0 && (res.Code == 126 || res.Code == 127):
		// It never ran: a stop asked meanwhile does not change that.
		st.State = devops.StateFailed
		reasons = append(reasons, res.Reason)
	case stopState != devops.StateUnknown:
		// A command that caught the signal and exited keeps its own code,
		// as ssh would report it: `trap 'exit 3' USR1` ends TERMINATED
		// with code 3, not with the signal it caught.
		st.State = stopState
	case u.oomKilled && res.Signal == int(syscall.SIGKILL):
		st.State = devops.StateFailed
		reasons = append(reasons, ReasonOOMKilled)
	case res.Signal != 0:
		st.State = devops.StateFailed
		if res.Reason != "" {
			reasons = append(reasons, res.Reason)
		}
	case res.Code == 0:
		st.State = devops.StateSucceeded
	default:
		st.State = devops.StateFailed
		if res.Reason != "" {
			reasons = append(reasons, res.Reason)
		}
	}
	if truncated {
		reasons = append(reasons, ReasonOutputTruncated)
	}
	st.Reason = strings.Join(reasons, "; ")
	return st
}

// waitResult reads how a directly started process ended. The signal is
// told by its Linux number, as the API carries signals.
func waitResult(ws syscall.WaitStatus) initResult {
	if ws.Signaled() {
		return initResult{Signal: int(wireSignal(ws.Signal()))}
	}
	return initResult{Code: ws.ExitStatus()}
}

func (p *Process) removeDir() {
	// Not in the way of the next command's home, a spare renamed into
	// the same directory.
	if err := spare.RemoveAll(p.dir); err != nil {
		p.log.Warn("remove process directory", logKeyError, err)
	}
}

// parseUser reads "name", "name:group", "uid" or "uid:gid" and finds the ids
// and groups. Unknown users or groups wrap devops.ErrInvalid.
func parseUser(s string) (*credential, error) {
	name, group, hasGroup := strings.Cut(s, ":")
	if name == "" || (hasGroup && group == "") {
		return nil, fmt.Errorf("%w: user %q", devops.ErrInvalid, s)
	}
	var cred credential
	var u *user.User
	if uid, err := strconv.ParseUint(name, 10, 32); err == nil {
		cred.uid = uint32(uid)
		cred.gid = uint32(uid)
		u, _ = user.LookupId(name) // a bare uid need not exist in passwd
	} else {
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("%w: user %q: %v", devops.ErrInvalid, name, err)
		}
		id, _ := strconv.ParseUint(u.Uid, 10, 32)
		cred.uid = uint32(id)
	}
	if u != nil {
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred.gid = uint32(gid)
		cred.name = u.Username
	}
	if hasGroup {
		if gid, err := strconv.ParseUint(group, 10, 32); err == nil {
			cred.gid = uint32(gid)
		} else {
			g, err := user.LookupGroup(group)
			if err != nil {
				return nil, fmt.Errorf("%w: group %q: %v", devops.ErrInvalid, group, err)
			}
			gid, _ := strconv.ParseUint(g.Gid, 10, 32)
			cred.gid = uint32(gid)
		}
	}
	// Only the primary group: the worker's own supplementary groups must
	// not carry over.
	cred.groups = []uint32{cred.gid}
	return &cred, nil
}

// initArg is the hidden subcommand that makes the devops binary the init.
const initArg = "__init"

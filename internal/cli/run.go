package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/client"
)

func newRunCmd(env *Env, g *globals) *cobra.Command {
	var (
		req                 client.RunRequest
		envs                []string
		secretEnvs          []string
		detach, stdin       bool
		retries             int
		mem, maxOut         string
		timeoutFlag, grace  time.Duration
		queueTimeout, dGrac time.Duration
		fleet               fleetFlags
	)
	cmd := &cobra.Command{
		Use:         "run [flags] -- CMD [ARGS...]",
		Annotations: map[string]string{ownsInterrupt: "the first Ctrl-C terminates, the second stops waiting"},
		Short:       "Run a command on one worker, or on many, and follow its output",
		Long: `Run a command remotely. Its stdout and stderr arrive live on yours and devops exits
with its exit code: 128+signal when it was killed, 124 when it timed out, 255 when
devops itself failed (the manager cannot be reached, no worker could run it, a bad
flag, the process was lost), like ssh.

Without a target the scheduler picks one worker. --worker names one; --all and
--selector run it on every matching worker and prefix each line with the worker
name (like pdsh); the exit code is then the highest of them.

With --workers, --all or --selector (or any of the rollout flags) it is a fleet
run, an object of its own (devops runs, devops run-status ID): --dry-run shows
which workers would run it and why the others would not; --max-concurrency,
--max-errors, --stop-on-error, --canary and --pause-after-canary control the
rollout; --retries runs a child that failed by itself again on its worker (the
manager does, so it goes on without this command), and only its last attempt
counts; the exit code is 0 only if every targeted worker succeeded.

Ctrl-C terminates the remote process(es), or cancels the fleet run; a second
Ctrl-C stops waiting.`,
		Example: `  devops run -- uname -a
  devops run --all -- uptime
  devops run --all --coalesce -- uname -r
  devops run --all -i -- sh < check.sh
  devops run --selector zone=a --timeout 1m -- sh -c 'make test'
  devops run --detach -- sleep 600
  devops run --image devops-base:busybox --memory 64M -- sh -c 'cat /etc/os-release'
  devops run --selector 'zone in (a,b),env!=prod' --dry-run -- uptime
  devops run --all --max-concurrency 25% --max-errors 1 --stop-on-error kill -- ./upgrade.sh
  devops run --workers w1,w2,w3 --canary 1 --pause-after-canary -- ./deploy.sh
  devops run --all --retries 2 -- ./flaky-check.sh`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("%w: no command to run: devops run [flags] -- CMD [ARGS...]", devops.ErrInvalid)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Spec.Argv = args
			req.Spec.Timeout = timeoutFlag
			req.Spec.Grace = grace
			req.QueueTimeout = queueTimeout
			req.DisconnectGrace = dGrac
			var err error
			if req.Spec.Env, req.Spec.SecretEnvKeys, err = parseSecretEnv(envs, secretEnvs, env.LookupEnv); err != nil {
				return err
			}
			if req.Spec.Limits.MemoryBytes, err = parseSize(mem); err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			if req.Spec.Limits.MaxOutputBytes, err = parseSize(maxOut); err != nil {
				return fmt.Errorf("--max-output: %w", err)
			}
			if retries < 0 || retries > devops.MaxRetries {
				// The manager bounds a fleet run's; a single run's are the
				// CLI's own, and took any number.
				return fmt.Errorf("--retries: %w: %d: want 0 to %d", devops.ErrInvalid, retries, devops.MaxRetries)
			}
			var stdinRest io.Reader
			var notice *inputNotice
			defer func() { notice.quiet() }() // before anything else is said
			if stdin && !fleet.dryRun {
				input := cmd.InOrStdin()
				if env.StdinIsTerminal {
					fmt.Fprintln(env.Stderr, "devops: reading the command's standard input to its end (Ctrl-D)")
				} else {
					notice = newInputNotice(input, env.Stderr)
					input = notice
				}
				req.Spec.Stdin, stdinRest, err = readStdin(cmd.Context(), input, env.Interrupt)
				notice.readHead()
				if err != nil {
					return err
				}
			}
			if fleet.isFleet(req) {
				fr, err := fleet.request(req)
				if err != nil {
					return err
				}
				// The manager runs a fleet run's failed children again, so
				// the retries go on without this CLI.
				fr.Options.Retries = retries
				return g.call(func(c *client.Client) error {
					err := uploadStdin(cmd.Context(), c, &fr.Spec, stdinRest, env)
					notice.quiet()
					if err != nil {
						return err
					}
					return runFleet(cmd.Context(), c, &fleet, fr, detach, env)
				})
			}
			return g.call(func(c *client.Client) error {
				err := uploadStdin(cmd.Context(), c, &req.Spec, stdinRest, env)
				notice.quiet()
				if err != nil {
					return err
				}
				return runSingle(cmd.Context(), c, req, retries, detach, env)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&retries, "retries", 0, "run it again, up to this many times, when it fails or times out by itself (each attempt is a new process; in a fleet run, on the same worker)")
	f.StringVar(&req.Target.Worker, "worker", "", "run on this worker (name or id)")
	f.StringVar(&req.Target.Selector, "selector", "", "run on every worker whose labels match, e.g. zone=a,env!=prod")
	f.BoolVar(&req.Target.All, "all", false, "run on every worker that is up")
	f.DurationVar(&timeoutFlag, "timeout", 0, "end the command after this long (exit code 124); 0: no limit")
	f.DurationVar(&grace, "grace", 0, "time between SIGTERM and SIGKILL when it is terminated or times out (default 10s)")
	f.StringArrayVarP(&envs, "env", "e", nil, "set an environment variable K=V, or K to pass on its value here (repeatable)")
	f.StringArrayVar(&secretEnvs, "secret-env", nil, "set a secret environment variable K=V, or K to pass on its value here (off the command line): its value never shows in status, logs, audit or metrics (repeatable)")
	f.StringVar(&req.Spec.Dir, "dir", "", "working directory on the worker (default: a fresh directory per process)")
	f.BoolVarP(&detach, "detach", "d", false, "print the process id(s) and return at once")
	f.BoolVarP(&stdin, "stdin", "i", false, "send your standard input to the command, read to its end before it starts (over 4 MiB it is uploaded to the manager first; at most its --max-stdin); without it the command reads nothing")
	f.DurationVar(&queueTimeout, "queue-timeout", 0, "how long to wait for a free slot when workers are full (default 1m)")
	f.DurationVar(&dGrac, "disconnect-grace", 0, "how long the process may be unreachable before it is LOST (default 2m)")
	f.StringVar(&req.Spec.User, "user", "", "run as this user[:group] on the worker")
	f.StringVar(&req.Spec.Image, "image", "", "run in a container of this image (Docker on the worker; the image must be on it, nothing is pulled)")
	f.StringVar(&mem, "memory", "", "memory limit, e.g. 256M")
	f.Float64Var(&req.Spec.Limits.CPUs, "cpus", 0, "CPU limit in cores, e.g. 0.5")
	f.Int64Var(&req.Spec.Limits.Pids, "pids", 0, "most processes and threads")
	f.StringVar(&maxOut, "max-output", "", "cut output beyond this many bytes, e.g. 50M")
	f.BoolVar(&req.Spec.KeepDir, "keep-dir", false, "keep the process's working directory when it ends")
	fleet.add(f)
	return cmd
}

// readStdin reads what run --stdin sends, all of it before the command
// starts: the command gets it whole, and may start again (--retries) or on
// many workers. Up to devops.MaxStdin it goes with the request; beyond, it
// returns what it read and the rest to read, for uploadStdin. Ctrl-C
// stops the read, and nothing runs.
func readStdin(ctx context.Context, r io.Reader, interrupt <-chan os.Signal) ([]byte, io.Reader, error) {
	data, err := awaitRead(ctx, interrupt, func() ([]byte, error) {
		return io.ReadAll(io.LimitReader(r, devops.MaxStdin+1))
	})
	if errors.Is(err, errInterrupted) {
		return nil, nil, &exitError{code: 130, msg: "interrupted while reading the standard input; nothing ran"}
	}
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--stdin: read standard input: %w", err)
	}
	if len(data) > devops.MaxStdin {
		return data, r, nil
	}
	return data, nil, nil
}

// uploadStdin sends the manager a standard input larger than a request
// carries, spec.Stdin then rest, and names the upload in spec instead.
// Nothing runs until the manager has it all, synced.
func uploadStdin(ctx context.Context, c *client.Client, spec *devops.Spec, rest io.Reader, env *Env) error {
	if rest == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // an interrupted upload ends with the call
	id, err := awaitRead(ctx, env.Interrupt, func() (string, error) {
		id, _, err := c.UploadStdin(ctx, spec.Stdin, rest)
		return id, err
	})
	if errors.Is(err, errInterrupted) {
		return &exitError{code: 130, msg: "interrupted while sending the standard input; nothing ran"}
	}
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return err // the manager's answer, which says what it refused
		}
		return fmt.Errorf("--stdin: send standard input: %w", err)
	}
	spec.Stdin, spec.StdinUpload = nil, id
	return nil
}

// inputNoticeAfter is how long run -i reads its standard input before it
// says that the command waits for the input's end.
const inputNoticeAfter = 2 * time.Second

// inputNotice reads the standard input of run -i and says once, on stderr,
// that the command starts only once the input ends, when reading takes
// longer than inputNoticeAfter: a producer that never ends (`tail -f`,
// `yes`) would otherwise hold the command with no word, and a large input
// goes up to the manager for minutes unannounced (docker build says the
// same of its context). A terminal is told at once, elsewhere.
//
// Until the first devops.MaxStdin bytes are read (readHead), a timer says
// it, for a producer that writes nothing; then only a read does, in the
// upload's goroutine, after which nothing else writes to stderr but what
// comes after quiet.
type inputNotice struct {
	r     io.Reader
	w     io.Writer
	start time.Time
	timer *time.Timer
	fired chan struct{} // closed once the timer's notice is done
	read  atomic.Int64

	mu   sync.Mutex // serialises the notice with quiet
	done bool       // said, or quiet: nothing more to say
}

func newInputNotice(r io.Reader, w io.Writer) *inputNotice {
	n := &inputNotice{r: r, w: w, start: time.Now(), fired: make(chan struct{})}
	n.timer = time.AfterFunc(inputNoticeAfter, func() {
		n.say()
		close(n.fired)
	})
	return n
}

func (n *inputNotice) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	n.read.Add(int64(k))
	if time.Since(n.start) >= inputNoticeAfter {
		n.say()
	}
	return k, err
}

func (n *inputNotice) say() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done {
		return
	}
	n.done = true
	fmt.Fprintf(n.w, "devops: the command starts once its standard input ends (-i reads it whole first); %s read so far\n", sizeText(uint64(n.read.Load())))
}

// readHead stops the timer: the head is read (or its read failed), and
// any more is read by the upload. A notice the timer was giving is given
// before it returns, so that what is written next comes after it.
func (n *inputNotice) readHead() {
	if n == nil {
		return
	}
	if n.timer.Stop() {
		close(n.fired) // stopped before it fired: it never will
	}
	<-n.fired
}

// quiet ends the notice for good; once it returns, nothing more is said.
func (n *inputNotice) quiet() {
	if n == nil {
		return
	}
	n.readHead()
	n.mu.Lock()
	n.done = true
	n.mu.Unlock()
}

// errInterrupted: Ctrl-C came before what was awaited.
var errInterrupted = errors.New("interrupted")

// awaitRead returns what read returns, unless ctx ends first, or interrupt
// (when not nil) fires: errInterrupted. read runs in a goroutine of its
// own, as a read from a terminal does not end by itself at Ctrl-C (the CLI
// takes SIGINT); left behind, it ends with the process.
func awaitRead[T any](ctx context.Context, interrupt <-chan os.Signal, read func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := read()
		done <- result{v, err}
	}()
	var zero T
	select {
	case r := <-done:
		return r.v, r.err
	case <-interrupt:
		return zero, errInterrupted
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// parseEnv reads the K=V (or K) values of flag.
func parseEnv(flag string, kvs []string, lookup func(string) (string, bool)) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	env := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("%w: %s %q: want K=V, or K for its value here", devops.ErrInvalid, flag, kv)
		}
		if !ok {
			// K alone passes this shell's value on, as docker run -e K
			// does; it keeps a secret off the command line, where ps
			// would show it. Unset is an error rather than nothing, so
			// that a script's typo does not run the command without it.
			if v, ok = lookup(k); !ok {
				return nil, fmt.Errorf("%w: %s %s: %s is not set here (K= sends an empty value)", devops.ErrInvalid, flag, k, k)
			}
		}
		env[k] = v
	}
	return env, nil
}

// runSingle runs a command that is not a fleet run: with detach it prints
// the process id, else it follows it, and runs it again up to retries times
// when it fails by itself.
func runSingle(ctx context.Context, c *client.Client, req client.RunRequest, retries int, detach bool, env *Env) error {
	if detach {
		ps, err := c.Submit(ctx, req)
		if err != nil {
			return err
		}
		for _, p := range ps {
			fmt.Fprintln(env.Stdout, p.ID)
		}
		return nil
	}
	defer catchBrokenPipe()()
	for attempt := 1; ; attempt++ {
		err := runAndFollow(ctx, c, req, env)
		var xe *exitError
		if attempt > retries || !errors.As(err, &xe) || !xe.retryable {
			return err
		}
		// Explicit, and each attempt is a new process with its own id:
		// a new request, so a new idempotency key (Run makes one).
		fmt.Fprintf(env.Stderr, "devops: attempt %d of %d failed (exit %d); running it again\n", attempt, retries+1, xe.code)
	}
}

// runAndFollow runs the command, prints its output as it arrives and turns
// the final states into the exit code.
func runAndFollow(ctx context.Context, c *client.Client, req client.RunRequest, env *Env) error {
	var mu sync.Mutex // protects final, ids and said
	final := map[devops.ProcessID]devops.Process{}
	var ids []devops.ProcessID
	said := map[devops.ProcessID]note{} // what was told on stderr last

	// terminateAll sends sig to every process started so far, then SIGKILL
	// after the grace, and tells failed of each it could not.
	terminateAll := func(sig syscall.Signal, failed func(devops.ProcessID, error)) {
		mu.Lock()
		todo := slices.Clone(ids)
		mu.Unlock()
		for _, id := range todo {
			if _, err := c.Terminate(ctx, id, sig, 0); err != nil {
				failed(id, err)
			}
		}
	}

	// Ctrl-C terminates every process; a second one stops waiting.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go onInterrupt(ctx, env, cancel, func() {
		fmt.Fprintln(env.Stderr, "devops: terminating; press Ctrl-C again to stop waiting")
		terminateAll(syscall.SIGTERM, func(id devops.ProcessID, err error) {
			fmt.Fprintf(env.Stderr, "devops: terminate %s: %s\n", id, describe(err))
		})
	})

	err := c.Run(ctx, req, func(ev client.Event) error {
		if ev.Chunk != nil {
			lostNote(env.Stderr, ev.ID, ev.Lost)
			// As it comes, like ssh; a fleet run's printer (runPrinter)
			// puts the worker's name in front of each line.
			w := env.Stdout
			if ev.Chunk.Stream == devops.Stderr {
				w = env.Stderr
			}
			_, err := w.Write(ev.Chunk.Data)
			return printing(err)
		}
		p := *ev.Process
		mu.Lock()
		defer mu.Unlock()
		if _, seen := final[p.ID]; !seen && !containsID(ids, p.ID) {
			ids = append(ids, p.ID)
		}
		if p.State.Terminal() {
			final[p.ID] = p
		} else {
			said[p.ID] = noteReason(env.Stderr, p, said[p.ID])
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: 130, msg: "stopped waiting; the processes may still run"}
		}
		return outputLost(err, func() error {
			var errs []error
			terminateAll(syscall.SIGPIPE, func(_ devops.ProcessID, err error) { errs = append(errs, err) })
			return errors.Join(errs...)
		})
	}
	code := 0
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		p := final[id]
		if msg := endMessage(p, false); msg != "" {
			fmt.Fprintln(env.Stderr, "devops:", msg)
		}
		code = max(code, p.ExitCode())
	}
	if code != 0 {
		// Worth another attempt when every process that did not succeed
		// failed or timed out by itself: never after a kill or a loss.
		retryable := true
		for _, id := range ids {
			if s := final[id].State; s != devops.StateSucceeded && !devops.RetryableState(s) {
				retryable = false
			}
		}
		return &exitError{code: code, retryable: retryable}
	}
	return nil
}

// onInterrupt carries out the CLI's Ctrl-C protocol until ctx ends: the
// first press runs first (terminate what was started) and the command keeps
// waiting for the ends; a second press cancels, to stop waiting.
func onInterrupt(ctx context.Context, env *Env, cancel context.CancelFunc, first func()) {
	if env.Interrupt == nil {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-env.Interrupt:
	}
	first()
	select {
	case <-ctx.Done():
	case <-env.Interrupt:
		cancel()
	}
}

func containsID(ids []devops.ProcessID, id devops.ProcessID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// lostNote says, where output goes, that n bytes of a process's output are
// missing at this point: never a silent gap.
func lostNote(w io.Writer, id devops.ProcessID, n int64) {
	if n > 0 {
		fmt.Fprintf(w, "devops: %s: %d bytes of output lost here: the worker's spool was full while the manager was unreachable\n", id, n)
	}
}

// endMessage explains an end that the exit code alone does not: a plain
// non-zero exit says nothing, like ssh.
func endMessage(p devops.Process, fanout bool) string {
	where := ""
	if p.WorkerName != "" {
		where = " on " + p.WorkerName
	}
	switch p.State {
	case devops.StateSucceeded:
		return ""
	case devops.StateFailed:
		if p.Reason == "" && p.Signal == 0 {
			if fanout {
				return fmt.Sprintf("%s: exit code %d", p.WorkerName, p.Code)
			}
			return ""
		}
	}
	msg := fmt.Sprintf("process %s%s %s", p.ID, where, p.State)
	if p.Signal != 0 {
		msg += fmt.Sprintf(" (signal %d, %s)", p.Signal, devops.SignalName(syscall.Signal(p.Signal)))
	}
	if p.Reason != "" {
		msg += ": " + p.Reason
	}
	return msg
}

// note is what noteReason last said of a process: its state then, and why
// it waited.
type note struct {
	state  devops.State
	reason string
}

// noteReason says on w why a process that has not ended waits (a free
// slot, its worker unreachable, the manager's disk full), or that it no
// longer does, when that changed since last, what was said before. It
// returns what it said now.
func noteReason(w io.Writer, p devops.Process, last note) note {
	if p.Reason == last.reason {
		return last
	}
	switch {
	case p.Reason != "":
		fmt.Fprintf(w, "devops: %s: %s: %s\n", p.ID, p.State, p.Reason)
	case last.state == devops.StatePending:
		fmt.Fprintf(w, "devops: %s: %s\n", p.ID, p.State) // it had not run yet
	default:
		fmt.Fprintf(w, "devops: %s: %s again\n", p.ID, p.State)
	}
	return note{p.State, p.Reason}
}

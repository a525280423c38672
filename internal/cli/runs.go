package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/wire"
)

// fleetFlags are the flags of `devops run` that make it a fleet run.
type fleetFlags struct {
	workers          []string
	exclude          []string
	dryRun           bool
	maxConcurrency   string
	maxErrors        string
	stopOnError      string
	canary           int
	pauseAfterCanary bool
	output           string
	group            bool
	coalesce         bool // grouped, and the same blocks as one (dshbak -c)
	summary          bool
	timestamps       bool
	noPrefix         bool // lines without the worker's name (pdsh -N)
}

func (f *fleetFlags) add(fs interface {
	StringSliceVar(*[]string, string, []string, string)
	BoolVar(*bool, string, bool, string)
	StringVar(*string, string, string, string)
	IntVar(*int, string, int, string)
	StringVarP(*string, string, string, string, string)
}) {
	fs.StringSliceVar(&f.workers, "workers", nil, "run on exactly these workers (names or ids, comma-separated; web[1-3,7] and db[08-10] expand as pdsh's do)")
	fs.StringSliceVar(&f.exclude, "exclude", nil, "leave these workers out (names or ids, ranges as in --workers), as pdsh -x does")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print which workers would run it, and why the others would not; run nothing")
	fs.StringVar(&f.maxConcurrency, "max-concurrency", "", "at most N (or P% of the targets) running at once, a sliding window (default: all)")
	fs.StringVar(&f.maxErrors, "max-errors", "", "error budget: once more than N (or P%) failed, start no more (default: no budget)")
	fs.StringVar(&f.stopOnError, "stop-on-error", "wait", "when the budget is exceeded: wait for the running ones, or kill them")
	fs.IntVar(&f.canary, "canary", 0, "run on N workers first; continue only if all N succeed")
	fs.BoolVar(&f.pauseAfterCanary, "pause-after-canary", false, "after a successful canary, wait for devops run-resume ID")
	fs.StringVarP(&f.output, "output", "o", "text", "output of a fleet run: text (lines prefixed with the worker) or json (one object per chunk)")
	fs.BoolVar(&f.group, "group", false, "print each worker's output as one block when it ends")
	fs.BoolVar(&f.coalesce, "coalesce", false, "print one block per distinct output and exit, naming the workers that share it, when the run ends (like dshbak -c)")
	fs.BoolVar(&f.summary, "summary", false, "print only the summary table")
	fs.BoolVar(&f.timestamps, "timestamps", false, "put the time each line arrived in front of it")
	fs.BoolVar(&f.noPrefix, "no-prefix", false, "print each line without the worker's name in front (as pdsh -N): the outputs one after the other, for a pipe")
}

// grouped reports whether each child's output is kept whole, without
// prefixes, to be printed as a block: --group, and --coalesce.
func (f *fleetFlags) grouped() bool { return f.group || f.coalesce }

// isFleet reports whether the flags ask for a fleet run.
func (f *fleetFlags) isFleet(req client.RunRequest) bool {
	return req.Target.All || req.Target.Selector != "" || len(f.workers) > 0 || f.fleetFlag() != ""
}

// fleetFlag names the first flag set, other than a target, that makes a
// run a fleet run; "" when there is none.
func (f *fleetFlags) fleetFlag() string {
	for _, x := range []struct {
		set  bool
		name string
	}{
		{len(f.exclude) > 0, "--exclude"}, {f.dryRun, "--dry-run"}, {f.maxConcurrency != "", "--max-concurrency"},
		{f.maxErrors != "", "--max-errors"}, {f.canary > 0, "--canary"}, {f.pauseAfterCanary, "--pause-after-canary"},
		{f.output != "text", "-o " + f.output}, {f.group, "--group"}, {f.coalesce, "--coalesce"}, {f.summary, "--summary"},
		{f.timestamps, "--timestamps"}, {f.noPrefix, "--no-prefix"},
	} {
		if x.set {
			return x.name
		}
	}
	return ""
}

// request turns the flags and the single-run request into a fleet request.
func (f *fleetFlags) request(req client.RunRequest) (client.FleetRequest, error) {
	workers, err := expandWorkers(f.workers)
	if err != nil {
		return client.FleetRequest{}, fmt.Errorf("--workers: %w", err)
	}
	exclude, err := expandWorkers(f.exclude)
	if err != nil {
		return client.FleetRequest{}, fmt.Errorf("--exclude: %w", err)
	}
	fr := client.FleetRequest{
		Spec:            req.Spec,
		Target:          devops.RunTarget{Workers: workers, Selector: req.Target.Selector, All: req.Target.All, Exclude: exclude},
		QueueTimeout:    req.QueueTimeout,
		DisconnectGrace: req.DisconnectGrace,
	}
	if req.Target.Worker != "" {
		fr.Target.Workers = append([]string{req.Target.Worker}, fr.Target.Workers...)
	}
	if len(fr.Target.Workers) == 0 && fr.Target.Selector == "" && !fr.Target.All {
		// The manager would say that a fleet run needs workers; the user
		// asked for none by name, only for a flag that makes one.
		return fr, fmt.Errorf("%w: %s makes a fleet run: name its workers with --worker, --workers, --selector or --all", devops.ErrInvalid, f.fleetFlag())
	}
	if fr.Options.MaxConcurrency, err = devops.ParseLimit(f.maxConcurrency); err != nil {
		return fr, fmt.Errorf("--max-concurrency: %w", err)
	}
	if fr.Options.MaxConcurrency.Set && fr.Options.MaxConcurrency.N == 0 {
		return fr, fmt.Errorf("--max-concurrency: %w: must be at least 1", devops.ErrInvalid)
	}
	if fr.Options.MaxErrors, err = devops.ParseLimit(f.maxErrors); err != nil {
		return fr, fmt.Errorf("--max-errors: %w", err)
	}
	if fr.Options.StopOnError, err = devops.ParseStopOnError(f.stopOnError); err != nil {
		return fr, fmt.Errorf("--stop-on-error: %w", err)
	}
	fr.Options.Canary = f.canary
	fr.Options.PauseAfterCanary = f.pauseAfterCanary
	if f.output != "text" && f.output != "json" {
		return fr, fmt.Errorf("%w: -o %q: want text or json", devops.ErrInvalid, f.output)
	}
	if f.coalesce && f.output == "json" {
		return fr, fmt.Errorf("%w: --coalesce prints text blocks, not -o json", devops.ErrInvalid)
	}
	if f.noPrefix && f.output == "json" {
		return fr, fmt.Errorf("%w: --no-prefix is for text lines; -o json names the worker in each object", devops.ErrInvalid)
	}
	return fr, nil
}

// runFleet starts a fleet run (or plans it) and follows it.
func runFleet(ctx context.Context, c *client.Client, f *fleetFlags, fr client.FleetRequest, detach bool, env *Env) error {
	if f.dryRun {
		r, err := c.PlanRun(ctx, fr)
		if err != nil {
			return err
		}
		if f.output == "json" {
			if err := writeJSON(env.Stdout, wire.RunToPB(r)); err != nil {
				return err
			}
		} else {
			printPlan(env.Stdout, r)
		}
		if len(r.Tasks) == 0 {
			return &exitError{code: 1, msg: "no worker would run it"}
		}
		return nil
	}
	r, err := c.StartRun(ctx, fr)
	if err != nil {
		return err
	}
	if detach {
		fmt.Fprintln(env.Stdout, r.ID)
		return nil
	}
	for _, x := range r.Excluded {
		fmt.Fprintf(env.Stderr, "devops: not running on %s: %s\n", x.WorkerName, x.Reason)
	}
	defer catchBrokenPipe()()
	err = followRun(ctx, c, r.ID, true, f, env)
	err = outputLost(err, func() error {
		_, err := c.CancelRun(ctx, r.ID, syscall.SIGPIPE, 0)
		return err
	})
	// A worker named with --workers that could not run it is a failure:
	// the exit code is 0 only when every targeted worker succeeded.
	if err == nil && len(fr.Target.Workers) > 0 && len(r.Excluded) > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of the named workers did not run it", len(r.Excluded))}
	}
	return err
}

// followRun prints a run's output as the flags say, cancels it on Ctrl-C
// and turns its end into the exit code.
func followRun(ctx context.Context, c *client.Client, id devops.RunID, follow bool, f *fleetFlags, env *Env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go onInterrupt(ctx, env, cancel, func() {
		fmt.Fprintf(env.Stderr, "devops: cancelling run %s; press Ctrl-C again to stop waiting\n", id)
		if _, err := c.CancelRun(ctx, id, syscall.SIGTERM, 0); err != nil {
			fmt.Fprintf(env.Stderr, "devops: cancel %s: %s\n", id, describe(err))
		}
	})

	out := newRunPrinter(env, f)
	var final *devops.Run
	paused := false
	err := c.WatchRun(ctx, id, follow, !f.summary, func(ev client.RunEvent) error {
		switch {
		case ev.Run != nil:
			final = ev.Run
			out.run(*ev.Run)
			if ev.Run.State == devops.RunPaused && !paused {
				paused = true
				fmt.Fprintf(env.Stderr, "devops: run %s paused after the canary; continue with: devops run-resume %s\n", id, id)
			} else if ev.Run.State != devops.RunPaused {
				paused = false
			}
			return nil
		case ev.Chunk != nil:
			lostNote(env.Stderr, ev.ID, ev.Lost)
			return printing(out.chunk(ev.ID, *ev.Chunk))
		default:
			return printing(out.process(*ev.Process))
		}
	})
	out.end()
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: 130, msg: fmt.Sprintf("stopped waiting; see devops run-status %s", id)}
		}
		return err
	}
	if final == nil || !final.State.Terminal() {
		return nil // not following: what there is now was printed
	}
	if f.summary {
		printRunSummary(env.Stdout, *final)
	} else if f.output != "json" {
		if final.State != devops.RunSucceeded || env.IsTerminal {
			fmt.Fprintln(env.Stderr, "devops:", runLine(*final))
		}
	}
	if code := final.ExitCode(); code != 0 {
		return &exitError{code: code}
	}
	return nil
}

func runLine(r devops.Run) string {
	s := r.Summary
	line := fmt.Sprintf("run %s %s", r.ID, r.State)
	if r.Reason != "" {
		line += ": " + r.Reason
	}
	return line + fmt.Sprintf(" (%d/%d succeeded, %d failed, %d running, %d pending, %d skipped)",
		s.Succeeded, s.Total, s.Failed, s.Running, s.Pending, s.Skipped)
}

func printPlan(w io.Writer, r devops.Run) {
	tw := newTable(w, 2)
	fmt.Fprintln(tw, "WORKER\tWOULD RUN\tWHY NOT")
	for _, t := range r.Tasks {
		run := "yes"
		if t.Canary {
			run = "yes (canary)"
		}
		fmt.Fprintf(tw, "%s\t%s\t-\n", t.WorkerName, run)
	}
	for _, x := range r.Excluded {
		fmt.Fprintf(tw, "%s\tno\t%s\n", x.WorkerName, x.Reason)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d of %d targeted workers would run it\n", len(r.Tasks), len(r.Tasks)+len(r.Excluded))
}

// printRunSummary prints a run's table, one row per target; with --retries
// one row per attempt, the earlier ones first, and an ATTEMPT column.
func printRunSummary(w io.Writer, r devops.Run) {
	tw := newTable(w, 2)
	attempts := r.Options.Retries > 0
	col := func(attempt string) string {
		if !attempts {
			return ""
		}
		return attempt + "\t"
	}
	of := func(k int) string { return fmt.Sprintf("%d/%d", k, r.Options.Retries+1) }
	fmt.Fprintf(tw, "WORKER\t%sSTATE\tEXIT\tPROCESS\tNOTE\n", col("ATTEMPT"))
	for _, t := range r.Tasks {
		for k, a := range t.Previous {
			fmt.Fprintf(tw, "%s\t%s%s\t%d\t%s\tran again\n", t.WorkerName, col(of(k+1)), a.State, a.ExitCode, a.ProcessID)
		}
		state, exit, note, attempt := t.State.String(), "-", "", of(t.Attempt())
		switch {
		case t.Skipped:
			state, note, attempt = "SKIPPED", t.Reason, "-"
		case t.ProcessID == "":
			state, attempt = "PENDING", "-"
		case r.Retrying(t):
			exit, note = fmt.Sprint(t.ExitCode), "runs again"
		case t.State.Terminal():
			exit = fmt.Sprint(t.ExitCode)
		}
		if t.Canary {
			note = strings.TrimSpace("canary " + note)
		}
		fmt.Fprintf(tw, "%s\t%s%s\t%s\t%s\t%s\n", t.WorkerName, col(attempt), state, exit, dash(string(t.ProcessID)), dash(note))
	}
	for _, x := range r.Excluded {
		fmt.Fprintf(tw, "%s\t%sEXCLUDED\t-\t-\t%s\n", x.WorkerName, col("-"), x.Reason)
	}
	tw.Flush()
	fmt.Fprintln(w, runLine(r))
}

// runPrinter prints a fleet run's output: lines prefixed with the worker
// name (like pdsh), each worker's output as one block when it ends
// (--group), JSON objects (-o json), or nothing (--summary). On a terminal
// it keeps a progress line on stderr.
type runPrinter struct {
	env   *Env
	f     *fleetFlags
	start time.Time

	mu       sync.Mutex // protects the fields below
	names    map[devops.ProcessID]string
	parts    map[devops.ProcessID]*[3]bytes.Buffer // an unfinished line per stream
	blocks   map[devops.ProcessID]*[3]bytes.Buffer // --group: the output so far per stream
	same     []*sameBlock                          // --coalesce: the ended blocks, each once
	lines    []byte                                // a chunk's whole lines as printed; reused
	ended    map[devops.ProcessID]bool
	total    int
	done     int
	failed   int
	progress bool // a progress line is on the screen

	// With --retries a child that failed may be run again. Its end is told
	// once the run's record says which: "attempt K of N failed; running it
	// again", or its final end.
	latest    devops.Run                             // the latest record
	attempts  map[devops.ProcessID]int               // each child's attempt number, from 1
	held      map[devops.ProcessID]devops.Process    // ended, maybe to be run again: not told yet
	retried   map[devops.ProcessID]devops.RunAttempt // run again, per the record: told once its end is seen
	announced map[devops.ProcessID]bool
	said      map[devops.ProcessID]note // why each child waits, as last told (noteReason)
}

func newRunPrinter(env *Env, f *fleetFlags) *runPrinter {
	return &runPrinter{env: env, f: f, start: time.Now(), names: map[devops.ProcessID]string{},
		parts: map[devops.ProcessID]*[3]bytes.Buffer{}, blocks: map[devops.ProcessID]*[3]bytes.Buffer{}, ended: map[devops.ProcessID]bool{},
		attempts: map[devops.ProcessID]int{}, held: map[devops.ProcessID]devops.Process{},
		retried: map[devops.ProcessID]devops.RunAttempt{}, announced: map[devops.ProcessID]bool{}, said: map[devops.ProcessID]note{}}
}

func (p *runPrinter) dest(s devops.Stream) io.Writer {
	if s == devops.Stderr {
		return p.env.Stderr
	}
	return p.env.Stdout
}

func (p *runPrinter) run(r devops.Run) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = len(r.Tasks)
	p.latest = r
	for _, t := range r.Tasks {
		for k, a := range t.Previous {
			p.names[a.ProcessID] = t.WorkerName
			p.attempts[a.ProcessID] = k + 1
			if p.announced[a.ProcessID] {
				continue
			}
			p.retried[a.ProcessID] = a
			if _, ok := p.held[a.ProcessID]; ok {
				delete(p.held, a.ProcessID)
				p.announceLocked(a.ProcessID)
			}
		}
		if t.ProcessID == "" {
			continue
		}
		p.names[t.ProcessID] = t.WorkerName
		p.attempts[t.ProcessID] = t.Attempt()
		if pr, ok := p.held[t.ProcessID]; ok {
			t.State = pr.State
			if !r.Retrying(t) {
				// Not to be run again after all: the run stopped or ended.
				delete(p.held, t.ProcessID)
				p.finalLocked(pr)
			}
		}
	}
}

// announceLocked tells that a child failed and was run again, once.
func (p *runPrinter) announceLocked(id devops.ProcessID) {
	a := p.retried[id]
	delete(p.retried, id)
	p.announced[id] = true
	p.clearProgressLocked()
	fmt.Fprintf(p.env.Stderr, "devops: %s: attempt %d of %d failed (exit %d); running it again\n",
		p.label(id), p.attempts[id], p.latest.Options.Retries+1, a.ExitCode)
	p.progressLocked()
}

// mayRetryLocked reports whether the child that ended as pr may be run
// again, as far as the latest record of the run tells.
func (p *runPrinter) mayRetryLocked(pr devops.Process) bool {
	for _, t := range p.latest.Tasks {
		if t.ProcessID == pr.ID {
			t.State = pr.State
			return p.latest.Retrying(t)
		}
	}
	return false
}

// attemptLabel names a child with its attempt when the run has retries:
// "w1 (attempt 2 of 3)".
func (p *runPrinter) attemptLabel(id devops.ProcessID) string {
	if p.latest.Options.Retries == 0 || p.attempts[id] == 0 {
		return p.label(id)
	}
	return fmt.Sprintf("%s (attempt %d of %d)", p.label(id), p.attempts[id], p.latest.Options.Retries+1)
}

func (p *runPrinter) label(id devops.ProcessID) string {
	if n := p.names[id]; n != "" {
		return n
	}
	return string(id)
}

type jsonChunk struct {
	Worker    string    `json:"worker"`
	ProcessID string    `json:"process_id"`
	Stream    string    `json:"stream"`
	Offset    int64     `json:"offset"`
	Timestamp time.Time `json:"timestamp"`
	// Data holds the bytes as text when they are UTF-8, else DataBase64
	// holds them: a JSON string cannot carry other bytes, and encoding/json
	// would have replaced each with U+FFFD.
	Data       string `json:"data,omitempty"`
	DataBase64 []byte `json:"data_base64,omitempty"`
}

type jsonEnd struct {
	Worker    string `json:"worker"`
	ProcessID string `json:"process_id"`
	State     string `json:"state"`
	ExitCode  int    `json:"exit_code"`
	Reason    string `json:"reason,omitempty"`
	Attempt   int    `json:"attempt,omitempty"` // with --retries: 1 for the first
}

func (p *runPrinter) chunk(id devops.ProcessID, c devops.Chunk) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f.summary {
		return nil
	}
	if p.f.output == "json" {
		out := jsonChunk{Worker: p.label(id), ProcessID: string(id), Stream: c.Stream.String(), Offset: c.Offset, Timestamp: time.Now().UTC()}
		if utf8.Valid(c.Data) {
			out.Data = string(c.Data)
		} else {
			out.DataBase64 = c.Data
		}
		return json.NewEncoder(p.env.Stdout).Encode(out)
	}
	bufs, ok := p.parts[id]
	if !ok {
		bufs = new([3]bytes.Buffer)
		p.parts[id] = bufs
	}
	// The chunk's whole lines are printed in one write: a write per line
	// was a system call per line, most of the CLI's time when workers
	// print much (4 million short lines from two workers: 5.4 s).
	part := &bufs[c.Stream%3]
	head := p.lineHeadLocked(id)
	out := p.lines[:0]
	data := c.Data
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		out = append(out, head...)
		out = append(out, part.Bytes()...)
		part.Reset()
		out = append(out, data[:i+1]...)
		data = data[i+1:]
	}
	// A line longer than maxLine is printed in pieces, each on a line of
	// its own with the head: else output with no newline (a binary, `\r`
	// progress) was held whole, and the CLI grew by all of it.
	for part.Len()+len(data) >= maxLine {
		n := maxLine - part.Len()
		out = append(out, head...)
		out = append(out, part.Bytes()...)
		part.Reset()
		out = append(out, data[:n]...)
		out = append(out, '\n')
		data = data[n:]
	}
	// An unfinished line waits for the rest.
	part.Write(data)
	p.lines = out
	return p.printLocked(id, c.Stream, out)
}

// maxLine is the longest line a fleet run's output prints whole.
const maxLine = 64 << 10

// lineHeadLocked is what goes in front of each line of id's output that
// arrives now: the time with --timestamps, and the worker's name unless the
// lines are kept for a --group block, which names it once, or --no-prefix.
func (p *runPrinter) lineHeadLocked(id devops.ProcessID) string {
	ts := ""
	if p.f.timestamps {
		ts = time.Now().Format("2006-01-02T15:04:05.000Z07:00") + " "
	}
	if p.f.grouped() || p.f.noPrefix {
		return ts
	}
	return ts + p.label(id) + ": "
}

// lineLocked prints or keeps one whole line (ending in a newline).
func (p *runPrinter) lineLocked(id devops.ProcessID, s devops.Stream, line []byte) error {
	return p.printLocked(id, s, append([]byte(p.lineHeadLocked(id)), line...))
}

// printLocked prints whole lines, each with its head, or keeps them for
// their --group block.
func (p *runPrinter) printLocked(id devops.ProcessID, s devops.Stream, lines []byte) error {
	if len(lines) == 0 {
		return nil
	}
	if p.f.grouped() {
		b, ok := p.blocks[id]
		if !ok {
			b = new([3]bytes.Buffer)
			p.blocks[id] = b
		}
		b[s%3].Write(lines)
		return nil
	}
	p.clearProgressLocked()
	_, err := p.dest(s).Write(lines)
	return err
}

func (p *runPrinter) process(pr devops.Process) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr.WorkerName != "" {
		p.names[pr.ID] = pr.WorkerName
	}
	if !pr.State.Terminal() {
		// Why a child waits (its worker unreachable), and when that is
		// over, as a single run says it; where its end would be told.
		if pr.Reason != p.said[pr.ID].reason && !p.f.summary && p.f.output != "json" {
			p.clearProgressLocked()
			p.said[pr.ID] = noteReason(p.env.Stderr, pr, p.said[pr.ID])
			p.progressLocked()
		}
		return nil
	}
	if p.ended[pr.ID] {
		return nil
	}
	p.ended[pr.ID] = true
	if err := p.outputEndLocked(pr); err != nil {
		return err
	}
	if _, again := p.retried[pr.ID]; again {
		p.announceLocked(pr.ID)
	} else if p.mayRetryLocked(pr) {
		p.held[pr.ID] = pr // the next record of the run tells
	} else {
		p.finalLocked(pr)
	}
	return nil
}

// outputEndLocked ends a child's output: its JSON end object, its
// unfinished lines, its --group block.
func (p *runPrinter) outputEndLocked(pr devops.Process) error {
	if p.f.summary {
		return nil
	}
	if p.f.output == "json" {
		attempt := 0
		if p.latest.Options.Retries > 0 {
			attempt = p.attempts[pr.ID]
		}
		return json.NewEncoder(p.env.Stdout).Encode(jsonEnd{Worker: p.label(pr.ID), ProcessID: string(pr.ID), State: pr.State.String(),
			ExitCode: pr.ExitCode(), Reason: pr.Reason, Attempt: attempt})
	}
	// The unfinished lines of a process that ended are whole lines now.
	if bufs, ok := p.parts[pr.ID]; ok {
		for s := range bufs {
			if bufs[s].Len() > 0 {
				line := append(bufs[s].Bytes(), '\n')
				bufs[s].Reset()
				if err := p.lineLocked(pr.ID, devops.Stream(s), line); err != nil {
					return err
				}
			}
		}
	}
	if p.f.coalesce {
		p.coalesceLocked(pr)
		return nil
	}
	if p.f.grouped() {
		p.clearProgressLocked()
		fmt.Fprintf(p.env.Stdout, "==> %s: %s, exit %d <==\n", p.attemptLabel(pr.ID), pr.State, pr.ExitCode())
		if b, ok := p.blocks[pr.ID]; ok {
			p.env.Stdout.Write(b[devops.Stdout].Bytes())
			p.env.Stderr.Write(b[devops.Stderr].Bytes())
			delete(p.blocks, pr.ID)
		}
	}
	return nil
}

// sameBlock is the output and end that some workers share (--coalesce).
type sameBlock struct {
	state          devops.State
	code           int
	stdout, stderr []byte
	workers        []string
}

// coalesceLocked keeps an ended child's block with those it equals.
func (p *runPrinter) coalesceLocked(pr devops.Process) {
	var stdout, stderr []byte
	if b, ok := p.blocks[pr.ID]; ok {
		stdout, stderr = b[devops.Stdout].Bytes(), b[devops.Stderr].Bytes()
		delete(p.blocks, pr.ID)
	}
	for _, sb := range p.same {
		if sb.state == pr.State && sb.code == pr.ExitCode() && bytes.Equal(sb.stdout, stdout) && bytes.Equal(sb.stderr, stderr) {
			sb.workers = append(sb.workers, p.attemptLabel(pr.ID))
			return
		}
	}
	p.same = append(p.same, &sameBlock{state: pr.State, code: pr.ExitCode(), stdout: stdout, stderr: stderr, workers: []string{p.attemptLabel(pr.ID)}})
}

// printSameLocked prints the --coalesce blocks, the most shared first.
func (p *runPrinter) printSameLocked() {
	slices.SortStableFunc(p.same, func(a, b *sameBlock) int { return len(b.workers) - len(a.workers) })
	for _, sb := range p.same {
		fmt.Fprintf(p.env.Stdout, "==> %s (%d): %s, exit %d <==\n", compressWorkers(sb.workers), len(sb.workers), sb.state, sb.code)
		p.env.Stdout.Write(sb.stdout)
		p.env.Stderr.Write(sb.stderr)
	}
	p.same = nil
}

// finalLocked counts a child's end as its worker's last and says what the
// exit code alone does not.
func (p *runPrinter) finalLocked(pr devops.Process) {
	p.done++
	if pr.State != devops.StateSucceeded {
		p.failed++
	}
	if msg := endMessage(pr, true); msg != "" && !p.f.summary && p.f.output != "json" {
		p.clearProgressLocked()
		fmt.Fprintln(p.env.Stderr, "devops:", msg)
	}
	p.progressLocked()
}

// progressLocked redraws the progress line on a terminal.
func (p *runPrinter) progressLocked() {
	if !p.env.IsTerminal || p.f.output == "json" {
		return
	}
	rate := float64(p.done) / max(time.Since(p.start).Seconds(), 0.001)
	fmt.Fprintf(p.env.Stderr, "\r\x1b[K%d/%d done, %d failed, %.1f/s", p.done, p.total, p.failed, rate)
	p.progress = true
}

func (p *runPrinter) clearProgressLocked() {
	if p.progress {
		fmt.Fprint(p.env.Stderr, "\r\x1b[K")
		p.progress = false
	}
}

// end prints what is left: the ends of children held back, unfinished lines
// of children that did not end.
func (p *runPrinter) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, pr := range p.held {
		delete(p.held, id)
		p.finalLocked(pr)
	}
	p.clearProgressLocked()
	if p.f.output == "json" || p.f.summary {
		return
	}
	for id, bufs := range p.parts {
		for s := range bufs {
			if bufs[s].Len() > 0 {
				line := append(bufs[s].Bytes(), '\n')
				bufs[s].Reset()
				p.lineLocked(id, devops.Stream(s), line)
			}
		}
	}
	if p.f.coalesce {
		p.printSameLocked()
	}
}

func newRunsCmd(env *Env, g *globals) *cobra.Command {
	var output string
	var last int
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "List fleet runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkLimit(last); err != nil {
				return err
			}
			return g.call(func(c *client.Client) error {
				rs, err := c.RecentFleetRuns(cmd.Context(), last)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSONList(env.Stdout, convertAll(rs, wire.RunToPB))
				}
				tw := newTable(env.Stdout, 2)
				fmt.Fprintln(tw, "ID\tSTATE\tTARGET\tDONE\tFAILED\tSKIPPED\tCREATED\tCOMMAND")
				for _, r := range rs {
					s := r.Summary
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\t%s\n", r.ID, r.State, r.Target, s.Succeeded+s.Failed, s.Total,
						s.Failed, s.Skipped, timeText(r.CreatedAt), commandText(r.Spec.Argv, 50))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().IntVarP(&last, "limit", "n", 0, "only the most recent this many (0: all the manager keeps)")
	return cmd
}

func newRunStatusCmd(env *Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "run-status RUN_ID",
		Short: "Show a fleet run: its options, its targets and their children, and its summary",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !devops.IsRunID(args[0]) {
				return fmt.Errorf("%w: %s is not a fleet run (run-…): see devops status %s", devops.ErrInvalid, args[0], args[0])
			}
			return g.call(func(c *client.Client) error {
				r, err := c.FleetRun(cmd.Context(), devops.RunID(args[0]))
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(env.Stdout, wire.RunToPB(r))
				}
				tw := newTable(env.Stdout, 1)
				row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
				row("ID", string(r.ID))
				row("State", r.State.String())
				if r.Reason != "" {
					row("Reason", r.Reason)
				}
				row("Command", commandText(r.Spec.Argv, 0))
				if r.Spec.StdinBytes > 0 {
					row("Stdin", fmt.Sprintf("%d bytes", r.Spec.StdinBytes))
				}
				row("Target", r.Target.String())
				o := r.Options
				row("Options", fmt.Sprintf("max-concurrency %s, max-errors %s, stop-on-error %s, canary %d, pause-after-canary %t, retries %d",
					o.MaxConcurrency, o.MaxErrors, o.StopOnError, o.Canary, o.PauseAfterCanary, o.Retries))
				row("Created", timeText(r.CreatedAt))
				row("Ended", timeText(r.EndedAt))
				tw.Flush()
				fmt.Fprintln(env.Stdout)
				printRunSummary(env.Stdout, r)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newRunResumeCmd(env *Env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "run-resume RUN_ID",
		Short: "Continue a fleet run paused after its canary",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c *client.Client) error {
				r, err := c.ResumeRun(cmd.Context(), devops.RunID(args[0]))
				if err != nil {
					return err
				}
				// The run goes on a moment after the answer, which still
				// reads PAUSED: say what the resume did, not that.
				switch {
				case r.State.Terminal():
					fmt.Fprintf(env.Stdout, "%s: nothing to resume: it ended %s\n", r.ID, r.State)
				case r.State == devops.RunPaused || r.Resumed && r.Options.PauseAfterCanary:
					fmt.Fprintf(env.Stdout, "%s: resumed; its other targets start now (devops logs -f %s follows them)\n", r.ID, r.ID)
				default:
					fmt.Fprintf(env.Stdout, "%s: nothing to resume: it is %s, not paused\n", r.ID, r.State)
				}
				return nil
			})
		},
	}
}

// killRun cancels a fleet run: `devops kill RUN_ID`.
func killRun(ctx context.Context, env *Env, c *client.Client, id devops.RunID, sig syscall.Signal, grace time.Duration) error {
	r, err := c.CancelRun(ctx, id, sig, grace)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s: cancelling (%d running, %d pending will not start)\n", r.ID, r.Summary.Running, r.Summary.Pending)
	return nil
}

// logsRun prints a fleet run's output with worker prefixes and, with
// follow, re-attaches until it ends: `devops logs [-f] RUN_ID`.
func logsRun(ctx context.Context, env *Env, c *client.Client, id devops.RunID, follow bool) error {
	quiet := *env
	quiet.Interrupt = nil // Ctrl-C stops following; the run goes on
	return followRun(ctx, c, id, follow, &fleetFlags{output: "text"}, &quiet)
}

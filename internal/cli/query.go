package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/wire"
)

func newPsCmd(env *Env, g *globals) *cobra.Command {
	var stateName, worker, output string
	var last int
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List processes",
		Example: `  devops ps
  devops ps --state RUNNING --worker w1
  devops ps -n 20
  devops ps -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkLimit(last); err != nil {
				return err
			}
			var state devops.State
			if stateName != "" {
				var err error
				if state, err = devops.ParseState(stateName); err != nil {
					return err
				}
			}
			return g.call(func(c *client.Client) error {
				ps, err := c.RecentProcesses(cmd.Context(), state, worker, last)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSONList(env.Stdout, convertAll(ps, wire.ProcessToPB))
				}
				tw := newTable(env.Stdout, 2)
				fmt.Fprintln(tw, "ID\tWORKER\tSTATE\tEXIT\tSTARTED\tDURATION\tCOMMAND")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, dash(p.WorkerName), p.State, exitText(p),
						timeText(p.StartedAt), durationText(p), commandText(p.Spec.Argv, 60))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&stateName, "state", "", "only processes in this state (PENDING, RUNNING, SUCCEEDED, FAILED, TERMINATED, TIMED_OUT, LOST, DISCONNECTED)")
	cmd.Flags().StringVar(&worker, "worker", "", "only processes on this worker (name or id)")
	cmd.Flags().IntVarP(&last, "limit", "n", 0, "only the most recent this many (0: all the manager keeps)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newStatusCmd(env *Env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show a process's status",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if devops.IsRunID(args[0]) {
				return fmt.Errorf("%w: %s is a fleet run: see devops run-status %s", devops.ErrInvalid, args[0], args[0])
			}
			return g.call(func(c *client.Client) error {
				p, err := c.Status(cmd.Context(), devops.ProcessID(args[0]))
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(env.Stdout, wire.ProcessToPB(p))
				}
				printStatus(env.Stdout, p)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func printStatus(w io.Writer, p devops.Process) {
	tw := newTable(w, 1)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("ID", string(p.ID))
	row("State", p.State.String())
	row("Worker", fmt.Sprintf("%s (%s)", dash(p.WorkerName), dash(string(p.WorkerID))))
	row("Command", commandText(p.Spec.Argv, 0))
	if p.Spec.StdinBytes > 0 {
		row("Stdin", fmt.Sprintf("%d bytes", p.Spec.StdinBytes))
	}
	row("Exit code", exitText(p))
	if p.Signal != 0 {
		row("Signal", fmt.Sprintf("%d (%s)", p.Signal, devops.SignalName(syscall.Signal(p.Signal))))
	}
	if p.Reason != "" {
		row("Reason", p.Reason)
	}
	row("Created", timeText(p.CreatedAt))
	row("Started", timeText(p.StartedAt))
	row("Ended", timeText(p.EndedAt))
	row("Duration", durationText(p))
	row("Output", fmt.Sprintf("%d bytes", p.OutputBytes))
	if p.OutputLost > 0 {
		row("Output lost", fmt.Sprintf("%d bytes: the worker's spool was full while the manager was unreachable", p.OutputLost))
	}
	if p.PeakMemory > 0 {
		row("Peak memory", sizeText(uint64(p.PeakMemory)))
	}
	if p.CPUTime > 0 {
		row("CPU time", p.CPUTime.Round(time.Millisecond).String())
	}
	tw.Flush()
}

func newLogsCmd(env *Env, g *globals) *cobra.Command {
	var follow bool
	var from int64
	var tail int
	cmd := &cobra.Command{
		Use:   "logs [-f] [--from OFFSET | --tail N] ID|RUN_ID",
		Short: "Print a process's output, from any offset, and follow it",
		Long: `Print a process's output: stdout to stdout, stderr to stderr. Offsets count the
bytes of both streams together, so --from resumes exactly where a reader stopped.
With -f it follows the output until the process ends and exits with its exit code,
and says on stderr why the process waits (its worker unreachable) and when that is over.
--tail N starts at the last N lines instead (of both streams together).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tailing := cmd.Flags().Changed("tail")
			if tailing && (tail < 0 || cmd.Flags().Changed("from")) {
				return fmt.Errorf("%w: --tail %d: want 0 or more lines, and no --from", devops.ErrInvalid, tail)
			}
			return g.call(func(c *client.Client) error {
				if devops.IsRunID(args[0]) {
					if tailing {
						return fmt.Errorf("%w: --tail is for a process id; a run's children each have their own: devops run-status %s lists them", devops.ErrInvalid, args[0])
					}
					return logsRun(cmd.Context(), env, c, devops.RunID(args[0]), follow)
				}
				if tailing {
					var err error
					if from, err = tailStart(cmd.Context(), c, devops.ProcessID(args[0]), tail); err != nil {
						return err
					}
				}
				var final *devops.Process
				var said note
				err := c.Logs(cmd.Context(), devops.ProcessID(args[0]), from, follow, func(ev client.Event) error {
					if ev.Chunk != nil {
						lostNote(env.Stderr, ev.ID, ev.Lost)
						w := env.Stdout
						if ev.Chunk.Stream == devops.Stderr {
							w = env.Stderr
						}
						_, err := w.Write(ev.Chunk.Data)
						return err
					}
					final = ev.Process
					if !final.State.Terminal() {
						said = noteReason(env.Stderr, *final, said)
					}
					return nil
				})
				if err != nil {
					if follow && cmd.Context().Err() != nil {
						return &exitError{code: 130, msg: "stopped following; the process goes on"}
					}
					return err
				}
				if follow && final != nil && final.State.Terminal() {
					if msg := endMessage(*final, false); msg != "" {
						fmt.Fprintln(env.Stderr, "devops:", msg)
					}
					if code := final.ExitCode(); code != 0 {
						return &exitError{code: code}
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the process ends")
	cmd.Flags().Int64Var(&from, "from", 0, "start at this byte offset")
	cmd.Flags().IntVarP(&tail, "tail", "n", 0, "start at the last N lines")
	return cmd
}

// tailBack is how far back --tail reads at most: past it a line too long
// to reach the start of is printed from there.
const tailBack = 64 << 20

// tailStart finds the offset at which the last n lines of id's output
// start: it reads back from the end, a window four times larger each time,
// until the window holds n newlines before the last line.
func tailStart(ctx context.Context, c *client.Client, id devops.ProcessID, n int) (int64, error) {
	p, err := c.Status(ctx, id)
	if err != nil {
		return 0, err
	}
	end := p.OutputBytes
	for window := int64(64 << 10); ; window *= 4 {
		from := max(0, end-min(window, tailBack))
		var chunks []devops.Chunk
		err := c.Logs(ctx, id, from, false, func(ev client.Event) error {
			if ev.Chunk != nil && ev.Chunk.Offset < end {
				chunks = append(chunks, *ev.Chunk)
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		if start, ok := lastLines(chunks, end, n); ok || from == 0 || window >= tailBack {
			return start, nil
		}
	}
}

// lastLines finds where the last n lines of chunks (which end at end)
// start: after the nth newline from the end, a newline that ends the
// output not counted (an unfinished last line is a line). ok is false when
// the chunks hold fewer lines; start is then where they begin.
func lastLines(chunks []devops.Chunk, end int64, n int) (start int64, ok bool) {
	if len(chunks) == 0 || n == 0 {
		return end, true
	}
	seen := 0
	for i := len(chunks) - 1; i >= 0; i-- {
		ch := chunks[i]
		data := ch.Data[:min(int64(len(ch.Data)), end-ch.Offset)]
		for j := len(data) - 1; j >= 0; j-- {
			if data[j] != '\n' || ch.Offset+int64(j) == end-1 {
				continue
			}
			if seen++; seen == n {
				return ch.Offset + int64(j) + 1, true
			}
		}
	}
	return chunks[0].Offset, false
}

func newKillCmd(env *Env, g *globals) *cobra.Command {
	var sigName string
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "kill [--signal TERM] [--grace 10s] ID|RUN_ID",
		Short: "Terminate a process and every process it started",
		Long: `Send a signal to the process's whole process group, then SIGKILL after the grace
period: no child survives.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig, err := devops.ParseSignal(sigName)
			if err != nil {
				return err
			}
			return g.call(func(c *client.Client) error {
				if devops.IsRunID(args[0]) {
					return killRun(cmd.Context(), env, c, devops.RunID(args[0]), sig, grace)
				}
				p, err := c.Terminate(cmd.Context(), devops.ProcessID(args[0]), sig, grace)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "%s: %s sent (was %s)\n", p.ID, devops.SignalName(sig), p.State)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&sigName, "signal", "s", "TERM", "signal name or Linux number")
	cmd.Flags().DurationVar(&grace, "grace", devops.DefaultGrace, "time before SIGKILL")
	return cmd
}

func newWorkersCmd(env *Env, g *globals) *cobra.Command {
	var output string
	var watch bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "List workers with their state, load and capacity",
		Example: `  devops workers
  devops workers -o wide
  devops workers --watch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c *client.Client) error {
				for {
					ws, err := c.Workers(cmd.Context())
					if err != nil && watch && isUnreachable(err) && cmd.Context().Err() == nil {
						// A restart of the manager does not end a watch.
						fmt.Fprintf(env.Stderr, "devops: %s; trying again in %v\n", describe(err), every)
						select {
						case <-cmd.Context().Done():
							return nil
						case <-time.After(every):
						}
						continue
					}
					if err != nil {
						return err
					}
					if watch && env.IsTerminal {
						fmt.Fprint(env.Stdout, "\x1b[H\x1b[2J") // home and clear: redraw in place
					}
					switch output {
					case "json":
						if err := writeJSONList(env.Stdout, convertAll(ws, wire.WorkerToPB)); err != nil {
							return err
						}
					case "table", "wide":
						printWorkers(env.Stdout, ws, output == "wide")
					default:
						return fmt.Errorf("%w: -o %q: want table, wide or json", devops.ErrInvalid, output)
					}
					if !watch {
						return nil
					}
					select {
					case <-cmd.Context().Done():
						return nil
					case <-time.After(every):
					}
				}
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, wide or json")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh the table until interrupted")
	cmd.Flags().DurationVar(&every, "interval", 2*time.Second, "refresh interval with --watch")
	return cmd
}

func printWorkers(w io.Writer, ws []devops.Worker, wide bool) {
	tw := newTable(w, 2)
	head := "NAME\tID\tADDRESS\tLABELS\tSTATE\tRUNNING\tCPU\tMEMORY\tDISK FREE\tLAST SEEN"
	if wide {
		head += "\tOS/ARCH\tCPUS\tCGROUPS\tNAMESPACES\tRUN-AS\tDOCKER\tVERSION"
	}
	fmt.Fprintln(tw, head)
	for _, x := range ws {
		m := x.Metrics
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s", x.Name, shortID(string(x.ID)), x.Address, labelsText(x.Labels), x.State,
			x.Running, x.Capacity, percentText(m), memoryText(m), diskText(m), agoText(x.LastSeen))
		if wide {
			f := x.Fingerprint
			line += fmt.Sprintf("\t%s/%s\t%d\t%s\t%t\t%t\t%t\t%s", dash(f.OS), dash(f.Arch), f.CPUs, dash(f.Cgroups), f.Namespaces, f.RunAs, f.Docker, dash(x.Version))
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortID(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

func labelsText(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

func exitText(p devops.Process) string {
	if !p.State.Terminal() {
		return "-"
	}
	return strconv.Itoa(p.ExitCode())
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func durationText(p devops.Process) string {
	if p.StartedAt.IsZero() {
		return "-"
	}
	end := p.EndedAt
	if end.IsZero() {
		end = time.Now()
	}
	return end.Sub(p.StartedAt).Round(time.Millisecond).String()
}

func agoText(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func commandText(argv []string, limit int) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`|&;<>()*?") {
			a = strconv.Quote(a)
		}
		quoted[i] = a
	}
	s := strings.Join(quoted, " ")
	if limit > 0 && len(s) > limit {
		s = s[:limit-3] + "..."
	}
	return s
}

func percentText(m devops.Metrics) string {
	if m.Time.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", m.CPUPercent)
}

func memoryText(m devops.Metrics) string {
	if m.MemoryTotalBytes == 0 {
		return "-"
	}
	return sizeText(m.MemoryUsedBytes) + "/" + sizeText(m.MemoryTotalBytes)
}

func diskText(m devops.Metrics) string {
	if m.DiskFreeBytes == 0 && m.DiskUsedBytes == 0 {
		return "-"
	}
	return sizeText(m.DiskFreeBytes)
}

func sizeText(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ci", float64(b)/float64(div), "KMGTPE"[exp])
}

func newDrainCmd(env *Env, g *globals) *cobra.Command {
	var undo bool
	cmd := &cobra.Command{
		Use:   "drain [--undo] WORKER",
		Short: "Stop new work for a worker; it leaves once its processes finish",
		Long: `Drain a worker: the scheduler stops choosing it and it refuses new work; its
running processes finish, then it deregisters and exits. SIGTERM to a worker
does the same. --undo brings a draining worker back.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c *client.Client) error {
				w, err := c.Drain(cmd.Context(), args[0], undo)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "%s: %s (%d running)\n", w.Name, w.State, w.Running)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&undo, "undo", false, "take work again")
	return cmd
}

// table lines text up in columns, as tabwriter does, and hands it to its
// writer in large writes: tabwriter writes every cell and every run of
// padding on its own, a system call each on a terminal or a pipe, and a
// table of 10,000 workers made over 200,000 of them.
type table struct {
	*tabwriter.Writer
	out *bufio.Writer
}

// newTable writes to w with padding spaces between columns.
func newTable(w io.Writer, padding int) *table {
	out := bufio.NewWriterSize(w, 64<<10)
	return &table{Writer: tabwriter.NewWriter(out, 0, 4, padding, ' ', 0), out: out}
}

// Flush ends the table's rows and writes them.
func (t *table) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	return t.out.Flush()
}

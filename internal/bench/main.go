//go:build linux

// Command bench measures DevOps Platform against what it replaces, on this
// machine, in one run: dispatch latency, CLI round trip, throughput, output
// bandwidth, a stalled follower, fan-out, scale and failure detection, each
// beside its baseline (local os/exec, ssh, pdsh, Ansible) measured in the
// same run, interleaved round by round. `make bench` runs it; `make bench
// QUICK=1` runs a short version. It writes results.json and results.md.
//
// The manager and the workers are real processes of bin/devops on loopback
// addresses, not goroutines in this program: their RSS and CPU time are
// read from /proc and are theirs alone, and the bench's own work (the
// client, the simulated workers) does not share their heap or scheduler.
// With -pprof the manager is this program re-run as a manager (the same
// internal/manager code) with net/http/pprof, for profiling.
//
// It is a program, not a library: it imports internal packages only to
// speak the API.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-gen-lines" {
		n, _ := strconv.Atoi(os.Args[2])
		os.Exit(genLinesMain(n))
	}
	if len(os.Args) > 1 && os.Args[1] == "-sim-workers" {
		os.Exit(simMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "-as-manager" {
		os.Exit(managerMain(os.Args[2:]))
	}
	os.Exit(run())
}

// bench holds what the scenarios share.
type bench struct {
	bin     string // bin/devops
	self    string // this program
	out     string // results directory
	tmp     string
	quick   bool
	pprof   bool
	tls     bool // the clusters run TLS, as the product does by default
	sz      sizes
	c       *cluster // the main cluster: manager and workers main-1, main-2
	ssh     *sshd    // nil when unavailable
	missing map[string]string
	logf    func(string, ...any)
}

func run() int {
	quick := flag.Bool("quick", false, "short run: smaller sizes, fewer repetitions (under 2 minutes)")
	bin := flag.String("devops", "bin/devops", "the devops binary")
	out := flag.String("out", "bench", "where results.json and results.md go")
	prof := flag.Bool("pprof", false, "run the manager with pprof and save CPU and heap profiles of the hot scenarios in <out>/profiles")
	only := flag.String("only", "", "comma-separated scenarios to run (dispatch,cli,throughput,bandwidth,stdin,stalled,idle,fanout,failure,scale); empty: all")
	keep := flag.Bool("keep", false, "keep the temporary directory (logs of the manager, workers and sshd)")
	install := flag.Bool("install", true, "install missing baselines with apt-get (never in -quick mode)")
	plain := flag.Bool("insecure", false, "run the clusters with --insecure (plaintext, no tokens), as the runs before session 24 did; by default they run TLS, as the product does")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	started := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench %5.1fs: %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
	}
	raiseFileLimit(logf)

	b := &bench{quick: *quick, pprof: *prof, tls: !*plain, out: *out, logf: logf, sz: fullSizes}
	if b.quick {
		b.sz = quickSizes
	}
	var err error
	if b.bin, err = filepath.Abs(*bin); err != nil {
		logf("%v", err)
		return 1
	}
	if _, err := os.Stat(b.bin); err != nil {
		logf("devops binary: %v (run `make build`)", err)
		return 1
	}
	if b.self, err = os.Executable(); err != nil {
		logf("%v", err)
		return 1
	}
	if b.tmp, err = os.MkdirTemp("", "devops-bench-"); err != nil {
		logf("%v", err)
		return 1
	}
	defer func() {
		if *keep {
			logf("kept %s", b.tmp)
			return
		}
		os.RemoveAll(b.tmp)
	}()

	cmdline := "make bench"
	if b.quick {
		cmdline = "make bench QUICK=1"
	}
	res := &Results{Started: started, Quick: b.quick, Command: cmdline, Env: environment(b.bin)}
	res.Env.Storage = describeStorage(b.tmp)

	b.missing = installMissing(ctx, *install && !b.quick, logf)
	hosts := []string{"127.0.0.1"}
	most := 0
	for _, n := range b.sz.fanout {
		most = max(most, n)
	}
	for i := range most {
		hosts = append(hosts, loopbackIP(i))
	}
	var sshErr error
	if b.ssh, sshErr = startSSHD(ctx, filepath.Join(b.tmp, "ssh"), hosts); sshErr != nil {
		logf("ssh baseline unavailable: %v", sshErr)
		b.ssh = nil
	} else {
		defer b.ssh.stop()
	}
	res.Baselines = b.baselines(sshErr)

	want := map[string]bool{}
	for s := range strings.SplitSeq(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	type scenario struct {
		num  int
		name string
		run  func(context.Context) ([]Row, error)
	}
	mainScenarios := []scenario{
		{1, "dispatch", b.dispatch}, {2, "cli", b.cli}, {3, "throughput", b.throughput}, {4, "bandwidth", b.bandwidth}, {4, "stdin", b.stdin},
		{5, "stalled", b.stalled}, {7, "idle", b.idleSessions}, {6, "fanout", b.fanout}, {8, "failure", b.failure},
	}
	runScenario := func(s scenario, limit time.Duration) {
		if len(want) > 0 && !want[s.name] {
			return
		}
		logf("scenario %s", s.name)
		sctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		t := time.Now()
		rows, err := s.run(sctx)
		if err != nil {
			logf("scenario %s: %v", s.name, err)
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", s.name, err))
			rows = append(rows, Row{Scenario: fmt.Sprintf("%d. %s", s.num, s.name), Goal: "—", Met: "n/a", Note: "error: " + err.Error()})
		}
		logf("scenario %s took %.1fs", s.name, time.Since(t).Seconds())
		res.Rows = append(res.Rows, rows...)
	}

	if b.c, err = b.newCluster(ctx, "main", "warn"); err != nil {
		logf("start cluster: %v", err)
		return 1
	}
	for i := 1; i <= 2; i++ {
		if _, err := b.c.addWorker(fmt.Sprintf("main-%d", i), "127.0.0.1", "role=main"); err != nil {
			logf("start worker: %v", err)
			b.c.close()
			return 1
		}
	}
	if err := b.c.waitState(ctx, 1, 30*time.Second, "main-1", "main-2"); err != nil {
		logf("%v", err)
		b.c.close()
		return 1
	}
	res.Env.TLS = b.c.tls
	res.Env.Processes = "manager and workers are separate processes of bin/devops"
	if b.pprof {
		res.Env.Processes = "manager is the bench binary re-run as a manager with pprof (-pprof); workers are bin/devops"
	}
	for _, s := range mainScenarios {
		if ctx.Err() != nil {
			break
		}
		limit := b.sz.scenarioLimit
		if !b.quick && (s.name == "bandwidth" || s.name == "fanout") {
			// 5 rounds of 2 GB through the system, or of Ansible on 32
			// hosts; on a slow day of this VM the whole run must still
			// end within 15 minutes (fan-out took 294 s on one).
			limit = 5 * time.Minute
		}
		runScenario(s, limit)
	}
	b.c.close()
	if ctx.Err() == nil {
		// Four windows of a minute each (no workers, then three sizes),
		// each after its workers joined and settled: ~5.5 minutes.
		runScenario(scenario{7, "scale", b.scale}, b.sz.scenarioLimit+3*time.Minute)
	}

	sortRows(res.Rows)
	res.Duration = time.Since(started).Round(time.Second).String()
	fmt.Println()
	if err := write(b.out, res, os.Stdout); err != nil {
		logf("%v", err)
		return 1
	}
	logf("wrote %s and %s", filepath.Join(b.out, "results.json"), filepath.Join(b.out, "results.md"))
	return 0
}

// newCluster starts a manager (bin/devops, or this program with -pprof) in
// a directory of its own, logging at logLevel.
func (b *bench) newCluster(ctx context.Context, name, logLevel string) (*cluster, error) {
	var argv []string
	pprofAddr := ""
	if b.pprof {
		port, err := freePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		pprofAddr = fmt.Sprintf("127.0.0.1:%d", port)
		argv = []string{b.self, "-as-manager", "-pprof-addr", pprofAddr}
	}
	return startCluster(ctx, b.bin, filepath.Join(b.tmp, name), argv, pprofAddr, b.tls, logLevel)
}

func (b *bench) available(pkg string) bool {
	_, missing := b.missing[pkg]
	if missing {
		return false
	}
	_, err := exec.LookPath(pkg)
	return err == nil
}

func (b *bench) baselines(sshErr error) []Baseline {
	out := []Baseline{{Name: "local os/exec", Available: true, Version: runtime.Version()}}
	ssh := Baseline{Name: "ssh (own sshd on 127.0.0.x:2222, key auth)"}
	if sshErr != nil {
		ssh.Reason = sshErr.Error()
		if r, ok := b.missing["openssh-server"]; ok {
			ssh.Reason = r
		}
	} else {
		ssh.Available, ssh.Version = true, b.ssh.version
	}
	out = append(out, ssh)
	for _, tool := range []struct{ pkg, flag string }{{"pdsh", "-V"}, {"ansible", "--version"}} {
		x := Baseline{Name: tool.pkg}
		switch {
		case b.missing[tool.pkg] != "":
			x.Reason = b.missing[tool.pkg]
		case sshErr != nil:
			x.Reason = "needs sshd: " + sshErr.Error()
		case !b.available(tool.pkg):
			x.Reason = "not found"
		default:
			x.Available, x.Version = true, toolVersion(tool.pkg, tool.flag)
		}
		out = append(out, x)
	}
	return out
}

// raiseFileLimit lifts the open-file limit, which the children inherit:
// the manager holds a connection per simulated worker (10,000 at most), and
// each simulated-worker process a listener and a connection for each of
// its 2,500. Raising the hard limit needs a privilege containers often
// drop; then the soft limit goes up to the hard one, and only a hard limit
// too low for the scale scenario is worth a word.
func raiseFileLimit(logf func(string, ...any)) {
	const want, need = 200_000, 12_000
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}) == nil {
		return
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		logf("read open-file limit: %v", err)
		return
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		logf("raise open-file limit to %d: %v", lim.Max, err)
	}
	if lim.Cur < need {
		logf("open-file limit %d: the scale scenario's 10,000 simulated workers need about %d", lim.Cur, need)
	}
}

// environment describes the machine and the software under test.
func environment(bin string) Environment {
	e := Environment{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				e.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%f", &kb)
		e.MemoryGiB = kb / (1 << 20)
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "google.golang.org/grpc" {
				e.GRPC = d.Version
			}
		}
	}
	if out, err := exec.Command(bin, "--version").Output(); err == nil {
		// It prints "devops version X"; the report names the binary itself.
		e.Devops = strings.TrimPrefix(strings.TrimSpace(string(out)), "devops version ")
	} else if out, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		e.Devops = strings.TrimSpace(string(out))
	}
	return e
}

//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/client"
)

// child is a process the bench started: the manager, a worker, sshd. It is
// killed (with its process group) by stop.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for
	err  error         // valid once done is closed
}

// startChild starts argv with its output in logPath, in its own process group.
func startChild(name, logPath string, argv ...string) (*child, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log of %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// signal sends sig to the child alone (not its group).
func (c *child) signal(sig syscall.Signal) error { return syscall.Kill(c.pid(), sig) }

// stop ends the child: SIGTERM, then SIGKILL to its group after grace.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	syscall.Kill(c.pid(), syscall.SIGCONT)
	syscall.Kill(c.pid(), syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.done
	}
}

// procStats is what /proc says about a process.
type procStats struct {
	CPU time.Duration // user + system time so far
	RSS int64         // resident set, bytes
}

// clkTck is USER_HZ, the unit of CPU times in /proc on Linux.
const clkTck = 100

// statFields returns the fields of /proc/PID/stat after the command name,
// which is in parentheses and may hold spaces: f[0] is field 3 (state),
// f[1] the parent's pid.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strings.Fields(s[i+1:]), nil
}

// readProc reads CPU time from /proc/PID/stat and RSS from /proc/PID/status.
func readProc(pid int) (procStats, error) {
	var st procStats
	f, err := statFields(pid)
	if err != nil {
		return st, err
	}
	if len(f) < 13 {
		return st, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	// utime is field 14, stime field 15.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	st.CPU = time.Duration(ut+stt) * time.Second / clkTck
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			st.RSS = kb << 10
		}
	}
	return st, nil
}

// rssSampler records the peak RSS of some processes until stopped.
type rssSampler struct {
	peak []int64
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(every time.Duration, pids ...int) *rssSampler {
	s := &rssSampler{peak: make([]int64, len(pids)), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			for i, pid := range pids {
				if st, err := readProc(pid); err == nil {
					s.peak[i] = max(s.peak[i], st.RSS)
				}
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// end stops sampling and returns the peak RSS of each process.
func (s *rssSampler) end() []int64 {
	close(s.stop)
	<-s.done
	return s.peak
}

// freePort returns a TCP port free on ip now.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// loopbackIP is the i-th address of the aliases the bench spreads workers
// over: 127.0.0.10 upwards, then 127.0.1.x and so on.
func loopbackIP(i int) string {
	n := 10 + i
	return fmt.Sprintf("127.0.%d.%d", n/250, n%250+1)
}

// cluster is a manager and the workers the bench started, as processes of
// a devops binary (bin/devops, or the bench itself as a profiling manager).
type cluster struct {
	bin     string // the devops binary for workers and the CLI
	dir     string
	addr    string // the manager's gRPC address
	pprof   string // the profiling manager's HTTP address; "" without -pprof
	manager *child
	workers map[string]*worker
	client  *client.Client
	seq     int
	// workerHTTP is whether the worker has an HTTP server (--http): each
	// gets one on its own address, for its metrics.
	workerHTTP bool
	// tls is whether the cluster runs as the product does by default:
	// the manager serves TLS with the CA, admin token and join token it
	// makes in its data dir, the workers join with that join token, and
	// clients trust that CA and send the admin token. Off with -insecure,
	// or with a binary that predates TLS (no --insecure flag).
	tls bool
	// managerFlags, workerFlags and clientFlags say so on the command
	// lines of the manager, the workers and the CLI.
	managerFlags, workerFlags, clientFlags []string
	// caFile, joinFile and tokenFile are the manager's CA certificate, join
	// token (for the simulated workers) and admin token (for the clients);
	// empty without TLS.
	caFile, joinFile, tokenFile string
}

type worker struct {
	name, addr, dir, labels string
	http                    string // its /metrics address; "" when it has none
	proc                    *child
}

// startCluster starts a manager; managerArgv, when set, is the command that
// runs it instead of `bin manager` (the bench's own profiling manager).
// With useTLS it runs the manager as the product does by default (see
// cluster.tls). The manager logs at logLevel.
func startCluster(ctx context.Context, bin, dir string, managerArgv []string, pprofAddr string, useTLS bool, logLevel string) (*cluster, error) {
	port, err := freePort("127.0.0.1")
	if err != nil {
		return nil, fmt.Errorf("pick manager port: %w", err)
	}
	c := &cluster{bin: bin, dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", port), workers: map[string]*worker{}, pprof: pprofAddr}
	if out, _ := exec.Command(bin, "--help").CombinedOutput(); strings.Contains(string(out), "--insecure") {
		c.tls = useTLS
		if !useTLS {
			c.managerFlags = []string{"--insecure"}
			c.workerFlags, c.clientFlags = c.managerFlags, c.managerFlags
		}
	}
	managerDir := filepath.Join(dir, "manager")
	if c.tls {
		c.caFile, c.joinFile = filepath.Join(managerDir, "ca.crt"), filepath.Join(managerDir, "join.token")
		c.tokenFile = filepath.Join(managerDir, "admin.token")
		c.workerFlags = []string{"--join-token-file", c.joinFile}
		c.clientFlags = []string{"--ca", c.caFile, "--token-file", c.tokenFile}
	}
	if out, _ := exec.Command(bin, "worker", "--help").CombinedOutput(); strings.Contains(string(out), "--http ") {
		c.workerHTTP = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	argv := append([]string{bin, "manager"}, managerArgv...)
	if len(managerArgv) > 0 && !strings.HasPrefix(managerArgv[0], "-") {
		argv = managerArgv
	}
	argv = append(argv, "--listen", c.addr, "--http", "-", "--data-dir", managerDir, "--log-level", logLevel)
	// The profiling manager (-pprof) takes the same two flags.
	argv = append(argv, c.managerFlags...)
	// The bench is one client sending as fast as it can: the per-client
	// rate limit on runs would measure the limit, not the system.
	if out, _ := exec.Command(bin, "manager", "--help").CombinedOutput(); strings.Contains(string(out), "--run-rate") {
		argv = append(argv, "--run-rate", "-1")
	}
	if c.manager, err = startChild("manager", filepath.Join(dir, "manager.log"), argv...); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	if c.tls {
		// The manager writes its CA and tokens before it serves.
		if err := c.waitFiles(ctx, deadline, c.caFile, c.joinFile, c.tokenFile); err != nil {
			c.close()
			return nil, err
		}
	}
	if c.client, err = c.dial(); err != nil {
		c.close()
		return nil, err
	}
	c.client.Reconnect = 5 * time.Second
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.client.Workers(cctx)
		cancel()
		if err == nil {
			return c, nil
		}
		select {
		case <-c.manager.done:
			c.close()
			return nil, fmt.Errorf("manager exited: %v (see %s)", c.manager.err, filepath.Join(dir, "manager.log"))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.close()
			return nil, fmt.Errorf("manager not answering: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFiles waits until every path exists, or the manager exits.
func (c *cluster) waitFiles(ctx context.Context, deadline time.Time, paths ...string) error {
	for _, p := range paths {
		for {
			if _, err := os.Stat(p); err == nil {
				break
			}
			select {
			case <-c.manager.done:
				return fmt.Errorf("manager exited: %v (see %s)", c.manager.err, filepath.Join(c.dir, "manager.log"))
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the manager wrote no %s", p)
			}
		}
	}
	return nil
}

// dial is a client of the manager, as the CLI is (TLS and the admin
// token, or plaintext).
func (c *cluster) dial() (*client.Client, error) {
	if !c.tls {
		return client.Dial(c.addr)
	}
	cfg, err := client.TLSConfig(c.caFile)
	if err != nil {
		return nil, err
	}
	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("read admin token: %w", err)
	}
	return client.Dial(c.addr, client.WithTLS(cfg), client.WithToken(string(token)))
}

// addWorker starts a worker process named name listening on ip; it does
// not wait for it to be UP (see waitUp).
func (c *cluster) addWorker(name, ip, labels string) (*worker, error) {
	port, err := freePort(ip)
	if err != nil {
		return nil, fmt.Errorf("pick port on %s: %w", ip, err)
	}
	w := &worker{name: name, addr: fmt.Sprintf("%s:%d", ip, port), dir: filepath.Join(c.dir, "w-"+name), labels: labels}
	if c.workerHTTP {
		hp, err := freePort(ip)
		if err != nil {
			return nil, fmt.Errorf("pick HTTP port on %s: %w", ip, err)
		}
		w.http = fmt.Sprintf("%s:%d", ip, hp)
	}
	if err := c.startWorker(w); err != nil {
		return nil, err
	}
	c.workers[name] = w
	return w, nil
}

func (c *cluster) startWorker(w *worker) error {
	c.seq++
	argv := []string{c.bin, "worker", "--manager", c.addr, "--name", w.name, "--listen", w.addr,
		"--data-dir", w.dir, "--capacity", "64", "--log-level", "warn"}
	argv = append(argv, c.workerFlags...)
	if w.http != "" {
		argv = append(argv, "--http", w.http)
	}
	if w.labels != "" {
		argv = append(argv, "--labels", w.labels)
	}
	var err error
	w.proc, err = startChild("worker "+w.name, filepath.Join(c.dir, fmt.Sprintf("worker-%s-%d.log", w.name, c.seq)), argv...)
	return err
}

// starts adds up, over the workers, the processes they started and those a
// shim of their warm pool started (their devops_worker_* counters); ok is
// false when a worker does not tell (no HTTP, or a binary without them).
func (c *cluster) starts(ctx context.Context) (total, warm float64, ok bool) {
	for _, w := range c.workers {
		m, found := workerMetrics(ctx, w.http)
		t, okTotal := m["devops_worker_processes_started_total"]
		wm, okWarm := m["devops_worker_warm_starts_total"]
		if !found || !okTotal || !okWarm {
			return 0, 0, false
		}
		total, warm = total+t, warm+wm
	}
	return total, warm, true
}

// startTally adds up the workers' starts over spans (from mark to add), and
// how many of them a shim of a warm pool served.
type startTally struct {
	starts, warm  float64
	total0, warm0 float64 // at the last mark
	unknown       bool    // a worker did not tell, once
}

func (t *startTally) mark(ctx context.Context, c *cluster) {
	var ok bool
	t.total0, t.warm0, ok = c.starts(ctx)
	t.unknown = t.unknown || !ok
}

func (t *startTally) add(ctx context.Context, c *cluster) {
	total, warm, ok := c.starts(ctx)
	t.unknown = t.unknown || !ok
	t.starts += total - t.total0
	t.warm += warm - t.warm0
}

// note is " (W of N starts <by>)" for a row's name, or "" when unknown.
func (t *startTally) note(by string) string {
	if t.unknown || t.starts == 0 {
		return ""
	}
	return fmt.Sprintf(" (%.0f of %.0f starts %s)", t.warm, t.starts, by)
}

// warmPoolsFull reports whether every worker has n warm shims idle (its
// devops_worker_warm_shims_idle gauge); ok is false when one does not tell.
func (c *cluster) warmPoolsFull(ctx context.Context, n int) (full, ok bool) {
	full = true
	for _, w := range c.workers {
		m, found := workerMetrics(ctx, w.http)
		idle, okIdle := m["devops_worker_warm_shims_idle"]
		if !found || !okIdle {
			return false, false
		}
		full = full && idle >= float64(n)
	}
	return full, true
}

// workerMetrics reads the counters and gauges of one sample each (no
// labels) from a worker's /metrics; false when it does not serve them.
func workerMetrics(ctx context.Context, addr string) (map[string]float64, bool) {
	if addr == "" {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, false
	}
	values := map[string]float64{}
	for name, f := range families {
		ms := f.GetMetric()
		if len(ms) != 1 {
			continue
		}
		switch {
		case ms[0].GetCounter() != nil:
			values[name] = ms[0].GetCounter().GetValue()
		case ms[0].GetGauge() != nil:
			values[name] = ms[0].GetGauge().GetValue()
		}
	}
	return values, true
}

// restart starts a worker again on the same address and data dir.
func (c *cluster) restart(w *worker) error {
	w.proc.stop(2 * time.Second)
	return c.startWorker(w)
}

// removeWorker stops a worker process. The manager marks it DOWN.
func (c *cluster) removeWorker(name string) {
	if w, ok := c.workers[name]; ok {
		w.proc.stop(5 * time.Second)
		delete(c.workers, name)
	}
}

// waitState waits until each named worker has state s in ListWorkers.
func (c *cluster) waitState(ctx context.Context, s devops.WorkerState, timeout time.Duration, names ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		ws, err := c.client.Workers(ctx)
		if err == nil {
			have := map[string]devops.WorkerState{}
			for _, w := range ws {
				have[w.Name] = w.State
			}
			missing := 0
			for _, n := range names {
				if have[n] != s {
					missing++
				}
			}
			if missing == 0 {
				return nil
			}
			err = fmt.Errorf("%d of %d workers not %v", missing, len(names), s)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("wait for workers: %w", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// managerStats reads the manager process's CPU time and RSS.
func (c *cluster) managerStats() procStats {
	st, _ := readProc(c.manager.pid())
	return st
}

func (c *cluster) close() {
	if c.client != nil {
		c.client.Close()
	}
	for _, w := range c.workers {
		w.proc.stop(3 * time.Second)
	}
	if c.manager != nil {
		c.manager.stop(8 * time.Second)
	}
}

package manager

import (
	"maps"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/metrics"
)

// managerMetrics is what the manager exposes at /metrics. Gauges of workers
// and processes are read from the registry and the process table at scrape
// time (see stateCollector), so nothing has to keep them in step; counters
// and the dispatch histogram are moved by one-line hooks in the tracker.
type managerMetrics struct {
	reg        *prometheus.Registry
	grpcServer *grpcprom.ServerMetrics
	grpcClient *grpcprom.ClientMetrics

	dispatch    prometheus.Histogram   // submit to start, seconds
	outputBytes *prometheus.CounterVec // by stream
	outputLost  prometheus.Counter     // dropped by workers' spools before they were sent
	started     prometheus.Counter     // processes that reached RUNNING
	finished    *prometheus.CounterVec // by final state
}

func newManagerMetrics(m *Manager) *managerMetrics {
	reg := metrics.NewRegistry()
	mm := &managerMetrics{
		reg:        reg,
		grpcServer: metrics.GRPCServer(reg),
		grpcClient: metrics.GRPCClient(reg),
		dispatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace,
			Name:      "dispatch_latency_seconds",
			Help:      "Time from a process's submission to the manager hearing that it started on its worker (queueing for a slot included).",
			Buckets:   metrics.LatencyBuckets(),
		}),
		outputBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "output_bytes_total",
			Help:      "Output bytes received from workers and stored, by stream.",
		}, []string{"stream"}),
		outputLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "output_lost_bytes_total",
			Help:      "Output bytes workers dropped before they were sent: a spool reached its bound while the manager was unreachable.",
		}),
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "processes_started_total",
			Help:      "Processes that started on a worker.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "processes_finished_total",
			Help:      "Processes that reached a final state, by that state (a process that never started counts too).",
		}, []string{"state"}),
	}
	for _, s := range []devops.Stream{devops.Stdout, devops.Stderr} {
		mm.outputBytes.WithLabelValues(streamLabel(s))
	}
	for _, s := range terminalStates() {
		mm.finished.WithLabelValues(stateLabel(s.String()))
	}
	reg.MustRegister(mm.dispatch, mm.outputBytes, mm.outputLost, mm.started, mm.finished, newStateCollector(m))
	return mm
}

// processStarted counts a process's first start (PENDING to RUNNING, not a
// return from DISCONNECTED) and observes how long it waited, on the
// manager's clock so that a worker's clock skew does not matter.
func (mm *managerMetrics) processStarted(p devops.Process) {
	mm.started.Inc()
	mm.dispatch.Observe(max(time.Since(p.CreatedAt).Seconds(), 0))
}

func (mm *managerMetrics) processFinished(p devops.Process) {
	mm.finished.WithLabelValues(stateLabel(p.State.String())).Inc()
}

func (mm *managerMetrics) output(c devops.Chunk) {
	mm.outputBytes.WithLabelValues(streamLabel(c.Stream)).Add(float64(len(c.Data)))
}

func streamLabel(s devops.Stream) string {
	if s == devops.Stderr {
		return "stderr"
	}
	return "stdout"
}

// allStates lists every process state, so that each gauge series exists
// (at zero) from the first scrape.
func allStates() []devops.State {
	return []devops.State{
		devops.StatePending, devops.StateRunning, devops.StateDisconnected,
		devops.StateSucceeded, devops.StateFailed, devops.StateTerminated, devops.StateTimedOut, devops.StateLost,
	}
}

func terminalStates() []devops.State {
	var ss []devops.State
	for _, s := range allStates() {
		if s.Terminal() {
			ss = append(ss, s)
		}
	}
	return ss
}

// stateCollector reports workers and processes by state, and each worker's
// latest metrics sample, from the manager's own tables at scrape time.
type stateCollector struct {
	m *Manager

	workers, processes                  *prometheus.Desc // by state
	slots, running                      *prometheus.Desc // by worker
	cpu, load1, memUsed, memTotal, disk *prometheus.Desc // by worker, from its latest sample
}

func newStateCollector(m *Manager) *stateCollector {
	desc := func(name, help, label string) *prometheus.Desc {
		return prometheus.NewDesc(metrics.Namespace+"_"+name, help, []string{label}, nil)
	}
	return &stateCollector{
		m:         m,
		workers:   desc("workers", "Known workers, by state.", "state"),
		processes: desc("processes", "Processes in the manager's table, by state.", "state"),
		slots:     desc("worker_slots", "Slots (capacity) of each worker.", "worker"),
		running:   desc("worker_slots_used", "Slots in use on each worker, as the manager counts them.", "worker"),
		cpu:       desc("worker_cpu_usage_ratio", "CPU use of each worker's host (0 to 1), from its latest sample.", "worker"),
		load1:     desc("worker_load1", "1-minute load average of each worker's host, from its latest sample.", "worker"),
		memUsed:   desc("worker_memory_used_bytes", "Memory used on each worker's host, from its latest sample.", "worker"),
		memTotal:  desc("worker_memory_total_bytes", "Memory of each worker's host, from its latest sample.", "worker"),
		disk:      desc("worker_disk_free_bytes", "Free disk under each worker's data dir, from its latest sample.", "worker"),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.workers, c.processes, c.slots, c.running, c.cpu, c.load1, c.memUsed, c.memTotal, c.disk} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, label)
	}
	workers := map[devops.WorkerState]int{}
	for _, w := range c.m.registry.Snapshot() {
		workers[w.State]++
		gauge(c.slots, float64(w.Capacity), w.Name)
		gauge(c.running, float64(w.Running), w.Name)
		if s := w.Metrics; !s.Time.IsZero() {
			gauge(c.cpu, s.CPUPercent/100, w.Name)
			gauge(c.load1, s.Load1, w.Name)
			gauge(c.memUsed, float64(s.MemoryUsedBytes), w.Name)
			gauge(c.memTotal, float64(s.MemoryTotalBytes), w.Name)
			gauge(c.disk, float64(s.DiskFreeBytes), w.Name)
		}
	}
	for _, s := range []devops.WorkerState{devops.WorkerUp, devops.WorkerDraining, devops.WorkerDown} {
		gauge(c.workers, float64(workers[s]), stateLabel(s.String()))
	}
	procs := c.m.procs.countByState()
	for _, s := range allStates() {
		gauge(c.processes, float64(procs[s]), stateLabel(s.String()))
	}
}

// stateLabel is a state name as a label value: lower case, as Prometheus
// label values usually are.
func stateLabel(s string) string { return strings.ToLower(s) }

// countByState counts the processes in the table by state.
func (t *table) countByState() map[devops.State]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.byState)
}

// Metrics returns the registry that /metrics serves, for tests and for a
// program that embeds the manager and serves metrics its own way.
func (m *Manager) Metrics() *prometheus.Registry { return m.metrics.reg }

// WorkerHistory returns the latest metrics samples of a worker (by name or
// id), oldest first, at most registry.HistoryLen of them; an error wrapping
// devops.ErrNotFound when the worker is unknown.
func (m *Manager) WorkerHistory(worker string) ([]devops.Metrics, error) {
	return m.registry.History(worker)
}

// workerName is a worker's name for log lines, or its id when it is no
// longer known.
func (m *Manager) workerName(id devops.WorkerID) string {
	if w, err := m.registry.Get(string(id)); err == nil {
		return w.Name
	}
	return string(id)
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/metrics"
)

// workerMetrics is what the worker exposes at /metrics on its own HTTP
// address (with /healthz beside it). Gauges read the worker's state at
// scrape time; the counters are moved where a process starts and ends.
type workerMetrics struct {
	reg      *prometheus.Registry
	grpc     *grpcprom.ServerMetrics
	started  prometheus.Counter
	warm     prometheus.Counter     // started by a shim of the warm pool
	finished *prometheus.CounterVec // by final state

	lis net.Listener // nil when HTTP is disabled
	srv *http.Server
}

// newWorkerMetrics registers the worker's metrics and binds its HTTP
// address, unless cfg.HTTP is "-".
func newWorkerMetrics(w *Worker) (*workerMetrics, error) {
	reg := metrics.NewRegistry()
	wm := &workerMetrics{
		reg:  reg,
		grpc: metrics.GRPCServer(reg),
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "worker_processes_started_total",
			Help:      "Processes this worker started.",
		}),
		warm: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "worker_warm_starts_total",
			Help:      "Processes started by a supervisor of the warm pool; the others waited for one to start (see --warm-shims).",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "worker_processes_finished_total",
			Help:      "Processes this worker ran that ended, by final state.",
		}, []string{"state"}),
	}
	for _, s := range []devops.State{devops.StateSucceeded, devops.StateFailed, devops.StateTerminated, devops.StateTimedOut} {
		wm.finished.WithLabelValues(stateLabel(s))
	}
	gauge := func(name, help string, f func() float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Name: name, Help: help}, f)
	}
	reg.MustRegister(wm.started, wm.warm, wm.finished,
		gauge("worker_processes_running", "Processes running on this worker now.", func() float64 {
			running, _, _ := w.snapshot()
			return float64(running)
		}),
		gauge("worker_slots", "Processes this worker runs at most at once (its capacity).", func() float64 {
			return float64(w.cfg.Capacity)
		}),
		gauge("worker_draining", "1 while the worker is draining (takes no new work), else 0.", func() float64 {
			// Not snapshot, which walks every process kept.
			if w.isDraining() {
				return 1
			}
			return 0
		}),
		gauge("worker_warm_shims_idle", "Warm shims waiting for a process now; --warm-shims when the pool is full.", func() float64 {
			return float64(w.exec.WarmIdle())
		}),
		gauge("worker_spool_bytes", "Bytes of output spool files on this worker's disk (running and recently finished processes).", func() float64 {
			return float64(w.spoolBytes())
		}),
	)
	if w.cfg.HTTP != "-" {
		lis, err := net.Listen("tcp", w.cfg.HTTP)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", w.cfg.HTTP, err)
		}
		wm.lis = lis
		wm.srv = &http.Server{Handler: metrics.Handler(reg, w.health), ReadHeaderTimeout: 5 * time.Second}
	}
	return wm, nil
}

func stateLabel(s devops.State) string { return strings.ToLower(s.String()) }

// processEnded counts a process that ended in state s.
func (wm *workerMetrics) processEnded(s devops.State) {
	wm.finished.WithLabelValues(stateLabel(s)).Inc()
}

// spoolBytes adds up the sizes of the spool files the worker keeps.
func (w *Worker) spoolBytes() int64 {
	w.mu.Lock()
	spools := make([]*spool, 0, len(w.procs))
	for _, p := range w.procs {
		spools = append(spools, p.spool)
	}
	w.mu.Unlock()
	var n int64
	for _, s := range spools {
		n += s.size()
	}
	return n
}

// serveHTTP serves /metrics and /healthz until stopHTTP. A failure to serve
// is sent to errc if there is room, so that Run ends with it.
func (w *Worker) serveHTTP(errc chan<- error) {
	wm := w.metrics
	if wm.srv == nil {
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := wm.srv.Serve(wm.lis); !errors.Is(err, http.ErrServerClosed) {
			select {
			case errc <- fmt.Errorf("serve http: %w", err):
			default:
			}
		}
	}()
	w.log.Info("worker serving http", "address", w.HTTPAddr())
}

// stopHTTP stops the HTTP server, giving in-flight scrapes a moment.
func (w *Worker) stopHTTP() {
	wm := w.metrics
	if wm.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := wm.srv.Shutdown(ctx); err != nil {
		wm.srv.Close()
	}
}

// HTTPAddr is the address of the worker's HTTP server (/metrics,
// /healthz), or "" when it is disabled.
func (w *Worker) HTTPAddr() string {
	if w.metrics == nil || w.metrics.lis == nil {
		return ""
	}
	return w.metrics.lis.Addr().String()
}

// Metrics returns the registry that /metrics serves, for tests and for a
// program that embeds the worker and serves metrics its own way.
func (w *Worker) Metrics() *prometheus.Registry { return w.metrics.reg }

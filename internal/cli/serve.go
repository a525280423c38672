package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/heaptrim"
	"github.com/devops-platform/devops/internal/manager"
	"github.com/devops-platform/devops/internal/scheduler"
	"github.com/devops-platform/devops/internal/worker"
)

func newManagerCmd(env *Env, g *globals) *cobra.Command {
	var cfg manager.Config
	var maxOut, maxOutTotal string
	cmd := &cobra.Command{
		Use:         "manager",
		Annotations: map[string]string{ownsInterrupt: "cmd/devops stops it"},
		Short:       "Run the manager: registers workers, places commands, serves the API",
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger(env.Stderr)
			if err != nil {
				return err
			}
			if cfg.MaxProcessOutputBytes, err = parseSize(maxOut); err != nil {
				return fmt.Errorf("--max-output: %w", err)
			}
			if cfg.MaxOutputBytes, err = parseSize(maxOutTotal); err != nil {
				return fmt.Errorf("--max-output-total: %w", err)
			}
			cfg.Logger = log
			cfg.Security.Insecure = g.sec.insecure
			m, err := manager.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			// Trims are the process's, so they run here and not in the
			// Manager (tests run several in one process).
			ctx, cancel := context.WithCancel(cmd.Context())
			var wg sync.WaitGroup
			wg.Go(func() { heaptrim.Run(ctx, 10*time.Second, log) })
			err = m.Run(ctx)
			cancel()
			wg.Wait()
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", ":50051", "gRPC listen address")
	f.StringVar(&cfg.HTTP, "http", ":8080", "HTTP listen address for /healthz and /metrics (\"-\" disables it)")
	f.StringVar(&cfg.DataDir, "data-dir", "./data/manager", "where workers, process records and output are kept")
	f.DurationVar(&cfg.WorkerTimeout, "worker-timeout", 10*time.Second, "a worker silent this long is marked DOWN")
	f.DurationVar(&cfg.HealthInterval, "health-interval", 0, "how often workers report health (0: half of --worker-timeout)")
	f.DurationVar(&cfg.MetricsInterval, "metrics-interval", 5*time.Second, "how often workers report metrics")
	f.DurationVar(&cfg.WorkerIdleTimeout, "worker-idle-timeout", 5*time.Minute, "how long the manager keeps its connection to a worker with no call in flight (the next call connects again)")
	f.DurationVar(&cfg.DisconnectGrace, "disconnect-grace", 2*time.Minute, "how long a process may be DISCONNECTED before it is LOST")
	f.DurationVar(&cfg.QueueTimeout, "queue-timeout", time.Minute, "default wait for a free slot")
	f.IntVar(&cfg.DispatchAttempts, "dispatch-attempts", 3, "workers tried when one refuses a command")
	f.StringVar(&maxOut, "max-output", "1G", "output kept per process (beyond it output is not stored)")
	f.StringVar(&maxOutTotal, "max-output-total", "8G", "output kept across all processes (the oldest is dropped)")
	f.DurationVar(&cfg.Retention, "retention", 7*24*time.Hour, "how long processes and fleet runs are kept once ended (then their records and output are deleted; 0 keeps them for good)")
	addManagerSecurityFlags(cmd, &cfg.Security)
	return cmd
}

func newWorkerCmd(env *Env, g *globals) *cobra.Command {
	var cfg worker.Config
	var labels, maxMem, maxOut, spoolMax, joinTokenFile string
	cmd := &cobra.Command{
		Use:         "worker",
		Annotations: map[string]string{ownsInterrupt: "cmd/devops stops it; SIGTERM drains"},
		Short:       "Run a worker: joins the manager and runs the commands it is given",
		Long: "Run a worker. It finds the manager at --manager, by default MANAGER_HOST:MANAGER_PORT\n" +
			"(localhost:50051), registers itself and keeps retrying with backoff until the manager answers.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger(env.Stderr)
			if err != nil {
				return err
			}
			if cfg.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if cfg.MaxLimits.MemoryBytes, err = parseSize(maxMem); err != nil {
				return fmt.Errorf("--max-memory: %w", err)
			}
			if cfg.MaxLimits.MaxOutputBytes, err = parseSize(maxOut); err != nil {
				return fmt.Errorf("--max-output: %w", err)
			}
			if cfg.SpoolMax, err = parseSize(spoolMax); err != nil {
				return fmt.Errorf("--spool-max: %w", err)
			}
			if cfg.SpoolMax == 0 {
				cfg.SpoolMax = -1 // no bound, as the flag's help says
			}
			cfg.Manager = g.manager
			cfg.Logger = log
			cfg.Security.Insecure = g.sec.insecure
			if cfg.Security.JoinToken, err = g.joinToken(joinTokenFile); err != nil {
				return err
			}
			if cfg.WarmShims == 0 {
				cfg.WarmShims = -1 // none, as the flag's help says
			}
			w, err := worker.New(cfg)
			if err != nil {
				return err
			}
			// SIGTERM drains: no new work, running processes finish, then the
			// worker deregisters and exits. Ctrl-C stops at once.
			go func() {
				select {
				case <-env.Term:
					w.Drain(true)
				case <-cmd.Context().Done():
				}
			}()
			return w.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "worker name (default the hostname)")
	f.StringVar(&labels, "labels", "", "labels k=v,k=v that selectors match")
	f.IntVar(&cfg.Capacity, "capacity", 64, "most processes run at once")
	f.IntVar(&cfg.WarmShims, "warm-shims", worker.DefaultWarmShims, "process supervisors kept started ahead of need, for fast starts (0: none)")
	f.StringVar(&cfg.Listen, "listen", ":50052", "own gRPC listen address")
	f.StringVar(&cfg.HTTP, "http", ":8081", "HTTP listen address for /metrics and /healthz (\"-\" disables it)")
	f.StringVar(&cfg.Advertise, "advertise", "", "address the manager dials (default: --listen, with the host the manager sees)")
	f.StringVar(&cfg.DataDir, "data-dir", "./data/worker", "worker id, output spools and process directories")
	f.StringVar(&maxMem, "max-memory", "", "cap on any process's memory limit, e.g. 2G")
	f.Float64Var(&cfg.MaxLimits.CPUs, "max-cpus", 0, "cap on any process's CPU limit, in cores")
	f.Int64Var(&cfg.MaxLimits.Pids, "max-pids", 0, "cap on any process's pids limit")
	f.StringVar(&maxOut, "max-output", "", "cap on any process's output, e.g. 1G")
	f.DurationVar(&cfg.KeepFinished, "keep-finished", 10*time.Minute, "how long finished output stays on disk for the manager")
	f.StringVar(&spoolMax, "spool-max", "256M", "output of one process kept on disk while the manager is away; past it the oldest is dropped and the loss shown (0: no bound)")
	f.StringVar(&joinTokenFile, "join-token-file", "", "file holding the join token (default $DEVOPS_JOIN_TOKEN; not needed once the worker holds a certificate)")
	return cmd
}

// parseLabels reads "k=v,k=v".
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return labels, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("--labels: %q is not k=v", kv)
		}
		labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if err := scheduler.ValidateLabels(labels); err != nil {
		return nil, fmt.Errorf("--labels: %w", err)
	}
	return labels, nil
}

// parseSize reads a byte count with an optional binary suffix: 512, 64K,
// 256M, 1G, 2Gi, 1.5G. Empty is zero.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num := strings.TrimRight(strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I"), "KMGT")
	unit := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(s[len(num):], "B"), "i"))
	unit = strings.TrimSuffix(unit, "I")
	mult := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || v < 0 {
		return 0, fmt.Errorf("%w: size %q: want a number with an optional K, M, G or T suffix", devops.ErrInvalid, s)
	}
	return int64(v * mult), nil
}

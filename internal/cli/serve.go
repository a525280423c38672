package cli

import (
	"cmp"
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
)

func newManagerCmd(env *Env, g *globals) *cobra.Command {
	var cfg manager.Config
	var maxOut, maxOutTotal, maxStdin, auditMax string
	var auditKeep int
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
			if cfg.MaxStdin, err = parseSize(maxStdin); err != nil || cfg.MaxStdin <= 0 {
				return fmt.Errorf("--max-stdin: %w: %q: want a size, e.g. 16G", devops.ErrInvalid, maxStdin)
			}
			if cfg.Security.AuditMaxSize, err = parseSize(auditMax); err != nil {
				return fmt.Errorf("--audit-max-size: %w", err)
			}
			if auditKeep < 0 {
				return fmt.Errorf("--audit-keep: %w: %d: want a count, 0 for every file", devops.ErrInvalid, auditKeep)
			}
			// 0 on the command line is no bound; in the config it is the
			// default, and no bound is negative.
			cfg.Security.AuditMaxSize = cmp.Or(cfg.Security.AuditMaxSize, -1)
			cfg.Security.AuditKeep = cmp.Or(auditKeep, -1)
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
	f.StringVar(&maxStdin, "max-stdin", "16G", "largest standard input a run may upload (run --stdin over 4 MiB), kept on disk until its processes end")
	f.DurationVar(&cfg.Retention, "retention", 7*24*time.Hour, "how long processes and fleet runs are kept once ended (then their records and output are deleted; 0 keeps them for good)")
	f.StringVar(&auditMax, "audit-max-size", "100M", "size at which audit.log is set aside as audit.log.<UTC time> and a new one started (0: it grows for good)")
	f.IntVar(&auditKeep, "audit-keep", manager.DefaultAuditKeep, "set-aside audit logs kept, the oldest removed first (0: every one)")
	addManagerSecurityFlags(cmd, &cfg.Security)
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

//go:build unix

package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/worker"
)

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
			if cfg.Capacity < 0 {
				// 0 is the default; a negative was taken for it too.
				return fmt.Errorf("--capacity %d: %w: at least 1 (0: the default, 64)", cfg.Capacity, devops.ErrInvalid)
			}
			if cfg.MaxLimits.MemoryBytes, err = parseSize(maxMem); err != nil {
				return fmt.Errorf("--max-memory: %w", err)
			}
			if m := cfg.MaxLimits.MemoryBytes; m > 0 && m < devops.MinMemory {
				// Every process's limit would be capped to it: none would run.
				return fmt.Errorf("--max-memory %s: %w: %d bytes, under the least a command may ask for, 1M (a number without a unit is bytes)", maxMem, devops.ErrInvalid, m)
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

package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// newHealthcheckCmd asks a gRPC server for its grpc.health.v1 status. It
// exists for container health checks: the manager image is FROM scratch, so
// there is no shell, curl or grpc_health_probe to run; the binary itself is
// the probe.
func newHealthcheckCmd(env *Env, g *globals) *cobra.Command {
	var addr, service string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the gRPC health service at --addr reports SERVING",
		Long: "Calls grpc.health.v1.Health/Check on --addr (default the --manager address) and exits 0\n" +
			"when it answers SERVING, 1 otherwise. Meant for container health checks.",
		Example: `  devops healthcheck
  devops healthcheck --addr localhost:50051`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if addr == "" {
				addr = g.manager
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return &exitError{code: 1, msg: fmt.Sprintf("healthcheck %s: %v", addr, err)}
			}
			defer conn.Close()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			if err != nil {
				return &exitError{code: 1, msg: fmt.Sprintf("healthcheck %s: %s", addr, describe(err))}
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return &exitError{code: 1, msg: fmt.Sprintf("healthcheck %s: %s", addr, resp.GetStatus())}
			}
			fmt.Fprintln(env.Stdout, resp.GetStatus())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "", "host:port of the gRPC server (default the --manager address)")
	f.StringVar(&service, "service", "", "service name to check (empty: the whole server)")
	f.DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	return cmd
}

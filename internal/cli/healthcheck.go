package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
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
			resp, err := healthCheck(ctx, addr, service, g.sec.insecure)
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

// healthCheck asks over TLS without verifying the server (a probe sends
// nothing secret and, inside a container, holds no CA), then, unless TLS
// answered, over plaintext (a manager run with --insecure).
func healthCheck(ctx context.Context, addr, service string, plaintext bool) (*healthpb.HealthCheckResponse, error) {
	creds := []credentials.TransportCredentials{insecure.NewCredentials()}
	if !plaintext {
		//nolint:gosec // a liveness probe: see above
		creds = []credentials.TransportCredentials{credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}), insecure.NewCredentials()}
	}
	var err error
	for _, c := range creds {
		var conn *grpc.ClientConn
		conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(c), grpc.WithDisableServiceConfig())
		if err != nil {
			return nil, err
		}
		var resp *healthpb.HealthCheckResponse
		resp, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		conn.Close()
		if err == nil || status.Code(err) != codes.Unavailable {
			return resp, err
		}
	}
	return nil, err
}

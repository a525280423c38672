package cli

import (
	"bytes"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestHealthcheck(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close() // nothing listens there any more

	tests := []struct {
		name   string
		status healthpb.HealthCheckResponse_ServingStatus
		addr   string
		want   int
	}{
		{"serving", healthpb.HealthCheckResponse_SERVING, lis.Addr().String(), 0},
		{"not serving", healthpb.HealthCheckResponse_NOT_SERVING, lis.Addr().String(), 1},
		{"unreachable", healthpb.HealthCheckResponse_SERVING, closed.Addr().String(), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs.SetServingStatus("", tt.status)
			var stdout, stderr bytes.Buffer
			args := []string{"healthcheck", "--addr", tt.addr, "--timeout", "2s"}
			if got := Main(t.Context(), args, Env{Stdout: &stdout, Stderr: &stderr}); got != tt.want {
				t.Errorf("devops %v = %d, want %d (stdout %q, stderr %q)", args, got, tt.want, stdout.String(), stderr.String())
			}
		})
	}
}

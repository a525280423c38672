package metrics_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/devops-platform/devops/internal/metrics"
)

func TestHealthz(t *testing.T) {
	hs := health.NewServer()
	srv := httptest.NewServer(metrics.Handler(metrics.NewRegistry(), hs))
	defer srv.Close()
	tests := []struct {
		name     string
		status   healthpb.HealthCheckResponse_ServingStatus
		wantCode int
		wantBody string
	}{
		{"serving", healthpb.HealthCheckResponse_SERVING, http.StatusOK, "ok"},
		{"draining", healthpb.HealthCheckResponse_NOT_SERVING, http.StatusServiceUnavailable, "NOT_SERVING"},
		{"serving again", healthpb.HealthCheckResponse_SERVING, http.StatusOK, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs.SetServingStatus("", tt.status)
			resp, err := http.Get(srv.URL + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || strings.TrimSpace(string(body)) != tt.wantBody {
				t.Errorf("/healthz with %v = %d %q, want %d %q", tt.status, resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

// TestRegistriesAreSeparate: two registries in one process (a manager and a
// worker in a test) count apart; nothing lands in the global registry.
func TestRegistriesAreSeparate(t *testing.T) {
	a, b := metrics.NewRegistry(), metrics.NewRegistry()
	metrics.GRPCServer(a)
	metrics.GRPCServer(b) // would panic on a shared registry: duplicate collector
	metrics.GRPCClient(a)
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "grpc_") {
			t.Errorf("global registry holds %s", mf.GetName())
		}
	}
}

func TestLatencyBucketsAscend(t *testing.T) {
	b := metrics.LatencyBuckets()
	if b[0] > 0.0001 || b[len(b)-1] < 60 {
		t.Errorf("buckets span %v to %v, want from at most 100µs to at least a minute", b[0], b[len(b)-1])
	}
	for i := 1; i < len(b); i++ {
		if b[i] <= b[i-1] {
			t.Fatalf("buckets not ascending at %d: %v", i, b)
		}
	}
}

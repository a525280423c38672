// Package metrics holds what the manager and the worker share to expose
// Prometheus metrics: a fresh registry with the Go runtime and process
// collectors, the gRPC server and client metrics of go-grpc-middleware, the
// bucket layout for latencies, and the HTTP handler that serves /metrics and
// /healthz. It keeps no package-level state: every registry is made by the
// caller and passed in. It must import neither internal/manager nor
// internal/worker.
package metrics

import (
	"context"
	"fmt"
	"net/http"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Namespace prefixes every metric of DevOps Platform's own.
const Namespace = "devops"

// NewRegistry returns a registry that already holds the Go runtime and
// process collectors. It is never the global default registry, so two
// servers in one process (as in tests) keep separate counts.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// LatencyBuckets are the upper bounds, in seconds, of latency histograms:
// from 100µs to about 100s, three buckets per decade, so that both a
// loopback dispatch (sub-millisecond) and a queued one (seconds) land in a
// bucket of their own.
func LatencyBuckets() []float64 {
	return []float64{
		0.0001, 0.00025, 0.0005,
		0.001, 0.0025, 0.005,
		0.01, 0.025, 0.05,
		0.1, 0.25, 0.5,
		1, 2.5, 5,
		10, 25, 50, 100,
	}
}

// GRPCServer returns the gRPC server metrics (grpc_server_* : calls started
// and handled by code, messages, handling time), registered on reg. Install its
// interceptors on the server and call InitializeMetrics once the services
// are registered.
func GRPCServer(reg prometheus.Registerer) *grpcprom.ServerMetrics {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(LatencyBuckets())))
	reg.MustRegister(m)
	return m
}

// GRPCClient returns the gRPC client metrics (grpc_client_*), registered on
// reg; install its interceptors on each connection.
func GRPCClient(reg prometheus.Registerer) *grpcprom.ClientMetrics {
	m := grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(grpcprom.WithHistogramBuckets(LatencyBuckets())))
	reg.MustRegister(m)
	return m
}

// HealthChecker is the part of the gRPC health server that /healthz asks.
type HealthChecker interface {
	Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error)
}

// Handler serves /metrics from reg and /healthz from health: 200 "ok" while
// the gRPC health service says SERVING for the whole server, 503 with the
// status otherwise (NOT_SERVING while draining or stopping).
func Handler(reg *prometheus.Registry, health HealthChecker) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg, // counts promhttp's own errors in reg
		EnableOpenMetrics: false,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		resp, err := health.Check(r.Context(), &healthpb.HealthCheckRequest{})
		if err != nil {
			http.Error(w, fmt.Sprintf("health: %v", err), http.StatusServiceUnavailable)
			return
		}
		if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
			http.Error(w, st.String(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

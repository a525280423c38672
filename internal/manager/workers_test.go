package manager

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/store"
	"github.com/devops-platform/devops/internal/wire"
)

// startManager runs a manager with an in-memory store on loopback until the
// test ends.
func startManager(tb testing.TB, cfg Config) *Manager {
	tb.Helper()
	cfg.Listen, cfg.HTTP, cfg.DataDir = "127.0.0.1:0", "-", tb.TempDir()
	cfg.Store = store.NewMemory()
	cfg.Security.Insecure = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := New(ctx, cfg)
	if err != nil {
		cancel()
		tb.Fatalf("start manager: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("manager stopped with: %v", err)
		}
	})
	return m
}

// eventually waits until cond holds, failing the test after timeout.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeWorker serves the WorkerProcessService of an idle worker: it sends
// health every 5 ms until it has sent last, then goes quiet, and one
// metrics sample. It counts the bytes the manager sends it.
type fakeWorker struct {
	pb.UnimplementedWorkerProcessServiceServer
	last    int64
	read    atomic.Int64 // bytes read from the manager's connections
	health  atomic.Int64 // health messages sent
	metrics atomic.Int64 // metrics samples sent

	mu     sync.Mutex // protects sentAt
	sentAt time.Time  // when the last health message went out
}

func (f *fakeWorker) HealthCheck(_ *pb.HealthCheckRequest, stream pb.WorkerProcessService_HealthCheckServer) error {
	for f.health.Load() < f.last {
		f.mu.Lock()
		f.sentAt = time.Now()
		f.mu.Unlock()
		if err := stream.Send(&pb.HealthCheckResponse{State: pb.WorkerState_WORKER_STATE_UP, Capacity: 1, Time: wire.Timestamp(time.Now())}); err != nil {
			return err
		}
		f.health.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
	<-stream.Context().Done()
	return nil
}

func (f *fakeWorker) ReportMetrics(_ *pb.ReportMetricsRequest, stream pb.WorkerProcessService_ReportMetricsServer) error {
	if err := stream.Send(&pb.WorkerMetrics{Time: wire.Timestamp(time.Now()), FreeSlots: 1}); err != nil {
		return err
	}
	f.metrics.Add(1)
	<-stream.Context().Done()
	return nil
}

func (f *fakeWorker) lastSentAt() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sentAt
}

// serve runs f on a loopback port until the test ends and returns its address.
func (f *fakeWorker) serve(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterWorkerProcessServiceServer(srv, f)
	go srv.Serve(countingListener{lis, &f.read})
	tb.Cleanup(srv.Stop)
	return lis.Addr().String()
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestIdleWorkerCostsNoWrites: once its streams are open, an idle worker's
// health messages cost the manager reads only. grpc's dynamic flow-control
// windows would answer each of them with a PING.
func TestIdleWorkerCostsNoWrites(t *testing.T) {
	m := startManager(t, Config{})
	f := &fakeWorker{last: 40}
	w, err := m.register(t.Context(), &pb.RegisterWorkerRequest{Name: "w1", Capacity: 1, Address: f.serve(t)})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	eventually(t, 5*time.Second, "both streams open", func() bool {
		got, _ := m.registry.Get(string(w.ID))
		return f.health.Load() >= 3 && f.metrics.Load() == 1 && !got.Metrics.Time.IsZero()
	})
	before := f.read.Load()
	eventually(t, 5*time.Second, "the manager got every health message", func() bool {
		got, _ := m.registry.Get(string(w.ID))
		return f.health.Load() == f.last && got.LastSeen.After(f.lastSentAt())
	})
	if n := f.read.Load() - before; n != 0 {
		t.Errorf("the manager wrote %d bytes to an idle worker during %d health messages, want 0", n, f.last-3)
	}
}

func TestHealthIntervalDefault(t *testing.T) {
	tests := []struct {
		name                    string
		workerTimeout, health   time.Duration
		wantTimeout, wantHealth time.Duration
	}{
		{"defaults", 0, 0, 10 * time.Second, 5 * time.Second},
		{"half the timeout", 4 * time.Second, 0, 4 * time.Second, 2 * time.Second},
		{"set", 0, time.Second, 10 * time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{WorkerTimeout: tt.workerTimeout, HealthInterval: tt.health}
			c.setDefaults()
			if c.WorkerTimeout != tt.wantTimeout || c.HealthInterval != tt.wantHealth {
				t.Errorf("setDefaults() = timeout %v, health %v; want %v, %v", c.WorkerTimeout, c.HealthInterval, tt.wantTimeout, tt.wantHealth)
			}
		})
	}
}

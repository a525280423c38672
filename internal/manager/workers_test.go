package manager

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/store"
	"github.com/devops-platform/devops/internal/wire"
)

// startManager runs a manager with an in-memory store (unless cfg has one) on loopback until the
// test ends.
func startManager(tb testing.TB, cfg Config) *Manager {
	tb.Helper()
	return startManagerWith(tb, cfg, nil)
}

// startManagerWith is startManager with before called on the manager
// before it serves.
func startManagerWith(tb testing.TB, cfg Config, before func(*Manager)) *Manager {
	tb.Helper()
	cfg.Listen, cfg.HTTP, cfg.DataDir = "127.0.0.1:0", "-", tb.TempDir()
	if cfg.Store == nil {
		cfg.Store = store.NewMemory()
	}
	cfg.Security.Insecure = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := New(ctx, cfg)
	if err != nil {
		cancel()
		tb.Fatalf("start manager: %v", err)
	}
	if before != nil {
		before(m)
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

// fakeWorker is an idle worker: it registers over a connection of its own
// to the manager, and sends status reports on its ReportStatus stream when
// told to. It counts the bytes the manager sends it on that connection,
// and the connections the manager makes to its WorkerProcessService.
type fakeWorker struct {
	pb.UnimplementedWorkerProcessServiceServer
	id     devops.WorkerID
	api    pb.WorkerRegistrationServiceClient
	read   atomic.Int64 // bytes read from the connection to the manager
	dialed atomic.Int64 // connections the manager made to this worker
}

// startFakeWorker serves a fake worker on a loopback port and registers it
// with m under name, until the test ends.
func startFakeWorker(tb testing.TB, m *Manager, name string) *fakeWorker {
	tb.Helper()
	f := &fakeWorker{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterWorkerProcessServiceServer(srv, f)
	go srv.Serve(countingListener{lis, &f.dialed})
	tb.Cleanup(srv.Stop)
	// The windows of a real worker's connection (internal/worker.Run):
	// dynamic ones would make the manager answer a PING at the start.
	conn, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStaticStreamWindowSize(1<<20), grpc.WithStaticConnWindowSize(1<<20),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return countingConn{c, &f.read}, nil
		}))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	f.api = pb.NewWorkerRegistrationServiceClient(conn)
	resp, err := f.api.RegisterWorker(tb.Context(), &pb.RegisterWorkerRequest{Name: name, Capacity: 1, Address: lis.Addr().String()})
	if err != nil {
		tb.Fatalf("register: %v", err)
	}
	f.id = devops.WorkerID(resp.GetWorkerId())
	return f
}

// open opens a status stream for id, sends the first report and reads the
// manager's settings.
func (f *fakeWorker) open(tb testing.TB, ctx context.Context, id devops.WorkerID) pb.WorkerRegistrationService_ReportStatusClient {
	tb.Helper()
	stream, err := f.api.ReportStatus(ctx)
	if err != nil {
		tb.Fatalf("ReportStatus: %v", err)
	}
	if err := stream.Send(&pb.StatusReport{WorkerId: string(id), Health: upHealth(), Metrics: &pb.WorkerMetrics{Time: wire.Timestamp(time.Now()), FreeSlots: 1}}); err != nil {
		tb.Fatalf("first report: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		tb.Fatalf("settings: %v", err)
	}
	return stream
}

func upHealth() *pb.HealthCheckResponse {
	return &pb.HealthCheckResponse{State: pb.WorkerState_WORKER_STATE_UP, Capacity: 1, Time: wire.Timestamp(time.Now())}
}

func state(m *Manager, id devops.WorkerID) devops.WorkerState {
	w, _ := m.registry.Get(string(id))
	return w.State
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
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

// TestIdleWorkerCostsNoWrites: once its stream is open, an idle worker's
// reports cost the manager reads only (grpc's dynamic flow-control windows
// would answer each of them with a PING), and the manager makes no
// connection to it.
func TestIdleWorkerCostsNoWrites(t *testing.T) {
	m := startManager(t, Config{})
	f := startFakeWorker(t, m, "w1")
	stream := f.open(t, t.Context(), f.id)
	eventually(t, 5*time.Second, "worker UP with metrics", func() bool {
		w, _ := m.registry.Get(string(f.id))
		return w.State == devops.WorkerUp && !w.Metrics.Time.IsZero()
	})
	before := f.read.Load()
	const reports = 40
	var last time.Time
	for range reports {
		h := upHealth()
		last = h.GetTime().AsTime()
		if err := stream.Send(&pb.StatusReport{Health: h}); err != nil {
			t.Fatalf("report: %v", err)
		}
	}
	eventually(t, 5*time.Second, "the manager got every report", func() bool {
		w, _ := m.registry.Get(string(f.id))
		return !w.LastSeen.Before(last)
	})
	if n := f.read.Load() - before; n != 0 {
		t.Errorf("the manager wrote %d bytes to an idle worker during %d reports, want 0", n, reports)
	}
	if n := f.dialed.Load(); n != 0 {
		t.Errorf("the manager made %d connections to an idle worker, want 0", n)
	}
}

// TestStatusStream: a worker is UP from its first report and DOWN as soon
// as its stream ends, unless a newer stream replaced it; a stream for an
// unknown worker, or one that was cut off, is refused.
func TestStatusStream(t *testing.T) {
	m := startManager(t, Config{})
	f := startFakeWorker(t, m, "w1")

	t.Run("unknown worker", func(t *testing.T) {
		stream, err := f.api.ReportStatus(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&pb.StatusReport{WorkerId: "nobody", Health: upHealth()})
		if _, err := stream.Recv(); status.Code(err) != codes.NotFound {
			t.Errorf("stream of an unknown worker: %v, want NotFound", err)
		}
	})
	t.Run("end marks DOWN", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		f.open(t, ctx, f.id)
		eventually(t, 5*time.Second, "UP", func() bool { return state(m, f.id) == devops.WorkerUp })
		cancel()
		eventually(t, time.Second, "DOWN once the stream ended", func() bool { return state(m, f.id) == devops.WorkerDown })
	})
	t.Run("newer stream", func(t *testing.T) {
		ctx1, cancel1 := context.WithCancel(t.Context())
		old := f.open(t, ctx1, f.id)
		f.open(t, t.Context(), f.id)
		eventually(t, 5*time.Second, "UP", func() bool { return state(m, f.id) == devops.WorkerUp })
		old.Send(&pb.StatusReport{Health: upHealth()})
		if _, err := old.Recv(); status.Code(err) != codes.Aborted {
			t.Errorf("superseded stream: %v, want Aborted", err)
		}
		cancel1()
		if s := state(m, f.id); s != devops.WorkerUp {
			t.Errorf("after the superseded stream ended: %v, want UP", s)
		}
	})
	t.Run("cut off", func(t *testing.T) {
		stream := f.open(t, t.Context(), f.id)
		eventually(t, 5*time.Second, "UP", func() bool { return state(m, f.id) == devops.WorkerUp })
		m.cutOff(f.id)
		stream.Send(&pb.StatusReport{Health: upHealth()})
		if _, err := stream.Recv(); status.Code(err) != codes.Aborted {
			t.Errorf("stream after a cut: %v, want Aborted", err)
		}
		if s := state(m, f.id); s != devops.WorkerDown {
			t.Errorf("after the cut: %v, want DOWN", s)
		}
	})
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

// TestLateDownLeavesNewCalls: the registry tells of a worker's changes from
// a goroutine of its own, behind the persisting of those before; a DOWN
// told once the worker is UP again, or the DOWN a new worker registers in,
// must not cut the calls made to it since. A DOWN that still holds does.
func TestLateDownLeavesNewCalls(t *testing.T) {
	m := startManager(t, Config{})
	f := startFakeWorker(t, m, "w1")
	ctx, cancel := context.WithCancel(t.Context())
	f.open(t, ctx, f.id)
	eventually(t, 5*time.Second, "worker UP", func() bool { return state(m, f.id) == devops.WorkerUp })

	e := m.procs.add(devops.Process{ID: "p-late-down", WorkerID: f.id, WorkerName: "w1", State: devops.StateRunning})
	var cut atomic.Bool
	m.procs.setStreamCancel(e, func() { cut.Store(true) })
	down := devops.Worker{ID: f.id, Name: "w1", State: devops.WorkerDown}
	m.workerChanged(down, devops.WorkerUp)   // gone and back before it was told
	m.workerChanged(down, devops.WorkerDown) // registered
	if cut.Load() {
		t.Fatal("a call to an UP worker was cut by a DOWN told late")
	}

	cancel() // the status stream ends: DOWN for real
	eventually(t, 5*time.Second, "the call cut once the worker is DOWN", cut.Load)
}

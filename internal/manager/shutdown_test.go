package manager

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops/internal/store"
)

// TestStopDoesNotWaitForStatusStreams: a worker's status stream never
// ends by itself, and a manager that waited for it (grpc's GracefulStop)
// took its whole 5 s grace to stop, with every worker connected. It stops
// at once, and the worker's stream ends.
func TestStopDoesNotWaitForStatusStreams(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := New(ctx, Config{Listen: "127.0.0.1:0", HTTP: "-", DataDir: t.TempDir(), Store: store.NewMemory(),
		Security: SecurityConfig{Insecure: true}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	f := startFakeWorker(t, m, "w1")
	stream := f.open(t, t.Context(), f.id)

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the manager did not stop in 10 s")
	}
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Errorf("the manager took %v to stop with a worker connected, want well under its 5 s grace for calls", took)
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("the worker's status stream is still open after the manager stopped")
	}
}

// TestDrainWaitsForUnaryCalls: a stopping manager lets the calls under way
// finish, and refuses new ones.
func TestDrainWaitsForUnaryCalls(t *testing.T) {
	var c unaryCalls
	release := make(chan struct{})
	entered := make(chan struct{})
	finished := make(chan error, 1)
	go func() {
		_, err := c.count(context.Background(), nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) {
			close(entered)
			<-release
			return nil, nil
		})
		finished <- err
	}()
	<-entered
	idle := c.drain()
	select {
	case <-idle:
		t.Fatal("drained while a call was being served")
	default:
	}
	_, err := c.count(context.Background(), nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) {
		t.Error("a call started while draining")
		return nil, nil
	})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a call while draining = %v, want Unavailable", err)
	}
	close(release)
	if err := <-finished; err != nil {
		t.Errorf("the call under way = %v", err)
	}
	select {
	case <-idle:
	case <-time.After(10 * time.Second):
		t.Fatal("not drained 10 s after the last call ended")
	}
}

package manager

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
)

// acceptRaw returns both ends of a loopback connection whose server end
// reads raw.
func acceptRaw(t *testing.T) (client net.Conn, server *rawReadConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	client, err = net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c, err := rawReads(lis).Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	server, ok := c.(*rawReadConn)
	if !ok {
		t.Fatalf("Accept gave a %T, want a *rawReadConn", c)
	}
	return client, server
}

// TestRawReadConn: a raw-reading connection reads what was sent, through
// Read and ReadOnReady, and ends as net.Conn does: at its deadline and at
// the peer's close.
func TestRawReadConn(t *testing.T) {
	client, server := acceptRaw(t)
	buf := make([]byte, 64)

	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if n, err := server.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v; want \"hello\", nil", buf[:n], err)
	}

	// Nothing has come: ReadOnReady waits in the poller until it does.
	go client.Write([]byte("world"))
	pool := mem.DefaultBufferPool()
	b, n, err := server.ReadOnReady(32, pool)
	if err != nil {
		t.Fatalf("ReadOnReady: %v", err)
	}
	if got := string((*b)[:n]); got != "world" {
		t.Fatalf("ReadOnReady = %q, want \"world\"", got)
	}
	pool.Put(b)

	server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := server.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	server.SetReadDeadline(time.Time{})

	client.Close()
	if _, err := server.Read(buf); err != io.EOF {
		t.Fatalf("Read after the peer closed: %v, want io.EOF", err)
	}
	if _, _, err := server.ReadOnReady(32, pool); err != io.EOF {
		t.Fatalf("ReadOnReady after the peer closed: %v, want io.EOF", err)
	}
}

// TestRawReadConnClose: a read waiting for data returns when its own end
// is closed.
func TestRawReadConnClose(t *testing.T) {
	_, server := acceptRaw(t)
	errc := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 8))
		errc <- err
	}()
	// Close may come before the read waits or while it does: both end it.
	server.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on a closed connection: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read did not return after Close")
	}
}

// countingPool counts the buffers taken from it and not yet put back.
type countingPool struct {
	mem.BufferPool
	gets, held atomic.Int64
}

func (p *countingPool) Get(n int) *[]byte {
	p.gets.Add(1)
	p.held.Add(1)
	return p.BufferPool.Get(n)
}

func (p *countingPool) Put(b *[]byte) {
	p.held.Add(-1)
	p.BufferPool.Put(b)
}

// TestReadOnReadyWaitsWithoutABuffer: a connection waiting for data holds
// no buffer of gRPC's pool (10,000 idle workers would pin 320 MiB).
func TestReadOnReadyWaitsWithoutABuffer(t *testing.T) {
	client, server := acceptRaw(t)
	pool := &countingPool{BufferPool: mem.DefaultBufferPool()}
	type result struct {
		data string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		b, n, err := server.ReadOnReady(32*1024, pool)
		if err != nil {
			done <- result{err: err}
			return
		}
		// Put back before reporting, so that the count read after the
		// result is final.
		data := string((*b)[:n])
		pool.Put(b)
		done <- result{data: data}
	}()
	// The first attempt finds nothing, puts its buffer back and waits.
	deadline := time.Now().Add(10 * time.Second)
	for pool.gets.Load() == 0 || pool.held.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for data: %d buffers taken, %d held; want none held", pool.gets.Load(), pool.held.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := client.Write([]byte("report")); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || r.data != "report" {
		t.Fatalf("ReadOnReady = %q, %v; want \"report\", nil", r.data, r.err)
	}
	if held := pool.held.Load(); held != 0 {
		t.Fatalf("%d buffers held after the read, want 0", held)
	}
}

// readyCounter counts the ReadOnReady calls on the connections it accepts.
type readyCounter struct {
	net.Listener
	calls *atomic.Int64
}

func (l readyCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if rc, ok := c.(*rawReadConn); ok {
		return readyCountingConn{rc, l.calls}, err
	}
	return c, err
}

type readyCountingConn struct {
	*rawReadConn
	calls *atomic.Int64
}

func (c readyCountingConn) ReadOnReady(bufSize int, pool mem.BufferPool) (*[]byte, int, error) {
	c.calls.Add(1)
	return c.rawReadConn.ReadOnReady(bufSize, pool)
}

// TestGRPCReadsOnReady: grpc-go still reads a plaintext connection through
// ReadOnReady, so that an idle worker's connection pins no read buffer (a
// grpc-go that stopped looking for it would cost the manager 32 KiB more
// per worker).
func TestGRPCReadsOnReady(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(readyCounter{rawReads(lis), &calls})
	defer srv.Stop()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if calls.Load() == 0 {
		t.Fatal("the server read the call without ReadOnReady")
	}
}

// TestRawReadConnReset: a reset connection's read fails with the errno,
// named as a read's error.
func TestRawReadConnReset(t *testing.T) {
	client, server := acceptRaw(t)
	client.(*net.TCPConn).SetLinger(0) // close with a reset
	client.Close()
	_, err := server.Read(make([]byte, 8))
	var serr *os.SyscallError
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &serr) {
		t.Fatalf("Read after a reset: %v, want a read error with ECONNRESET", err)
	}
}

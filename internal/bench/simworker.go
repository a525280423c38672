//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/wire"
)

// simServer is the WorkerProcessService of many simulated workers at once:
// idle workers only answer HealthCheck and ReportMetrics, and those answers
// do not depend on which worker is asked, so one grpc.Server serves every
// simulated worker's listener. Each worker still has its own address, its
// own registration and its own connection from the manager, which is what
// the manager pays for.
type simServer struct {
	pb.UnimplementedWorkerProcessServiceServer
	started time.Time
	health  atomic.Int64 // health messages sent
}

func (s *simServer) HealthCheck(req *pb.HealthCheckRequest, stream pb.WorkerProcessService_HealthCheckServer) error {
	interval := max(wire.FromDuration(req.GetInterval()), 50*time.Millisecond)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := stream.Send(&pb.HealthCheckResponse{State: pb.WorkerState_WORKER_STATE_UP, Capacity: 1, Time: wire.Timestamp(time.Now())}); err != nil {
			return err
		}
		s.health.Add(1)
		select {
		case <-stream.Context().Done():
			return nil
		case <-t.C:
		}
	}
}

// simMetricsRefresh is the worker's metricsRefresh (internal/worker): a
// worker sends a sample that did not change much only every this many
// intervals, and an idle simulated worker's samples never change.
const simMetricsRefresh = 12

func (s *simServer) ReportMetrics(req *pb.ReportMetricsRequest, stream pb.WorkerProcessService_ReportMetricsServer) error {
	interval := max(wire.FromDuration(req.GetInterval()), 100*time.Millisecond)
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; ; i++ {
		if i%simMetricsRefresh == 0 {
			now := time.Now()
			if err := stream.Send(&pb.WorkerMetrics{Time: wire.Timestamp(now), CpuPercent: 1, Load1: 0.1, MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 8 << 30,
				DiskFreeBytes: 100 << 30, FreeSlots: 1, Uptime: wire.Duration(now.Sub(s.started)), Version: "sim"}); err != nil {
				return err
			}
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-t.C:
		}
	}
}

// simFleet is a set of simulated workers in this process.
type simFleet struct {
	srv    *grpc.Server
	impl   *simServer
	mu     sync.Mutex // protects lis
	lis    []net.Listener
	conns  []*grpc.ClientConn // to the manager, for registration
	wg     sync.WaitGroup     // the Serve goroutines
	nextID int                // the next worker's number
}

func newSimFleet(managerAddr string, first int) (*simFleet, error) {
	// The keepalive of a real worker's server (internal/worker.New): it
	// decides how often an idle worker pings the manager.
	srv := grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 4 * time.Second, PermitWithoutStream: true}),
	)
	f := &simFleet{nextID: first, srv: srv, impl: &simServer{started: time.Now()}}
	pb.RegisterWorkerProcessServiceServer(f.srv, f.impl)
	for range 4 {
		conn, err := grpc.NewClient(managerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("dial manager: %w", err)
		}
		f.conns = append(f.conns, conn)
	}
	return f, nil
}

// grow adds simulated workers until the next one's number is n, registering up to 32 at
// a time; each listens on its own port, spread over 127.0.x.y aliases
// (perIP per address).
func (f *simFleet) grow(ctx context.Context, n int) error {
	const perIP = 250
	sem := make(chan struct{}, 32)
	var (
		errMu sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for f.nextID < n && ctx.Err() == nil {
		i := f.nextID
		f.nextID++
		ip := loopbackIP(64 + i/perIP)
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return fmt.Errorf("listen for simulated worker %d: %w", i, err)
		}
		f.mu.Lock()
		f.lis = append(f.lis, l)
		f.mu.Unlock()
		f.wg.Add(1)
		go func() { defer f.wg.Done(); f.srv.Serve(l) }()
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			api := pb.NewWorkerRegistrationServiceClient(f.conns[i%len(f.conns)])
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_, err := api.RegisterWorker(rctx, &pb.RegisterWorkerRequest{
				Name: fmt.Sprintf("sim-%05d", i), Labels: map[string]string{"sim": "yes"}, Capacity: 1,
				Address: l.Addr().String(), Version: "sim",
				Fingerprint: &pb.Fingerprint{Os: "linux", Arch: "amd64", Cpus: 1, MemoryBytes: 8 << 30},
			})
			if err != nil {
				errMu.Lock()
				if first == nil {
					first = fmt.Errorf("register simulated worker %d: %w", i, err)
				}
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

func (f *simFleet) close() {
	f.srv.Stop() // closes every listener and connection
	f.wg.Wait()
	for _, c := range f.conns {
		c.Close()
	}
}

// simGroupSize is how many simulated workers one child process holds: each
// costs it a listener and a connection, and the open-file limit may not be
// raisable.
const simGroupSize = 2500

// simMain is a child process holding simulated workers first..first+count-1
// of the manager at addr. It prints "ready" once all are registered and
// runs until its stdin closes.
func simMain(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: -sim-workers MANAGER FIRST COUNT")
		return 2
	}
	first, _ := strconv.Atoi(args[1])
	count, _ := strconv.Atoi(args[2])
	f, err := newSimFleet(args[0], first)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.close()
	if err := f.grow(context.Background(), first+count); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// simGroups are the child processes holding simulated workers.
type simGroups struct {
	self, manager string
	n             int
	procs         []*exec.Cmd
	stdins        []io.WriteCloser
}

// grow starts children until n simulated workers are registered.
func (g *simGroups) grow(ctx context.Context, n int) error {
	for g.n < n {
		count := min(simGroupSize, n-g.n)
		cmd := exec.CommandContext(ctx, g.self, "-sim-workers", g.manager, strconv.Itoa(g.n), strconv.Itoa(count))
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start simulated workers: %w", err)
		}
		g.procs, g.stdins = append(g.procs, cmd), append(g.stdins, in)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "ready" {
			return fmt.Errorf("simulated workers %d..%d did not register: %v", g.n, g.n+count-1, err)
		}
		g.n += count
	}
	return nil
}

func (g *simGroups) close() {
	for i, c := range g.procs {
		g.stdins[i].Close()
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
}

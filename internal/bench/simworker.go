//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
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
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/pki"
	"github.com/devops-platform/devops/internal/wire"
	realworker "github.com/devops-platform/devops/internal/worker"
)

// simServer is the WorkerProcessService of many simulated workers at once.
// The manager calls a worker only when it has work for it, and idle
// workers get none, so one grpc.Server serves every simulated worker's
// listener. Each worker still has its own address, its own connection to
// the manager, its own registration and its own ReportStatus stream, which
// is what the manager pays for.
type simServer struct {
	pb.UnimplementedWorkerProcessServiceServer
}

// simMetricsRefresh is the worker's metricsRefresh (internal/worker): a
// worker sends a sample that did not change much only every this many
// intervals, and an idle simulated worker's samples never change.
const simMetricsRefresh = 12

// simFleet is a set of simulated workers in this process.
type simFleet struct {
	manager string
	// sec is how the workers join and talk to the manager; nil: plaintext
	// (a manager run with --insecure).
	sec     *simSecurity
	srv     *grpc.Server
	started time.Time
	mu      sync.Mutex // protects lis and conns
	lis     []net.Listener
	conns   []*grpc.ClientConn // to the manager, one per worker
	wg      sync.WaitGroup     // the Serve goroutines and the workers' report loops
	nextID  int                // the next worker's number
	reports atomic.Int64       // status reports sent
}

func newSimFleet(managerAddr string, first int, sec *simSecurity) *simFleet {
	// The keepalive of a real worker's server (internal/worker.New): it
	// decides how often an idle worker pings the manager.
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 4 * time.Second, PermitWithoutStream: true}),
	}
	if sec != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(sec.serverConfig())))
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterWorkerProcessServiceServer(srv, &simServer{})
	return &simFleet{manager: managerAddr, nextID: first, srv: srv, started: time.Now(), sec: sec}
}

// simSecurity is what the simulated workers of a TLS manager share: a
// client TLS config that trusts its CA, the join token, a connection to
// join over, and each worker's certificate by its listen address (one
// server serves them all).
type simSecurity struct {
	tls   *tls.Config
	token string
	join  *grpc.ClientConn
	mu    sync.Mutex // protects certs
	certs map[string]*tls.Certificate
}

// newSimSecurity reads the manager's CA and join token, and dials the
// manager for joins as a worker holding only the token does (no client
// certificate); the bench trusts the CA file where a worker pins it.
func newSimSecurity(managerAddr, caFile, joinFile string) (*simSecurity, error) {
	cfg, err := client.TLSConfig(caFile)
	if err != nil {
		return nil, err
	}
	token, err := os.ReadFile(joinFile)
	if err != nil {
		return nil, fmt.Errorf("read join token: %w", err)
	}
	sec := &simSecurity{tls: cfg, token: strings.TrimSpace(string(token)), certs: map[string]*tls.Certificate{}}
	sec.join, err = grpc.NewClient(managerAddr, grpc.WithDisableServiceConfig(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("dial manager to join: %w", err)
	}
	return sec, nil
}

// joinAs trades the join token for a certificate for name, as a real
// worker's first start does (internal/worker's joinOnce), and keeps it as
// the certificate of the worker listening on listen.
func (s *simSecurity) joinAs(ctx context.Context, name, listen string) (*tls.Certificate, error) {
	key, csr, err := pki.NewRequest(name)
	if err != nil {
		return nil, err
	}
	resp, err := pb.NewSecurityServiceClient(s.join).JoinWorker(ctx, &pb.JoinWorkerRequest{Token: s.token, Name: name, Csr: csr})
	if err != nil {
		return nil, fmt.Errorf("join as %s: %w", name, err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(resp.GetCertificatePem(), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", name, err)
	}
	s.mu.Lock()
	s.certs[listen] = &cert
	s.mu.Unlock()
	return &cert, nil
}

// serverConfig serves each simulated worker's listener with its own
// certificate and, as a real worker, takes the manager's certificate.
func (s *simSecurity) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  s.tls.RootCAs,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if c := s.certs[hello.Conn.LocalAddr().String()]; c != nil {
				return c, nil
			}
			return nil, errors.New("no simulated worker listens here")
		},
	}
}

// creds is the transport of one simulated worker to the manager.
func (s *simSecurity) creds(cert *tls.Certificate) grpc.DialOption {
	if s == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	cfg := s.tls.Clone()
	cfg.Certificates = []tls.Certificate{*cert}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

func (s *simSecurity) close() {
	if s != nil {
		s.join.Close()
	}
}

// grow adds simulated workers until the next one's number is n, registering up to 32 at
// a time; each listens on its own port, spread over 127.0.x.y aliases
// (perIP per address), and connects to the manager from that address.
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
		name := fmt.Sprintf("sim-%05d", i)
		var cert *tls.Certificate
		if f.sec != nil {
			jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			cert, err = f.sec.joinAs(jctx, name, l.Addr().String())
			cancel()
			if err != nil {
				l.Close()
				return err
			}
		}
		// The client settings of a real worker's connection to the
		// manager (internal/worker.Run), from the worker's own address.
		local := &net.TCPAddr{IP: net.ParseIP(ip)}
		conn, err := grpc.NewClient(f.manager,
			f.sec.creds(cert),
			grpc.WithDisableServiceConfig(),
			grpc.WithKeepaliveParams(realworker.ManagerKeepalive()),
			grpc.WithStaticStreamWindowSize(1<<20),
			grpc.WithStaticConnWindowSize(1<<20),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				d := net.Dialer{LocalAddr: local}
				return d.DialContext(ctx, "tcp", addr)
			}),
		)
		if err != nil {
			l.Close()
			return fmt.Errorf("dial manager for simulated worker %d: %w", i, err)
		}
		f.mu.Lock()
		f.lis = append(f.lis, l)
		f.conns = append(f.conns, conn)
		f.mu.Unlock()
		f.wg.Add(1)
		go func() { defer f.wg.Done(); f.srv.Serve(l) }()
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			api := pb.NewWorkerRegistrationServiceClient(conn)
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			resp, err := api.RegisterWorker(rctx, &pb.RegisterWorkerRequest{
				Name: name, Labels: map[string]string{"sim": "yes"}, Capacity: 1,
				Address: l.Addr().String(), Version: "sim",
				Fingerprint: &pb.Fingerprint{Os: "linux", Arch: "amd64", Cpus: 1, MemoryBytes: 8 << 30},
			})
			if err != nil {
				errMu.Lock()
				if first == nil {
					first = fmt.Errorf("register simulated worker %d: %w", i, err)
				}
				errMu.Unlock()
				return
			}
			f.wg.Add(1)
			go func() { defer f.wg.Done(); f.report(ctx, api, resp.GetWorkerId()) }()
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// report is an idle worker's status stream (internal/worker's report): its
// health every health interval, with a metrics sample on the first report
// after every simMetricsRefresh-th metrics interval, until the stream or
// ctx ends. It does not reconnect: a
// simulated worker that lost its stream stays DOWN, and the bench sees it.
func (f *simFleet) report(ctx context.Context, api pb.WorkerRegistrationServiceClient, id string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.ReportStatus(ctx)
	if err != nil {
		return
	}
	if err := stream.Send(&pb.StatusReport{WorkerId: id, Health: simHealth(), Metrics: f.metrics()}); err != nil {
		return
	}
	settings, err := stream.Recv()
	if err != nil {
		return
	}
	every := max(wire.FromDuration(settings.GetHealthInterval()), 50*time.Millisecond)
	health := time.NewTimer(realworker.UntilNextReport(every))
	defer health.Stop()
	metricsEvery := max(wire.FromDuration(settings.GetMetricsInterval()), 100*time.Millisecond) * simMetricsRefresh
	nextSample := time.Now().Add(metricsEvery)
	for {
		select {
		case <-ctx.Done():
			return
		case <-health.C:
		}
		health.Reset(realworker.UntilNextReport(every))
		rep := &pb.StatusReport{Health: simHealth()}
		if now := time.Now(); !now.Before(nextSample) {
			nextSample = now.Add(metricsEvery)
			rep.Metrics = f.metrics()
		}
		if err := stream.Send(rep); err != nil {
			return
		}
		f.reports.Add(1)
	}
}

// simHealth is an idle worker's health on its status stream (internal/worker's
// statusHealth: no time).
func simHealth() *pb.HealthCheckResponse {
	return &pb.HealthCheckResponse{State: pb.WorkerState_WORKER_STATE_UP, Capacity: 1}
}

func (f *simFleet) metrics() *pb.WorkerMetrics {
	now := time.Now()
	return &pb.WorkerMetrics{Time: wire.Timestamp(now), CpuPercent: 1, Load1: 0.1, MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 8 << 30,
		DiskFreeBytes: 100 << 30, FreeSlots: 1, Uptime: wire.Duration(now.Sub(f.started)), Version: "sim"}
}

func (f *simFleet) close() {
	f.srv.Stop() // closes every listener and connection to the workers
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close() // ends the report loops
	}
	f.mu.Unlock()
	f.wg.Wait()
	f.sec.close()
}

// simGroupSize is how many simulated workers one child process holds: each
// costs it a listener and a connection, and the open-file limit may not be
// raisable.
const simGroupSize = 2500

// simMain is a child process holding simulated workers first..first+count-1
// of the manager at addr, joining with the CA and join token files when
// given (a TLS manager). It prints "ready" once all are registered and
// runs until its stdin closes.
func simMain(args []string) int {
	if len(args) != 3 && len(args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: -sim-workers MANAGER FIRST COUNT [CA-FILE JOIN-TOKEN-FILE]")
		return 2
	}
	first, _ := strconv.Atoi(args[1])
	count, _ := strconv.Atoi(args[2])
	var sec *simSecurity
	if len(args) == 5 {
		var err error
		if sec, err = newSimSecurity(args[0], args[3], args[4]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	f := newSimFleet(args[0], first, sec)
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
	// caFile and joinFile are the manager's CA and join token; empty for
	// a plaintext manager.
	caFile, joinFile string
	n                int
	procs            []*exec.Cmd
	stdins           []io.WriteCloser
}

// grow starts children until n simulated workers are registered.
func (g *simGroups) grow(ctx context.Context, n int) error {
	for g.n < n {
		count := min(simGroupSize, n-g.n)
		args := []string{"-sim-workers", g.manager, strconv.Itoa(g.n), strconv.Itoa(count)}
		if g.caFile != "" {
			args = append(args, g.caFile, g.joinFile)
		}
		cmd := exec.CommandContext(ctx, g.self, args...)
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

package metrics_test

// Integration tests of health, reflection, worker metrics, /metrics and logs
// on a real manager and real workers (internal/testcluster).

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/shirou/gopsutil/v4/mem"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/testcluster"
	"github.com/devops-platform/devops/internal/wire"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// dial talks TLS without verifying the server, as a probe would: health
// and reflection need no credentials.
func dial(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	return dialWith(tb, addr, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}))
}

func dialWith(tb testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

func TestHealthServing(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	for name, addr := range map[string]string{"manager": c.Addr(), "worker": c.Worker(0).Addr()} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			hc := healthpb.NewHealthClient(dial(t, addr))
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if got := resp.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check = %v, want SERVING", got)
			}
			watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			first, err := watch.Recv()
			if err != nil {
				t.Fatalf("Watch.Recv: %v", err)
			}
			if got := first.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Watch first = %v, want SERVING", got)
			}
		})
	}
}

// TestReflectionListsServices does what `grpcurl ADDR list` and
// `grpcurl ADDR describe SERVICE` do, on the manager and on a worker.
func TestReflectionListsServices(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	common := []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"}
	tests := []struct {
		name string
		addr string
		want []string
	}{
		{"manager", c.Addr(), append([]string{"devops.v1.ProcessManagementService", "devops.v1.WorkerRegistrationService"}, common...)},
		{"worker", c.Worker(0).Addr(), append([]string{"devops.v1.WorkerProcessService"}, common...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			stream, err := reflectionpb.NewServerReflectionClient(dial(t, tt.addr)).ServerReflectionInfo(ctx)
			if err != nil {
				t.Fatalf("ServerReflectionInfo: %v", err)
			}
			ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
				t.Helper()
				if err := stream.Send(req); err != nil {
					t.Fatalf("send %v: %v", req, err)
				}
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("recv: %v", err)
				}
				if e := resp.GetErrorResponse(); e != nil {
					t.Fatalf("reflection answered %v with error %d %s", req, e.GetErrorCode(), e.GetErrorMessage())
				}
				return resp
			}
			resp := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
			var got []string
			for _, s := range resp.GetListServicesResponse().GetService() {
				got = append(got, s.GetName())
			}
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("services = %v, want %s among them", got, w)
				}
			}
			// Every listed service can be described: its file descriptors are served.
			for _, s := range got {
				r := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: s}})
				if len(r.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
					t.Errorf("FileContainingSymbol(%q) returned no descriptor", s)
				}
			}
		})
	}
}

// TestReportMetricsMemoryTotal reads the worker's ReportMetrics stream
// itself, then checks that the manager keeps the samples it reads.
func TestReportMetricsMemoryTotal(t *testing.T) {
	// The test calls the worker as the manager does; without the manager's
	// certificate, only a plaintext (--insecure) cluster lets it.
	c := testcluster.Start(t, testcluster.Options{Capacity: 5, Insecure: true})
	vm, err := mem.VirtualMemory()
	if err != nil {
		t.Skipf("gopsutil cannot read this machine's memory: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := pb.NewWorkerProcessServiceClient(dialWith(t, c.Worker(0).Addr(), insecure.NewCredentials())).ReportMetrics(ctx, &pb.ReportMetricsRequest{Interval: wire.Duration(100 * time.Millisecond)})
	if err != nil {
		t.Fatalf("ReportMetrics: %v", err)
	}
	for i := range 2 {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv sample %d: %v", i, err)
		}
		s := wire.MetricsFromPB(msg)
		if s.MemoryTotalBytes != vm.Total {
			t.Errorf("sample %d: memory total = %d, want %d (mem.VirtualMemory().Total)", i, s.MemoryTotalBytes, vm.Total)
		}
		if s.MemoryUsedBytes == 0 || s.MemoryUsedBytes > s.MemoryTotalBytes {
			t.Errorf("sample %d: memory used = %d of %d", i, s.MemoryUsedBytes, s.MemoryTotalBytes)
		}
		if s.FreeSlots != 5 || s.Running != 0 {
			t.Errorf("sample %d: running %d, free slots %d, want 0 and 5", i, s.Running, s.FreeSlots)
		}
		if s.Version != devops.Version || s.Time.IsZero() || s.DiskFreeBytes == 0 {
			t.Errorf("sample %d: version %q, time %v, disk free %d", i, s.Version, s.Time, s.DiskFreeBytes)
		}
	}

	// The manager holds its own stream open and keeps the latest sample
	// and a history.
	c.Eventually(10*time.Second, "manager has two samples of w1", func() bool {
		h, err := c.Manager().WorkerHistory(testcluster.WorkerName(0))
		return err == nil && len(h) >= 2
	})
	ws, err := c.Client.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].Metrics.MemoryTotalBytes != vm.Total {
		t.Fatalf("Workers() = %+v, want one worker whose memory total is %d", ws, vm.Total)
	}
	h, _ := c.Manager().WorkerHistory(testcluster.WorkerName(0))
	for i := 1; i < len(h); i++ {
		if h[i].Time.Before(h[i-1].Time) {
			t.Fatalf("history not oldest first at %d: %v before %v", i, h[i].Time, h[i-1].Time)
		}
	}
}

func scrape(tb testing.TB, addr string) string {
	tb.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		tb.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("scrape %s: %d %v", addr, resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		tb.Fatalf("scrape %s: Content-Type %q, want the text format", addr, ct)
	}
	return string(body)
}

// promtool runs `promtool check metrics` on a scrape; it skips when promtool
// is not installed (Debian's prometheus package provides it; .ci/run
// installs it).
func promtool(t *testing.T, what, body string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not on PATH (apt-get install prometheus); skipping the lint of the exposition")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics on the %s's /metrics: %v\n%s", what, err, out)
	}
}

func TestMetricsEndpoints(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{HTTP: true})
	// One finished process, so that every kind of series has a value.
	if code := c.CLI(t.Context(), "run", "--", "sh", "-c", "echo hi; echo ho >&2").Code; code != 0 {
		t.Fatalf("run exited %d", code)
	}
	tests := []struct {
		name string
		addr string
		want []string
	}{
		{"manager", c.Manager().HTTPAddr(), []string{
			`devops_workers{state="up"} 1`,
			`devops_processes{state="succeeded"} 1`,
			`devops_processes_started_total 1`,
			`devops_processes_finished_total{state="succeeded"} 1`,
			`devops_output_bytes_total{stream="stdout"} 3`,
			`devops_output_bytes_total{stream="stderr"} 3`,
			`devops_dispatch_latency_seconds_count 1`,
			`devops_worker_slots{worker="w1"} 8`,
			`devops_worker_memory_total_bytes{worker="w1"}`,
			`grpc_server_started_total{grpc_method="ExecuteDistributedCommand"`,
			`grpc_client_started_total{grpc_method="ExecuteCommand"`,
			`go_goroutines `,
			`process_resident_memory_bytes `,
		}},
		{"worker", c.Worker(0).HTTPAddr(), []string{
			`devops_worker_processes_started_total 1`,
			`devops_worker_warm_starts_total `,
			`devops_worker_warm_shims_idle `,
			`devops_worker_processes_finished_total{state="succeeded"} 1`,
			`devops_worker_processes_running 0`,
			`devops_worker_slots 8`,
			`devops_worker_draining 0`,
			`devops_worker_spool_bytes `,
			`grpc_server_started_total{grpc_method="ExecuteCommand"`,
			`go_goroutines `,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := scrape(t, tt.addr)
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("/metrics has no line with %q", w)
				}
			}
			resp, err := http.Get("http://" + tt.addr + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("/healthz = %d, want 200", resp.StatusCode)
			}
			promtool(t, tt.name, body)
		})
	}
}

// value reads one sample from a registry: a counter's or gauge's value, or
// a histogram's count; labels must match exactly.
func value(tb testing.TB, g prometheus.Gatherer, name string, labels map[string]string) (v float64, sum float64) {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !labelsMatch(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue(), 0
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), 0
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0 // a series not yet created counts as zero
}

func labelsMatch(ls []*dto.LabelPair, want map[string]string) bool {
	if len(ls) != len(want) {
		return false
	}
	for _, l := range ls {
		if want[l.GetName()] != l.GetValue() {
			return false
		}
	}
	return true
}

// TestDispatchMovesMetrics runs one command and checks that each counter
// and histogram moved by exactly what that one dispatch should add.
func TestDispatchMovesMetrics(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	mreg, wreg := c.Manager().Metrics(), c.Worker(0).Metrics()
	type series struct {
		g      prometheus.Gatherer
		name   string
		labels map[string]string
		delta  float64
		// atLeast: the gRPC call counts also count the tracker's retries,
		// which a loaded machine may cause (a slow heartbeat marks the
		// worker DOWN for a moment); the domain counts never do.
		atLeast bool
	}
	grpcLabels := func(typ, svc, method string) map[string]string {
		return map[string]string{"grpc_type": typ, "grpc_service": svc, "grpc_method": method}
	}
	checks := []series{
		{mreg, "devops_processes_started_total", nil, 1, false},
		{mreg, "devops_processes_finished_total", map[string]string{"state": "failed"}, 1, false},
		{mreg, "devops_processes_finished_total", map[string]string{"state": "succeeded"}, 0, false},
		{mreg, "devops_output_bytes_total", map[string]string{"stream": "stdout"}, 5, false},
		{mreg, "devops_output_bytes_total", map[string]string{"stream": "stderr"}, 2, false},
		{mreg, "devops_dispatch_latency_seconds", nil, 1, false},
		{mreg, "devops_processes", map[string]string{"state": "failed"}, 1, false},
		{mreg, "grpc_server_started_total", grpcLabels("server_stream", "devops.v1.ProcessManagementService", "ExecuteDistributedCommand"), 1, true},
		{mreg, "grpc_client_started_total", grpcLabels("server_stream", "devops.v1.WorkerProcessService", "ExecuteCommand"), 1, true},
		{wreg, "devops_worker_processes_started_total", nil, 1, false},
		{wreg, "devops_worker_processes_finished_total", map[string]string{"state": "failed"}, 1, false},
		{wreg, "grpc_server_started_total", grpcLabels("server_stream", "devops.v1.WorkerProcessService", "ExecuteCommand"), 1, true},
	}
	before := make([]float64, len(checks))
	for i, s := range checks {
		before[i], _ = value(t, s.g, s.name, s.labels)
	}
	_, sumBefore := value(t, mreg, "devops_dispatch_latency_seconds", nil)

	start := time.Now()
	var final devops.Process
	err := c.Client.Run(t.Context(), client.RunRequest{Spec: devops.Spec{Argv: []string{"sh", "-c", "printf hello; printf ab >&2; exit 3"}}}, func(ev client.Event) error {
		if ev.Process != nil {
			final = *ev.Process
		}
		return nil
	})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if final.State != devops.StateFailed || final.Code != 3 {
		t.Fatalf("process ended %v with code %d (%s), want FAILED with 3", final.State, final.Code, final.Reason)
	}
	for i, s := range checks {
		got, _ := value(t, s.g, s.name, s.labels)
		d := got - before[i]
		switch {
		case s.atLeast && d < s.delta:
			t.Errorf("%s%v moved by %v, want at least %v", s.name, s.labels, d, s.delta)
		case !s.atLeast && d != s.delta:
			t.Errorf("%s%v moved by %v, want %v", s.name, s.labels, d, s.delta)
		}
	}
	_, sum := value(t, mreg, "devops_dispatch_latency_seconds", nil)
	if d := sum - sumBefore; d <= 0 || d > elapsed.Seconds() {
		t.Errorf("dispatch latency observed %vs, want more than 0 and at most the %v the run took", d, elapsed)
	}
}

// TestLogsNameProcessAndWorkerAndHideSecrets runs commands that start, fail,
// print and get killed, with a secret in their environment, and reads every
// log line the manager and the worker wrote meanwhile.
func TestLogsNameProcessAndWorkerAndHideSecrets(t *testing.T) {
	const secret = "hunter2-7f3a9c-very-secret"
	var logs testcluster.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := testcluster.Start(t, testcluster.Options{Logger: log})
	spec := devops.Spec{
		Argv:          []string{"sh", "-c", "echo out; echo err >&2; exit 2"},
		Env:           map[string]string{"API_TOKEN": secret, "PLAIN": "visible"},
		SecretEnvKeys: []string{"API_TOKEN"},
	}
	if err := c.Client.Run(t.Context(), client.RunRequest{Spec: spec}, func(client.Event) error { return nil }); err != nil {
		t.Fatalf("Run: %v", err)
	}
	spec.Argv = []string{"sleep", "60"}
	ps, err := c.Client.Submit(t.Context(), client.RunRequest{Spec: spec})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	id := ps[0].ID
	c.Eventually(10*time.Second, "sleep running", func() bool {
		p, err := c.Client.Status(t.Context(), id)
		return err == nil && p.State == devops.StateRunning
	})
	if _, err := c.Client.Terminate(t.Context(), id, 0, time.Second); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	c.Eventually(10*time.Second, "sleep terminated", func() bool {
		p, err := c.Client.Status(t.Context(), id)
		return err == nil && p.State.Terminal()
	})

	text := logs.String()
	if strings.Contains(text, secret) {
		t.Errorf("a log line carries the secret value:\n%s", text)
	}
	var aboutProcesses int
	for line := range strings.Lines(text) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		if _, ok := rec["process_id"]; !ok {
			continue
		}
		aboutProcesses++
		if w, ok := rec["worker"].(string); !ok || w == "" {
			t.Errorf("log line about a process has no worker: %s", line)
		}
	}
	if aboutProcesses < 4 {
		t.Errorf("only %d log lines name a process; want at least start and end on manager and worker, twice:\n%s", aboutProcesses, text)
	}
}

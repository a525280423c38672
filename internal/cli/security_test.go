package cli_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/cli"
	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/manager"
	"github.com/devops-platform/devops/internal/testcluster"
	"github.com/devops-platform/devops/internal/worker"
)

// secureCluster is two workers, w1 env=staging and w2 env=prod, with
// short-lived worker certificates.
func secureCluster(t *testing.T) *testcluster.Cluster {
	t.Helper()
	return testcluster.Start(t, testcluster.Options{
		Workers: 2,
		Labels: func(i int) map[string]string {
			return map[string]string{"env": []string{"staging", "prod"}[i]}
		},
		Manager: func(c *manager.Config) { c.Security.WorkerCertTTL = 3 * time.Second },
	})
}

// tokenFile creates a token through the CLI as admin and writes it to a file.
func tokenFile(t *testing.T, c *testcluster.Cluster, args ...string) string {
	t.Helper()
	r := c.CLI(t.Context(), append([]string{"token", "create"}, args...)...)
	if r.Code != 0 {
		t.Fatalf("token create %v = %d %q", args, r.Code, r.Stderr)
	}
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(r.Stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s = %v, want %s containing %q", what, err, code, msg)
	}
}

// auditHas reports whether the audit log holds an entry with action and a
// result containing result.
func auditHas(t *testing.T, c *testcluster.Cluster, action, result string) bool {
	t.Helper()
	es, _, err := c.Client.Audit(t.Context(), 1000)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	for _, e := range es {
		if e.Action == action && strings.Contains(e.Result, result) {
			return true
		}
	}
	return false
}

func TestSecurityClients(t *testing.T) {
	c := secureCluster(t)
	ctx := t.Context()

	info, err := os.Stat(c.AdminTokenFile())
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("admin.token: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	for _, f := range []string{"join.token", "ca.key", "tokens.json", "audit.log"} {
		if info, err := os.Stat(filepath.Join(c.ManagerDir(), f)); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, info.Mode().Perm())
		}
	}

	t.Run("no token", func(t *testing.T) {
		cl, err := client.Dial(c.Addr(), c.ClientOptions("")...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		_, err = cl.Workers(ctx)
		wantCode(t, "ListWorkers without a token", err, codes.Unauthenticated, "no API token")
	})
	t.Run("negative ttl", func(t *testing.T) {
		before, err := c.Client.Tokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r := c.CLI(ctx, "token", "create", "--role", "admin", "--ttl", "-1h")
		if r.Code == 0 || !strings.Contains(r.Stderr, "ttl") {
			t.Errorf("token create --ttl -1h = %d %q %q, want refused (it made a token that never expires)", r.Code, r.Stdout, r.Stderr)
		}
		if after, _ := c.Client.Tokens(ctx); len(after) != len(before) {
			t.Errorf("tokens after a refused create: %d, want %d", len(after), len(before))
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "bad")
		os.WriteFile(path, []byte("0123456789ab.0123456789abcdef0123456789abcdef\n"), 0o600)
		cl, err := client.Dial(c.Addr(), c.ClientOptions(path)...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		_, err = cl.Submit(ctx, client.RunRequest{Spec: devops.Spec{Argv: []string{"true"}}})
		wantCode(t, "run with a wrong token", err, codes.Unauthenticated, "unknown or malformed token")
		r := c.CLI(ctx, "--token-file", path, "ps")
		if r.Code == 0 || !strings.Contains(r.Stderr, "unknown or malformed token") {
			t.Errorf("devops ps with a wrong token = %d %q", r.Code, r.Stderr)
		}
	})
	t.Run("plaintext client", func(t *testing.T) {
		cl, err := client.Dial(c.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		_, err = cl.Workers(ctx)
		if status.Code(err) != codes.Unavailable {
			t.Errorf("plaintext ListWorkers = %v, want Unavailable", err)
		}
		r := c.CLI(ctx, "--insecure", "workers")
		if r.Code == 0 {
			t.Errorf("devops --insecure workers against a TLS manager = 0, want refused")
		}
	})
	t.Run("viewer", func(t *testing.T) {
		viewer := tokenFile(t, c, "--role", "viewer")
		if r := c.CLI(ctx, "--token-file", viewer, "workers"); r.Code != 0 {
			t.Errorf("viewer: devops workers = %d %q", r.Code, r.Stderr)
		}
		r := c.CLI(ctx, "--token-file", viewer, "run", "--", "true")
		if r.Code == 0 || !strings.Contains(r.Stderr, "role viewer may not run") {
			t.Errorf("viewer: devops run = %d %q, want refused", r.Code, r.Stderr)
		}
		// Nor upload a large input: said as plainly, with nothing else.
		r = c.CLIStdin(ctx, bytes.NewReader(make([]byte, devops.MaxStdin+1)), "--token-file", viewer, "run", "-i", "--", "wc", "-c")
		if r.Code != 255 || r.Stderr != "devops: role viewer may not run, kill and drain (UploadStdin)\n" {
			t.Errorf("viewer: devops run -i with 4 MiB + 1 = %d %q, want refused", r.Code, r.Stderr)
		}
		r = c.CLI(ctx, "--token-file", viewer, "token", "list")
		if r.Code == 0 || !strings.Contains(r.Stderr, "role viewer may not manage tokens, revoke workers or read the audit log (ListTokens)") {
			t.Errorf("viewer: devops token list = %d %q, want refused", r.Code, r.Stderr)
		}
	})
	t.Run("scoped operator", func(t *testing.T) {
		// A process on prod, started by the admin.
		prod := c.CLI(ctx, "run", "--worker", "w2", "--", "echo", "prod secret")
		if prod.Code != 0 {
			t.Fatalf("admin run on w2 = %d %q", prod.Code, prod.Stderr)
		}
		op := tokenFile(t, c, "--role", "operator", "--scope", "env=staging")
		r := c.CLI(ctx, "--token-file", op, "run", "--worker", "w2", "--", "true")
		if r.Code == 0 || !strings.Contains(r.Stderr, `outside this token's scope "env=staging"`) {
			t.Errorf("scoped operator: run on w2 = %d %q, want refused", r.Code, r.Stderr)
		}
		r = c.CLI(ctx, "--token-file", op, "run", "--all", "--", "echo", "hi")
		if r.Code != 0 || r.Stdout != "w1: hi\n" && r.Stdout != "hi\n" {
			t.Errorf("scoped operator: run --all = %d %q %q, want only w1", r.Code, r.Stdout, r.Stderr)
		}
		r = c.CLI(ctx, "--token-file", op, "run", "--", "echo", "any")
		if r.Code != 0 || !strings.Contains(r.Stdout, "any") {
			t.Errorf("scoped operator: run = %d %q %q", r.Code, r.Stdout, r.Stderr)
		}
		r = c.CLI(ctx, "--token-file", op, "ps", "-o", "json")
		if r.Code != 0 || strings.Contains(r.Stdout, "w2") || !strings.Contains(r.Stdout, "w1") {
			t.Errorf("scoped operator: ps = %d %q, want w1's processes only", r.Code, r.Stdout)
		}
		r = c.CLI(ctx, "--token-file", op, "workers")
		if r.Code != 0 || strings.Contains(r.Stdout, "w2") {
			t.Errorf("scoped operator: workers = %d %q, want w1 only", r.Code, r.Stdout)
		}
		ps, err := c.Client.Processes(ctx, devops.StateUnknown, "w2")
		if err != nil || len(ps) == 0 {
			t.Fatalf("admin ps on w2: %v %v", ps, err)
		}
		r = c.CLI(ctx, "--token-file", op, "logs", string(ps[0].ID))
		if r.Code == 0 || strings.Contains(r.Stdout, "prod secret") {
			t.Errorf("scoped operator: logs of a prod process = %d %q, want refused", r.Code, r.Stdout)
		}
	})
	t.Run("audit", func(t *testing.T) {
		for _, want := range [][2]string{
			{"call ListWorkers", "Unauthenticated"},
			{"run", "Unauthenticated"},
			{"run", "PermissionDenied: role viewer"},
			{"run", "PermissionDenied: worker w2 is outside"},
			{"run", "ok"},
			{"token.create", "ok"},
		} {
			if !auditHas(t, c, want[0], want[1]) {
				t.Errorf("audit log has no %q entry with result %q", want[0], want[1])
			}
		}
		r := c.CLI(ctx, "audit")
		if r.Code != 0 || !strings.Contains(r.Stdout, "token:") || !strings.Contains(r.Stdout, "echo hi") {
			t.Errorf("devops audit = %d %q %q", r.Code, r.Stdout, r.Stderr)
		}
	})
}

func TestSecurityWorkers(t *testing.T) {
	c := secureCluster(t)
	ctx := t.Context()

	join := func(name, token string) error {
		w, err := worker.New(worker.Config{Manager: c.Addr(), Name: name, Listen: "127.0.0.1:0", HTTP: "-",
			DataDir: t.TempDir(), InitPath: os.Args[0], Security: worker.SecurityConfig{JoinToken: token}})
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return w.Run(rctx)
	}
	listed := func(name string) bool {
		ws, err := c.Client.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			if w.Name == name {
				return true
			}
		}
		return false
	}

	t.Run("wrong join token", func(t *testing.T) {
		good := c.JoinToken()
		parts := strings.Split(good, ".")
		bad := parts[0] + ".0123456789abcdef0123456789abcdef." + parts[2]
		if err := join("intruder", bad); err == nil || !strings.Contains(err.Error(), "unknown or malformed token") {
			t.Errorf("join with a wrong token = %v", err)
		}
		if listed("intruder") {
			t.Error("a worker with a wrong token is listed")
		}
	})
	t.Run("expired join token", func(t *testing.T) {
		path := tokenFile(t, c, "--role", "worker", "--ttl", "1s")
		b, _ := os.ReadFile(path)
		time.Sleep(1100 * time.Millisecond)
		if err := join("late", strings.TrimSpace(string(b))); err == nil || !strings.Contains(err.Error(), "token expired") {
			t.Errorf("join with an expired token = %v", err)
		}
		if listed("late") {
			t.Error("a worker with an expired token is listed")
		}
	})
	t.Run("api token cannot join", func(t *testing.T) {
		b, _ := os.ReadFile(c.AdminTokenFile())
		if _, err := worker.New(worker.Config{Manager: c.Addr(), Name: "x", Listen: "127.0.0.1:0", HTTP: "-", DataDir: t.TempDir(),
			Security: worker.SecurityConfig{JoinToken: strings.TrimSpace(string(b))}}); err == nil || !strings.Contains(err.Error(), "join token: malformed") {
			t.Errorf("worker with an API token = %v", err)
		}
	})
	t.Run("a worker speaks only for itself", func(t *testing.T) {
		// w1's certificate, on a connection of its own to the manager.
		cert, err := tls.LoadX509KeyPair(filepath.Join(c.WorkerDir(0), "worker.crt"), filepath.Join(c.WorkerDir(0), "worker.key"))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
			InsecureSkipVerify: true, //nolint:gosec // the manager is not what this test checks
		})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var w2 devops.Worker
		ws, _ := c.Client.Workers(ctx)
		for _, w := range ws {
			if w.Name == "w2" {
				w2 = w
			}
		}
		api := pb.NewWorkerRegistrationServiceClient(conn)
		stream, err := api.ReportStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&pb.StatusReport{WorkerId: string(w2.ID), Health: &pb.HealthCheckResponse{State: pb.WorkerState_WORKER_STATE_UP}})
		_, err = stream.Recv()
		wantCode(t, "w1 reports for w2", err, codes.PermissionDenied, `worker certificate is for "w1", not "w2"`)
		_, err = api.DeregisterWorker(ctx, &pb.DeregisterWorkerRequest{WorkerId: string(w2.ID)})
		wantCode(t, "w1 deregisters w2", err, codes.PermissionDenied, `worker certificate is for "w1", not "w2"`)
		if !auditHas(t, c, "worker.report", "PermissionDenied") {
			t.Error("audit log has no refused worker.report")
		}
	})
	t.Run("renewal", func(t *testing.T) {
		certPath := filepath.Join(c.WorkerDir(0), "worker.crt")
		first, err := os.ReadFile(certPath)
		if err != nil {
			t.Fatal(err)
		}
		c.Eventually(10*time.Second, "certificate renewed", func() bool {
			now, _ := os.ReadFile(certPath)
			return len(now) > 0 && string(now) != string(first)
		})
		// The cluster still works after the first certificate expired.
		time.Sleep(2 * time.Second)
		if r := c.CLI(ctx, "run", "--worker", "w1", "--", "echo", "ok"); r.Code != 0 || r.Stdout != "ok\n" {
			t.Errorf("run after renewal = %d %q %q", r.Code, r.Stdout, r.Stderr)
		}
	})
	t.Run("revoke", func(t *testing.T) {
		r := c.CLI(ctx, "workers", "revoke", "w2")
		if r.Code != 0 || !strings.Contains(r.Stdout, "w2 revoked") {
			t.Fatalf("workers revoke w2 = %d %q %q", r.Code, r.Stdout, r.Stderr)
		}
		c.Eventually(5*time.Second, "w2 DOWN", func() bool {
			ws, _ := c.Client.Workers(ctx)
			for _, w := range ws {
				if w.Name == "w2" {
					return w.State == devops.WorkerDown
				}
			}
			return false
		})
		r = c.CLI(ctx, "run", "--worker", "w2", "--", "true")
		if r.Code == 0 {
			t.Errorf("run on a revoked worker = 0")
		}
		// Its status stream ended, and it may not register again: it stops.
		if err := c.WaitWorkerExit(1, 10*time.Second); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("revoked worker exited with %v, want an error saying it is revoked", err)
		}
		// Its name cannot join again, even with a valid join token.
		if err := join("w2", c.JoinToken()); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("join as a revoked worker = %v", err)
		}
		if !auditHas(t, c, "worker.revoke", "ok") {
			t.Error("audit log has no worker.revoke")
		}
		if !auditHas(t, c, "worker.join", "PermissionDenied") {
			t.Error("audit log has no refused worker.join")
		}

		// Admitted again, the name may join, but the certificate it held
		// before stays revoked.
		if r := c.CLI(ctx, "workers", "revoke", "--undo", "w2"); r.Code != 0 {
			t.Fatalf("workers revoke --undo w2 = %d %q", r.Code, r.Stderr)
		}
		c.StartWorker(1) // w2's data dir: its old certificate
		if err := c.WaitWorkerExit(1, 10*time.Second); err == nil || !strings.Contains(err.Error(), "certificate revoked") {
			t.Errorf("w2 with its old certificate exited with %v, want an error saying the certificate is revoked", err)
		}
		for _, f := range []string{"worker.crt", "worker.key"} {
			if err := os.Remove(filepath.Join(c.WorkerDir(1), f)); err != nil {
				t.Fatal(err)
			}
		}
		c.StartWorker(1) // joins again with the join token
		c.WaitWorkers(2)
		if r := c.CLI(ctx, "run", "--worker", "w2", "--", "echo", "back"); r.Code != 0 || r.Stdout != "back\n" {
			t.Errorf("run on w2 after it joined again = %d %q %q", r.Code, r.Stdout, r.Stderr)
		}
	})
}

func TestSecretEnvNeverShown(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()
	r := c.CLI(ctx, "run", "--secret-env", "PASSWORD=hunter2", "-e", "PLAIN=visible", "--", "sh", "-c", `test ${#PASSWORD} = 7 && echo has-secret`)
	if r.Code != 0 || r.Stdout != "has-secret\n" {
		t.Fatalf("run with a secret = %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	for _, args := range [][]string{{"ps", "-o", "json"}, {"audit", "-o", "json"}} {
		r := c.CLI(ctx, args...)
		if r.Code != 0 || strings.Contains(r.Stdout, "hunter2") {
			t.Errorf("devops %v = %d, shows the secret: %q", args, r.Code, r.Stdout)
		}
	}
	ps, err := c.Client.Processes(ctx, devops.StateUnknown, "")
	if err != nil || len(ps) != 1 || ps[0].Spec.Env["PASSWORD"] == "hunter2" || ps[0].Spec.Env["PLAIN"] != "visible" {
		t.Errorf("process record env = %v (%v), want the secret redacted", ps, err)
	}
}

// TestEnvFromTheCaller: -e K and --secret-env K pass the caller's value on,
// as docker run -e K does, so that a secret need not be on the command line
// (where ps shows it); K unset here is an error, K= an empty value.
func TestEnvFromTheCaller(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx := t.Context()
	here := map[string]string{"API_KEY": "s3cret", "REGION": "eu", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := here[k]; return v, ok }
	run := func(args ...string) testcluster.Result {
		var out, errb bytes.Buffer
		code := c.CLIEnv(ctx, cli.Env{Stdout: &out, Stderr: &errb, LookupEnv: lookup}, args...)
		return testcluster.Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
	}
	r := run("run", "--secret-env", "API_KEY", "-e", "REGION", "-e", "EMPTY", "-e", "ZONE=", "--", "sh", "-c",
		`echo "$REGION ${#API_KEY} [${EMPTY-unset}] [${ZONE-unset}]"`)
	if r.Code != 0 || r.Stdout != "eu 6 [] []\n" {
		t.Fatalf("run -e REGION --secret-env API_KEY = %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	ps, err := c.Client.Processes(ctx, devops.StateUnknown, "")
	if err != nil || len(ps) != 1 || ps[0].Spec.Env["API_KEY"] == "s3cret" || ps[0].Spec.Env["REGION"] != "eu" {
		t.Errorf("process record env = %v (%v), want REGION and the secret redacted", ps, err)
	}
	r = run("run", "-e", "NOT_HERE", "--", "true")
	if r.Code != 255 || !strings.Contains(r.Stderr, "NOT_HERE is not set here") {
		t.Errorf("run -e NOT_HERE = %d %q, want refused", r.Code, r.Stderr)
	}
	if r = run("run", "-e", "=x", "--", "true"); r.Code != 255 || !strings.Contains(r.Stderr, "want K=V") {
		t.Errorf("run -e =x = %d %q, want refused", r.Code, r.Stderr)
	}
	if r = run("run", "--secret-env", "TOKEN", "--", "true"); r.Code != 255 || !strings.Contains(r.Stderr, "--secret-env TOKEN: TOKEN is not set here") {
		t.Errorf("run --secret-env TOKEN = %d %q, want refused, naming the flag", r.Code, r.Stderr)
	}
}

// TestAuditLogRotates: the manager sets a full audit.log aside, keeps
// --audit-keep of those, and `devops audit` reads on across them.
func TestAuditLogRotates(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{
		Manager: func(cfg *manager.Config) { cfg.Security.AuditMaxSize, cfg.Security.AuditKeep = 2000, 2 },
	})
	ctx := t.Context()
	for i := range 30 {
		if r := c.CLI(ctx, "run", "--", "echo", fmt.Sprintf("call-%02d", i)); r.Code != 0 {
			t.Fatalf("run %d = %d %q", i, r.Code, r.Stderr)
		}
	}
	aside, _ := filepath.Glob(filepath.Join(c.ManagerDir(), "audit.log.*Z"))
	if len(aside) != 2 {
		t.Fatalf("set-aside audit logs %v; want the 2 newest", aside)
	}
	r := c.CLI(ctx, "audit", "-n", "1000")
	if r.Code != 0 || !strings.Contains(r.Stdout, "call-29") || strings.Contains(r.Stdout, "call-00") {
		t.Fatalf("devops audit = %d %q %q; want the newest runs, not the first", r.Code, r.Stdout, r.Stderr)
	}
	var kept int
	for _, name := range append(aside, filepath.Join(c.ManagerDir(), "audit.log")) {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		kept += strings.Count(string(data), "\n")
	}
	if got := strings.Count(r.Stdout, "\n") - 1; got != kept { // a header line
		t.Errorf("devops audit listed %d entries; the files keep %d:\n%s", got, kept, r.Stdout)
	}
}

package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/testcluster"
)

// decodeJSONList reads what -o json printed for a list: a JSON array of the
// API's messages, each in protobuf's JSON mapping. Unknown fields fail it.
func decodeJSONList[M proto.Message](t *testing.T, what, out string, newM func() M) []M {
	t.Helper()
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(out), &raws); err != nil {
		t.Fatalf("%s -o json is not a JSON array: %v\n%s", what, err, out)
	}
	ms := make([]M, len(raws))
	for i, raw := range raws {
		ms[i] = newM()
		if err := protojson.Unmarshal(raw, ms[i]); err != nil {
			t.Fatalf("%s -o json: item %d is not a %s: %v\n%s", what, i, ms[i].ProtoReflect().Descriptor().Name(), err, raw)
		}
	}
	return ms
}

// decodeJSON reads what -o json printed for one object.
func decodeJSON[M proto.Message](t *testing.T, what, out string, m M) M {
	t.Helper()
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("%s -o json is not a %s: %v\n%s", what, m.ProtoReflect().Descriptor().Name(), err, out)
	}
	return m
}

// TestJSONOutput: every -o json prints the API's messages as the .proto
// files name them, states by name and durations as text, so that a script
// needs no table of numbers; before, it printed the manager's Go records
// ("State": 3, "Timeout": 30000000000).
func TestJSONOutput(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Workers: 2})
	ctx := t.Context()
	cli := func(args ...string) string {
		t.Helper()
		r := c.CLI(ctx, args...)
		if r.Code != 0 {
			t.Fatalf("devops %s = %d: %s", strings.Join(args, " "), r.Code, r.Stderr)
		}
		return r.Stdout
	}

	if r := c.CLI(ctx, "run", "--worker", "w1", "--timeout", "90s", "--", "sh", "-c", "echo out; exit 3"); r.Code != 3 {
		t.Fatalf("run = %d, want 3: %s", r.Code, r.Stderr)
	}
	cli("run", "--all", "--", "true")

	ps := decodeJSONList(t, "ps", cli("ps", "-o", "json"), func() *pb.Process { return &pb.Process{} })
	if len(ps) != 3 {
		t.Fatalf("ps -o json listed %d processes, want 3", len(ps))
	}
	failed := ps[0]
	if failed.GetState() != pb.ProcessState_PROCESS_STATE_FAILED || failed.GetExitCode() != 3 || failed.GetWorkerName() != "w1" ||
		failed.GetSpec().GetTimeout().AsDuration().Seconds() != 90 || failed.GetOutputBytes() != 4 || failed.GetEndedAt() == nil {
		t.Errorf("ps -o json: the first process is %v", failed)
	}
	st := cli("status", failed.GetId(), "-o", "json")
	for _, want := range []string{`"state": "PROCESS_STATE_FAILED"`, `"exit_code": 3`, `"timeout": "90s"`, `"worker_name": "w1"`} {
		if !strings.Contains(st, want) {
			t.Errorf("status -o json lacks %s:\n%s", want, st)
		}
	}
	// A record keeps the input's length only: the request-only fields are
	// left out, not printed as "" beside it (they were, before session 36).
	if !strings.Contains(st, `"stdin_bytes": "0"`) || strings.Contains(st, `"stdin":`) || strings.Contains(st, `"stdin_upload":`) {
		t.Errorf("status -o json should hold stdin_bytes and neither stdin nor stdin_upload:\n%s", st)
	}
	if p := decodeJSON(t, "status", st, &pb.Process{}); p.GetId() != failed.GetId() {
		t.Errorf("status -o json is process %s, want %s", p.GetId(), failed.GetId())
	}
	// A field at its zero value is printed, so that jq finds it.
	if st := cli("status", ps[1].GetId(), "-o", "json"); !strings.Contains(st, `"exit_code": 0`) {
		t.Errorf("status -o json of a success lacks its exit code 0:\n%s", st)
	}

	ws := decodeJSONList(t, "workers", cli("workers", "-o", "json"), func() *pb.Worker { return &pb.Worker{} })
	if len(ws) != 2 || ws[0].GetState() != pb.WorkerState_WORKER_STATE_UP || ws[0].GetFingerprint().GetOs() != "linux" {
		t.Errorf("workers -o json = %v", ws)
	}

	rs := decodeJSONList(t, "runs", cli("runs", "-o", "json"), func() *pb.Run { return &pb.Run{} })
	if len(rs) != 1 || rs[0].GetState() != pb.RunState_RUN_STATE_SUCCEEDED || len(rs[0].GetTasks()) != 2 || rs[0].GetSummary().GetSucceeded() != 2 {
		t.Fatalf("runs -o json = %v", rs)
	}
	if r := decodeJSON(t, "run-status", cli("run-status", rs[0].GetId(), "-o", "json"), &pb.Run{}); r.GetId() != rs[0].GetId() || !r.GetTarget().GetAll() {
		t.Errorf("run-status -o json = %v", r)
	}
	plan := decodeJSON(t, "run --dry-run", cli("run", "--all", "--exclude", "w2", "--dry-run", "-o", "json", "--", "true"), &pb.Run{})
	if len(plan.GetTasks()) != 1 || len(plan.GetExcluded()) != 1 || plan.GetExcluded()[0].GetWorkerName() != "w2" {
		t.Errorf("run --dry-run -o json = %v", plan)
	}

	ts := decodeJSONList(t, "token list", cli("token", "list", "-o", "json"), func() *pb.Token { return &pb.Token{} })
	if len(ts) == 0 || ts[0].GetRole() != "admin" || ts[0].GetCreatedAt() == nil || ts[0].GetExpiresAt() != nil {
		t.Errorf("token list -o json = %v, want the admin token, which never expires (no expires_at)", ts)
	}
	es := decodeJSONList(t, "audit", cli("audit", "-o", "json"), func() *pb.AuditEntry { return &pb.AuditEntry{} })
	if len(es) == 0 || es[0].GetAction() == "" || es[0].GetTime() == nil {
		t.Errorf("audit -o json = %v", es)
	}

	// Nothing to list is an empty array, not null.
	if out := cli("ps", "--state", "lost", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("ps -o json of nothing = %q, want []", out)
	}
}

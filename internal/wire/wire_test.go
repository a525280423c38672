package wire

import (
	"reflect"
	"testing"
	"time"

	"github.com/devops-platform/devops"
)

func TestProcessRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	p := devops.Process{
		ID: "p1", WorkerID: "w1", WorkerName: "one", State: devops.StateTerminated, Code: 0, Signal: 15, Reason: "asked",
		CreatedAt: at, StartedAt: at.Add(time.Second), EndedAt: at.Add(2 * time.Second), StateChangedAt: at.Add(2 * time.Second),
		OutputBytes: 42, OutputLost: 7, PeakMemory: 1 << 20, CPUTime: 3 * time.Millisecond,
		Spec: devops.Spec{Argv: []string{"sh", "-c", "x"}, Env: map[string]string{"A": "1"}, Dir: "/d", Timeout: time.Minute,
			Grace: time.Second, User: "nobody", KeepDir: true, Limits: devops.Limits{MemoryBytes: 1 << 30, CPUs: 0.5, Pids: 10, MaxOutputBytes: 100}},
	}
	if got := ProcessFromPB(ProcessToPB(p)); !reflect.DeepEqual(got, p) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, p)
	}
}

func TestSecretsAreRedacted(t *testing.T) {
	p := devops.Process{Spec: devops.Spec{Argv: []string{"true"}, Env: map[string]string{"TOKEN": "s3cret", "MODE": "x"}, SecretEnvKeys: []string{"TOKEN"}}}
	got := ProcessToPB(p).GetSpec().GetEnv()
	if got["TOKEN"] != Redacted || got["MODE"] != "x" {
		t.Errorf("env shown = %v, want TOKEN redacted", got)
	}
	if p.Spec.Env["TOKEN"] != "s3cret" {
		t.Errorf("redaction changed the original spec")
	}
	if SpecFromPB(SpecToPB(p.Spec)).Env["TOKEN"] != "s3cret" {
		t.Errorf("the spec sent to a worker must keep the secret")
	}
}

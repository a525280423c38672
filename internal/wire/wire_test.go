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
			Grace: time.Second, User: "nobody", KeepDir: true, Limits: devops.Limits{MemoryBytes: 1 << 30, CPUs: 0.5, Pids: 10, MaxOutputBytes: 100},
			StdinBytes: 12},
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

func TestRunRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	r := devops.Run{
		ID: "run-1", Spec: devops.Spec{Argv: []string{"sh", "-c", "x"}}, Target: devops.RunTarget{Workers: []string{"w1", "w2"}},
		Options: devops.RunOptions{MaxConcurrency: devops.Limit{Set: true, N: 50, Percent: true}, MaxErrors: devops.Limit{Set: true, N: 1},
			StopOnError: devops.StopKill, Canary: 1, Retries: 2},
		State: devops.RunFailed, Reason: "1 of 2 failed",
		Tasks: []devops.RunTask{
			{WorkerID: "i1", WorkerName: "w1", ProcessID: "p3", Canary: true, State: devops.StateFailed, ExitCode: 3,
				Previous: []devops.RunAttempt{{ProcessID: "p1", State: devops.StateFailed, ExitCode: 3}, {ProcessID: "p2", State: devops.StateTimedOut, ExitCode: 124}}},
			{WorkerID: "i2", WorkerName: "w2", Skipped: true, Reason: "canary failed on w1"},
		},
		Excluded:  []devops.Exclusion{{WorkerID: "i3", WorkerName: "w3", Reason: "down"}},
		Summary:   devops.RunSummary{Total: 2, Failed: 1, Skipped: 1},
		CreatedAt: at, EndedAt: at.Add(time.Second), QueueTimeout: time.Minute, DisconnectGrace: 2 * time.Minute,
	}
	if got := RunFromPB(RunToPB(r)); !reflect.DeepEqual(got, r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
	}
}

// TestStdinGoesToTheWorkerOnly: a spec sent to a worker carries the input's
// bytes; one shown to a client only its length.
func TestStdinGoesToTheWorkerOnly(t *testing.T) {
	s := devops.Spec{Argv: []string{"sh"}, Stdin: []byte("echo hi\n")}
	if got := SpecFromPB(SpecToPB(s)); string(got.Stdin) != "echo hi\n" || got.StdinBytes != 8 {
		t.Errorf("sent to a worker: %q, %d bytes; want the input and 8", got.Stdin, got.StdinBytes)
	}
	p := devops.Process{Spec: s}
	p.Spec.StdinBytes = 8
	if got := ProcessToPB(p).GetSpec(); got.GetStdin() != nil || got.GetStdinBytes() != 8 {
		t.Errorf("shown to a client: %q, %d bytes; want no input and 8", got.GetStdin(), got.GetStdinBytes())
	}
	if got := RunToPB(devops.Run{Spec: p.Spec}).GetSpec(); got.GetStdin() != nil || got.GetStdinBytes() != 8 {
		t.Errorf("a run shown to a client: %q, %d bytes; want no input and 8", got.GetStdin(), got.GetStdinBytes())
	}
}

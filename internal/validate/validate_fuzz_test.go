package validate

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/devops-platform/devops/api/devops/v1"
)

// FuzzRequest: Request never panics on any run request, decoded from raw
// bytes as the gRPC server would, or built from fuzzed fields.
func FuzzRequest(f *testing.F) {
	seed, _ := proto.Marshal(&pb.ExecuteDistributedCommandRequest{Spec: &pb.Spec{Argv: []string{"echo", "hi"}, Env: map[string]string{"A": "1"}},
		Target: &pb.Target{Selector: "zone=a"}, QueueTimeout: durationpb.New(time.Second)})
	f.Add(seed, "echo", "K", "v", "zone in (a,b)", int64(1))
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00}, "", "", "", "", int64(-1))
	f.Add([]byte{}, "sh\x00", "=", "\x00", "a in (", int64(1<<62))
	f.Fuzz(func(t *testing.T, raw []byte, arg, k, v, sel string, secs int64) {
		var req pb.ExecuteDistributedCommandRequest
		if proto.Unmarshal(raw, &req) == nil {
			_ = Request(&req)
		}
		built := &pb.ExecuteDistributedCommandRequest{
			Spec:         &pb.Spec{Argv: []string{arg}, Env: map[string]string{k: v}, SecretEnvKeys: []string{k}, Timeout: &durationpb.Duration{Seconds: secs}},
			Target:       &pb.Target{Selector: sel, Worker: v},
			QueueTimeout: &durationpb.Duration{Seconds: secs, Nanos: int32(secs)},
		}
		err := Request(built)
		if err == nil && (arg == "" || secs < 0) {
			t.Fatalf("Request accepted argv %q, timeout %ds", arg, secs)
		}
		_ = Request(&pb.StreamOutputRequest{ProcessId: arg, FromOffset: secs})
		_ = Request(&pb.RegisterWorkerRequest{Name: arg, Labels: map[string]string{k: v}, Capacity: int32(secs)})
	})
}

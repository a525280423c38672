package validate

import (
	"errors"
	"testing"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
)

func TestSpecWorkingDirectory(t *testing.T) {
	for dir, ok := range map[string]bool{"": true, "/srv/app": true, "/": true, "relative": false, "./x": false, "~/x": false} {
		err := Spec(&pb.Spec{Argv: []string{"pwd"}, Dir: dir})
		if (err == nil) != ok || err != nil && !errors.Is(err, devops.ErrInvalid) {
			t.Errorf("Spec(dir %q) = %v, want ok %t", dir, err, ok)
		}
	}
}

func TestSpecMemoryLimit(t *testing.T) {
	for m, ok := range map[int64]bool{0: true, 10: false, devops.MinMemory - 1: false, devops.MinMemory: true, 256 << 20: true} {
		err := Spec(&pb.Spec{Argv: []string{"true"}, Limits: &pb.Limits{MemoryBytes: m}})
		if (err == nil) != ok || err != nil && !errors.Is(err, devops.ErrInvalid) {
			t.Errorf("Spec(memory %d) = %v, want ok %t", m, err, ok)
		}
	}
}

func TestStartRunRetries(t *testing.T) {
	tests := []struct {
		retries int32
		ok      bool
	}{{0, true}, {3, true}, {devops.MaxRetries, true}, {-1, false}, {devops.MaxRetries + 1, false}}
	for _, tt := range tests {
		req := &pb.StartRunRequest{Spec: &pb.Spec{Argv: []string{"true"}}, Target: &pb.RunTarget{All: true}, Options: &pb.RunOptions{Retries: tt.retries}}
		err := Request(req)
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, devops.ErrInvalid) {
			t.Errorf("Request(retries %d) = %v, want ok %t", tt.retries, err, tt.ok)
		}
	}
}

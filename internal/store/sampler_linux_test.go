package store

import (
	"fmt"
	"os"
	"testing"
)

// The name must resolve to nats-server's variable, which its init set to
// this process's stat file; a variable of our own would be empty. Only read
// here: the sampler's timer reads it concurrently in this test binary, and
// StopNATSSampler's write is for main, before that timer first fires.
func TestNATSStatFileLinked(t *testing.T) {
	if want := fmt.Sprintf("/proc/%d/stat", os.Getpid()); natsStatFile != want {
		t.Fatalf("natsStatFile = %q, want %q: nats-server's pse package no longer has procStatFile, and StopNATSSampler does nothing", natsStatFile, want)
	}
}

func TestMissingStatFile(t *testing.T) {
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"/proc/12345/stat", "/proc/00000/stat", true},
		{"/proc/1/stat", "/proc/0/stat", true},
		{"", "", false},
		{"/proc//stat", "", false},
		{"/proc/12/status", "", false},
	}
	for _, tt := range tests {
		got, ok := missingStatFile(tt.path)
		if got != tt.want || ok != tt.ok {
			t.Errorf("missingStatFile(%q) = %q, %v, want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
		if ok {
			if _, err := os.Stat(got); err == nil {
				t.Errorf("missingStatFile(%q) = %q, which exists", tt.path, got)
			}
		}
	}
}

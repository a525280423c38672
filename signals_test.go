package devops

import (
	"syscall"
	"testing"
)

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
	}{
		{"TERM", 15}, {"sigkill", 9}, {"SIGINT", 2}, {"9", 9}, {"hup", 1}, {" usr1 ", 10},
		// Linux's numbers, on any OS: macOS's USR2, STOP and CONT are 31, 17
		// and 19.
		{"USR2", 12}, {"STOP", 19}, {"CONT", 18}, {"40", 40},
	}
	for _, tt := range tests {
		if got, err := ParseSignal(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseSignal(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "NOPE", "0", "65", "-1", "SIG"} {
		if _, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q) succeeded, want an error", bad)
		}
	}
}

func TestSignalName(t *testing.T) {
	for sig, want := range map[syscall.Signal]string{9: "SIGKILL", 10: "SIGUSR1", 15: "SIGTERM", 19: "SIGSTOP", 40: "signal 40", 0: "signal 0"} {
		if got := SignalName(sig); got != want {
			t.Errorf("SignalName(%d) = %q, want %q", sig, got, want)
		}
	}
	// Every name parses back to its number.
	for n, name := range linuxSignals {
		if name == "" {
			continue
		}
		if got, err := ParseSignal(name); err != nil || int(got) != n {
			t.Errorf("ParseSignal(%q) = %d, %v; want %d", name, got, err, n)
		}
	}
}

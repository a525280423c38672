package devops

import (
	"errors"
	"strings"
	"testing"
)

func TestParseState(t *testing.T) {
	for _, name := range []string{"RUNNING", "running", "Timed_Out"} {
		if s, err := ParseState(name); err != nil || !strings.EqualFold(s.String(), name) {
			t.Errorf("ParseState(%q) = %v, %v", name, s, err)
		}
	}
	// A wrong name is told the right ones; UNKNOWN is not one a user asks for.
	_, err := ParseState("bogus")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "want one of PENDING, RUNNING, SUCCEEDED, FAILED, TERMINATED, TIMED_OUT, LOST, DISCONNECTED") {
		t.Errorf("ParseState(bogus) = %v", err)
	}
	if _, err := ParseState("unknown"); err == nil {
		t.Error("ParseState(unknown) = nil error, want refused")
	}
}

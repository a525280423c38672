//go:build linux

package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestTimeBaseline(t *testing.T) {
	sh := func(script string) func(context.Context) (*exec.Cmd, error) {
		return func(ctx context.Context) (*exec.Cmd, error) { return exec.CommandContext(ctx, "sh", "-c", script), nil }
	}
	if _, out, err := timeBaseline(t.Context(), time.Minute, sh("echo done")); err != nil || string(out) != "done\n" {
		t.Errorf("timeBaseline(echo done) = %q, %v, want \"done\\n\", nil", out, err)
	}
	_, _, err := timeBaseline(t.Context(), 50*time.Millisecond, sh("sleep 10"))
	if err == nil || !strings.Contains(err.Error(), "did not finish within 50ms: stopped") {
		t.Errorf("timeBaseline(sleep 10) past its limit = %v, want it to say it was stopped at the limit", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, _, err = timeBaseline(ctx, time.Minute, sh("sleep 10"))
	if err == nil || err.Error() != "stopped at the scenario's time limit" {
		t.Errorf("timeBaseline(sleep 10) past the scenario's limit = %v, want it to say so", err)
	}
	if _, _, err := timeBaseline(t.Context(), time.Minute, sh("exit 3")); err == nil || strings.Contains(err.Error(), "did not finish") {
		t.Errorf("timeBaseline(exit 3) = %v, want the command's own failure", err)
	}
}

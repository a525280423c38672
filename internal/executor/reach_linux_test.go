package executor_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devops-platform/devops/internal/executor"
)

// TestWarnsWhenOtherUsersCannotReachRoot: a root under a directory other
// users cannot pass is said at start, with the fix: --user commands would
// fail there with a bare "permission denied".
func TestWarnsWhenOtherUsersCannotReachRoot(t *testing.T) {
	requireRoot(t)
	closed := t.TempDir()
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	e, err := executor.New(executor.Config{Root: filepath.Join(closed, "processes"), NoDocker: true,
		InitPath: mustAbs(t, os.Args[0]), CgroupRoot: fmt.Sprintf("devops-test-%d-reach", os.Getpid()),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		removeCgroupBases(t, executor.CgroupBases(e))
	})
	if !strings.Contains(logs.String(), "cannot reach their directories") || !strings.Contains(logs.String(), "chmod o+x "+closed) {
		t.Errorf("no warning naming %s:\n%s", closed, logs.String())
	}
}

func mustAbs(tb testing.TB, path string) string {
	tb.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		tb.Fatal(err)
	}
	return abs
}

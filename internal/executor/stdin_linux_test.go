package executor_test

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/executor"
)

// TestStdin: a command reads Spec.Stdin, byte for byte, then end of file,
// however it starts: in this process (Start, through an init or not),
// under a cold shim, a warm one
// (twice on the same shim: the second time in the namespaces of the first's
// init, its /tmp new), as another user, and without namespaces (where the
// init becomes the command). Without Stdin it reads end of file at once.
func TestStdin(t *testing.T) {
	input := []byte("line one\nline two\n\x00binary\xff no newline")
	want := "first: line one\n" + string(input[len("line one\n"):])
	spec := devops.Spec{Argv: []string{"sh", "-c", `read first; echo "first: $first"; cat`}, Stdin: input}
	none := devops.Spec{Argv: []string{"sh", "-c", "cat; echo end of file"}}
	check := func(t *testing.T, what string, st devops.ExitStatus, stdout, stderr, want string) {
		t.Helper()
		if st.State != devops.StateSucceeded || stdout != want {
			t.Errorf("%s: %v (%s), stdout %q, stderr %q; want stdout %q", what, st.State, st.Reason, stdout, stderr, want)
		}
	}
	supervised := func(t *testing.T, e *executor.Executor, id string, spec devops.Spec, pooled bool) (devops.ExitStatus, string, string) {
		t.Helper()
		if pooled {
			waitWarm(t, e, 1)
		}
		p, dir := startSupervised(t, e, id, spec)
		if p.Pooled() != pooled {
			t.Fatalf("%s: Pooled = %v, want %v", id, p.Pooled(), pooled)
		}
		st := waitEnd(t, p, 20*time.Second)
		stdout, stderr := readFrames(t, dir)
		if _, err := os.Stat(filepath.Join(dir, executor.StdinFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: the input's file is left in the process's directory (%v)", id, err)
		}
		return st, stdout, stderr
	}

	t.Run("start", func(t *testing.T) {
		e := newExecutor(t, "", devops.Limits{})
		r := run(t, e, "start", spec)
		check(t, "with input", r.status, r.stdout, r.stderr, want)
		r = run(t, e, "start-none", none)
		check(t, "without", r.status, r.stdout, r.stderr, "end of file\n")
	})
	t.Run("start without an init", func(t *testing.T) {
		// An init binary that does not answer: the command starts in this
		// process, without cgroups, which nothing would make it join.
		e, err := executor.New(executor.Config{Root: t.TempDir(), InitPath: "/bin/true", NoDocker: true,
			CgroupRoot: fmt.Sprintf("devops-test-%d-noinit", os.Getpid()), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		if fp := e.Fingerprint(); fp.Cgroups != "" || fp.Namespaces {
			t.Errorf("fingerprint without an init: %+v, want no cgroups and no namespaces", fp)
		}
		r := run(t, e, "direct", spec)
		check(t, "with input", r.status, r.stdout, r.stderr, want)
		r = run(t, e, "direct-none", none)
		check(t, "without", r.status, r.stdout, r.stderr, "end of file\n")
	})
	t.Run("cold", func(t *testing.T) {
		e := newExecutorConfig(t, executor.Config{})
		st, o, e2 := supervised(t, e, "cold", spec, false)
		check(t, "with input", st, o, e2, want)
		st, o, e2 = supervised(t, e, "cold-none", none, false)
		check(t, "without", st, o, e2, "end of file\n")
	})
	t.Run("warm", func(t *testing.T) {
		e := newExecutorConfig(t, executor.Config{WarmShims: 1})
		for i := range 2 {
			st, o, e2 := supervised(t, e, fmt.Sprintf("warm-%d", i), spec, true)
			check(t, fmt.Sprintf("with input, round %d", i), st, o, e2, want)
		}
		st, o, e2 := supervised(t, e, "warm-none", none, true)
		check(t, "without", st, o, e2, "end of file\n")
	})
	t.Run("as another user", func(t *testing.T) {
		requireRoot(t)
		e := newExecutorConfig(t, executor.Config{WarmShims: 1})
		as := spec
		as.User, as.Dir = "65534", "/"
		// The file is the worker's, readable by it alone: the init opens
		// it for the command.
		st, o, e2 := supervised(t, e, "user", as, true)
		check(t, "with input", st, o, e2, want)
	})
	t.Run("without namespaces", func(t *testing.T) {
		requireRoot(t)
		for _, warm := range []int{0, 1} {
			e := newExecutorConfig(t, executor.Config{WarmShims: warm})
			requireCgroups(t, e)
			executor.WithoutNamespaces(e)
			st, o, e2 := supervised(t, e, fmt.Sprintf("nons-%d", warm), spec, warm > 0)
			check(t, fmt.Sprintf("with input, %d warm", warm), st, o, e2, want)
		}
	})
}

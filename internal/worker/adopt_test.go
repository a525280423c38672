package worker

import (
	"os"
	"path/filepath"
	"testing"
)

// TestAdoptLeavesSpareDirectories: the executor's spare directories (in
// the spool and under processes/, named ".spare-N") are not processes a
// previous worker left: adopting at start neither takes nor removes them
// (the executor's own pools handle them).
func TestAdoptLeavesSpareDirectories(t *testing.T) {
	dir := t.TempDir()
	spareOwn := filepath.Join(dir, "spool", ".spare-7")
	spareHome := filepath.Join(dir, "processes", ".spare-7")
	for _, d := range []string{spareOwn, spareHome} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(spareOwn, "output"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// No warm shims: the executor keeps no spares of its own, so only
	// adopt could remove these. An init that fails at once: the test
	// binary would run the tests again when probed as one.
	w, err := New(Config{
		DataDir: dir, Listen: "127.0.0.1:0", HTTP: "-", WarmShims: -1, InitPath: "/bin/false",
		Security: SecurityConfig{Insecure: true},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer w.shutdown(true)
	for _, d := range []string{spareOwn, spareHome} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("after the worker's start, %s: %v", d, err)
		}
	}
	w.mu.Lock()
	n := len(w.procs)
	w.mu.Unlock()
	if n != 0 {
		t.Errorf("the worker adopted %d processes, want none", n)
	}
}

package spare

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func mkdir(path string) error { return os.Mkdir(path, 0o700) }

// ready is how many spares p holds, made and not yet taken.
func ready(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// waitReady waits until p holds n spares.
func waitReady(tb testing.TB, p *Pool, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ready(p) != n {
		if time.Now().After(deadline) {
			tb.Fatalf("Ready() = %d after 10s, want %d", ready(p), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func names(tb testing.TB, dir string) []string {
	tb.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var ns []string
	for _, e := range es {
		ns = append(ns, e.Name())
	}
	return ns
}

func skipOffLinux(tb testing.TB) {
	if runtime.GOOS != "linux" {
		tb.Skip("spares are taken only on Linux (rename without replacing)")
	}
}

func TestTakeMovesASpareAndMakesAnother(t *testing.T) {
	skipOffLinux(t)
	dir := t.TempDir()
	p := New(dir, ".spare-", 2, mkdir, nil)
	defer p.Close()
	waitReady(t, p, 2)
	dst := filepath.Join(dir, "p1")
	if !p.Take(dst) {
		t.Fatal("Take = false with two spares ready")
	}
	if st, err := os.Stat(dst); err != nil || !st.IsDir() {
		t.Fatalf("after Take, %s: %v, %v; want a directory", dst, st, err)
	}
	waitReady(t, p, 2)
	if got := len(names(t, dir)); got != 3 {
		t.Errorf("%d entries in the directory (%v), want p1 and two spares", got, names(t, dir))
	}
}

func TestTakeNeverReplaces(t *testing.T) {
	skipOffLinux(t)
	dir := t.TempDir()
	p := New(dir, ".spare-", 1, EmptyFile, nil)
	defer p.Close()
	waitReady(t, p, 1)
	dst := filepath.Join(dir, "taken")
	if err := os.WriteFile(dst, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if p.Take(dst) {
		t.Fatal("Take = true onto an existing file")
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Errorf("existing file now holds %q", b)
	}
	if ready(p) != 1 {
		t.Errorf("Ready() = %d after a refused take, want the spare kept", ready(p))
	}
}

func TestNewRemovesLeftoversOfItsPrefixOnly(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{".spare-7", ".spare-8", "keep", ".other-1"} {
		if err := os.MkdirAll(filepath.Join(dir, d, "inner"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	p := New(dir, ".spare-", 0, mkdir, nil)
	defer p.Close()
	got := names(t, dir)
	if len(got) != 2 || got[0] != ".other-1" || got[1] != "keep" {
		t.Errorf("after New, the directory holds %v, want [.other-1 keep]", got)
	}
	if p.Take(filepath.Join(dir, "x")) {
		t.Error("Take = true from a pool of none")
	}
}

func TestCloseRemovesSpares(t *testing.T) {
	skipOffLinux(t)
	dir := t.TempDir()
	p := New(dir, ".spare-", 3, mkdir, nil)
	waitReady(t, p, 3)
	p.Close()
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("after Close, the directory holds %v, want nothing", got)
	}
	if p.Take(filepath.Join(dir, "x")) {
		t.Error("Take = true after Close")
	}
	p.Close() // twice is fine
}

func TestMakeFailsThenTakeTriesAgain(t *testing.T) {
	skipOffLinux(t)
	dir := t.TempDir()
	var calls atomic.Int32
	mk := func(path string) error {
		if calls.Add(1) == 1 {
			return errors.New("disk full")
		}
		return mkdir(path)
	}
	p := New(dir, ".spare-", 1, mk, nil)
	defer p.Close()
	// The first make failed: the filler waits for a take, which finds none.
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no spare was made within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	for ready(p) == 0 {
		p.Take(filepath.Join(dir, "never")) // pokes the filler
		if time.Now().After(deadline) {
			t.Fatal("the pool did not make a spare again after a failure")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRefillWaitsAfterAQuietTake: a take after a quiet moment has the pool
// make more only refillDelay later (the command it started goes first);
// takes that come often, or one that leaves none, have it make them at
// once.
func TestRefillWaitsAfterAQuietTake(t *testing.T) {
	skipOffLinux(t)
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := New(dir, ".spare-", 2, mkdir, nil)
		defer p.Close()
		take := func(name string) {
			t.Helper()
			if !p.Take(filepath.Join(dir, name)) {
				t.Fatalf("Take(%s) = false", name)
			}
			synctest.Wait()
		}
		want := func(n int, when string) {
			t.Helper()
			if got := ready(p); got != n {
				t.Errorf("%d spares %s, want %d", got, when, n)
			}
		}
		synctest.Wait()
		want(2, "at start")
		take("p1") // the first: after a quiet moment
		want(1, "right after a quiet take")
		time.Sleep(refillDelay)
		synctest.Wait()
		want(2, "refillDelay after a quiet take")
		take("p2") // refillDelay after the last: not quiet
		want(2, "right after a take that came soon after another")
		time.Sleep(quietGap)
		take("p3")
		want(1, "right after a quiet take")
		take("p4") // leaves none: the pause ends
		want(2, "right after the pool ran out")
	})
}

// TestRemoveAllRemovesATree: what a command left in its directory goes
// with it, nested directories and files included, and a directory already
// gone is no error.
func TestRemoveAllRemovesATree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "proc")
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"out", "a/x", "a/b/y"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveAll(dir); err != nil {
		t.Fatalf("RemoveAll: %v", err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there: %v", dir, err)
	}
	if err := RemoveAll(dir); err != nil {
		t.Errorf("RemoveAll of what is gone: %v", err)
	}
}

// TestNestedPool checks that a nested pool makes its spares in its nests,
// in turn, that a take moves one into the pool's directory, and that what
// an earlier pool left (a nest with a spare in it) is removed at the start
// and nothing is left after Close.
func TestNestedPool(t *testing.T) {
	skipOffLinux(t)
	dir := t.TempDir()
	stale := filepath.Join(dir, ".spare-nest-7")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := EmptyFile(filepath.Join(stale, ".spare-3")); err != nil {
		t.Fatal(err)
	}
	p := NewNested(dir, ".spare-", 2, 3, EmptyFile, nil)
	waitReady(t, p, 3)
	if got := names(t, dir); len(got) != 2 || got[0] != ".spare-nest-0" || got[1] != ".spare-nest-1" {
		t.Fatalf("the pool's directory holds %v, want the two nests only", got)
	}
	// Spares 0 and 2 in the first nest, 1 in the second.
	if a, b := names(t, filepath.Join(dir, ".spare-nest-0")), names(t, filepath.Join(dir, ".spare-nest-1")); len(a) != 2 || len(b) != 1 {
		t.Fatalf("nests hold %v and %v, want two spares and one", a, b)
	}
	dst := filepath.Join(dir, "p1.out")
	if !p.Take(dst) {
		t.Fatal("Take = false with three spares ready")
	}
	if st, err := os.Stat(dst); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("after Take, %s: %v, %v; want a file", dst, st, err)
	}
	waitReady(t, p, 3)
	p.Close()
	if got := names(t, dir); len(got) != 1 || got[0] != "p1.out" {
		t.Errorf("after Close the directory holds %v, want only what was taken", got)
	}
}

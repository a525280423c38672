package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func openLog(t *testing.T) *Log {
	t.Helper()
	l, err := Open(filepath.Join(t.TempDir(), "audit.log"), Rotation{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// queued waits until n entries wait for the next write.
func queued(t *testing.T, l *Log, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		lines := 0
		for _, c := range l.next.data {
			if c == '\n' {
				lines++
			}
		}
		l.mu.Unlock()
		if lines == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d entries queued after 10 s, want %d", lines, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAppendsShareASync: appends that come while a sync runs are written
// by one more sync, not one each, and every append returns once its entry
// is synced; the entries read back in full.
func TestAppendsShareASync(t *testing.T) {
	l := openLog(t)
	release := make(chan struct{})
	var mu sync.Mutex
	syncs := 0
	sync0 := l.syncFile
	l.syncFile = func(f *os.File) error {
		mu.Lock()
		syncs++
		first := syncs == 1
		mu.Unlock()
		if first {
			<-release // the first sync holds while the others queue
		}
		return sync0(f)
	}
	const n = 10
	errs := make(chan error, n+1)
	go func() { errs <- l.Append(Entry{Principal: "first", Action: "run"}) }()
	// The first is being synced once nothing is queued and it is flushing.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		flushing := l.flushing
		l.mu.Unlock()
		if flushing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first append did not start its sync")
		}
		time.Sleep(time.Millisecond)
	}
	for i := range n {
		go func() { errs <- l.Append(Entry{Principal: fmt.Sprint("p", i), Action: "run"}) }()
	}
	queued(t, l, n)
	close(release)
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatalf("Append = %v", err)
		}
	}
	if syncs != 2 {
		t.Errorf("%d syncs for %d appends, %d of them while the first synced; want 2", syncs, n+1, n)
	}
	es, err := l.Tail(100)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range es {
		seen[e.Principal] = true
	}
	if len(es) != n+1 || !seen["first"] || !seen["p0"] || !seen[fmt.Sprint("p", n-1)] {
		t.Errorf("Tail = %d entries %v, want the %d appended", len(es), seen, n+1)
	}
}

// TestAppendErrorReachesItsBatch: a failed sync fails every append of its
// batch, and the next appends succeed.
func TestAppendErrorReachesItsBatch(t *testing.T) {
	l := openLog(t)
	broken := errors.New("disk gone")
	fail := true
	sync0 := l.syncFile
	l.syncFile = func(f *os.File) error {
		if fail {
			fail = false // one failure; the next sync works
			return broken
		}
		return sync0(f)
	}
	if err := l.Append(Entry{Principal: "a", Action: "run"}); !errors.Is(err, broken) {
		t.Fatalf("Append with a failing sync = %v, want %v", err, broken)
	}
	if err := l.Append(Entry{Principal: "b", Action: "run"}); err != nil {
		t.Fatalf("Append after = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Entry{Principal: "c", Action: "run"}); err == nil {
		t.Error("Append after Close = nil, want an error")
	}
}

// TestConcurrentAppendsAllLand: entries from many goroutines at once are
// each read back once.
func TestConcurrentAppendsAllLand(t *testing.T) {
	l := openLog(t)
	const goroutines, each = 16, 25
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := l.Append(Entry{Principal: fmt.Sprint(g, "/", i), Action: "run"}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	es, err := l.Tail(goroutines * each * 2)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range es {
		seen[e.Principal]++
	}
	if len(es) != goroutines*each || len(seen) != goroutines*each {
		t.Errorf("Tail = %d entries, %d distinct; want %d each once", len(es), len(seen), goroutines*each)
	}
}

// BenchmarkAppendParallel: appends from concurrent callers (runs arriving
// at once), each waiting for its own sync.
func BenchmarkAppendParallel(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "audit.log"), Rotation{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.SetParallelism(32) // 32 callers a CPU
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Append(Entry{Principal: "token:bench", Action: "run", Argv: []string{"true"}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkTail: the last 100 entries of a log of 200,000 (a day of a
// busy manager's runs is millions).
func BenchmarkTail(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "audit.log"), Rotation{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	l.syncFile = func(f *os.File) error { return nil }
	e := Entry{Principal: "token:0123456789ab", Role: "admin", Action: "run", Argv: []string{"sh", "-c", "echo a nightly job"},
		Workers: []string{"worker-1"}, Result: "ok", Peer: "127.0.0.1:50000"}
	for range 200_000 {
		if err := l.Append(e); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if es, err := l.Tail(100); err != nil || len(es) != 100 {
			b.Fatalf("Tail(100) = %d entries, %v", len(es), err)
		}
	}
}

// TestTailReadsBackFromTheEnd: the last n entries, whatever the size of the
// blocks Tail reads against the lines', after a reopen too; a torn last
// line (a crash mid-write) is left out, and so is an empty line.
func TestTailReadsBackFromTheEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Rotation{})
	if err != nil {
		t.Fatal(err)
	}
	if es, err := l.Tail(5); err != nil || len(es) != 0 {
		t.Fatalf("Tail of an empty log = %v, %v", es, err)
	}
	const count = 40
	for i := range count {
		// Lines of different lengths, some longer than the smallest blocks.
		if err := l.Append(Entry{Principal: fmt.Sprint("p", i), Action: "run", Argv: []string{strings.Repeat("x", i*7)}}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// An empty line, then one torn where a read from the end sees "{}",
	// valid JSON, first.
	f.WriteString("\n" + `{"time":"2026-01-01T00:00:00Z","principal":"torn {}`)
	f.Close()

	if l, err = Open(path, Rotation{}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, block := range []int{1, 2, 7, 64, 200, 64 << 10} {
		l.block = block
		for _, n := range []int{1, 3, count, count + 10} {
			es, err := l.Tail(n)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range es {
				got = append(got, e.Principal)
			}
			var want []string
			for i := max(count-n, 0); i < count; i++ {
				want = append(want, fmt.Sprint("p", i))
			}
			if !slices.Equal(got, want) {
				t.Errorf("block %d: Tail(%d) = %v, want %v", block, n, got, want)
			}
		}
	}
}

// TestTailWaitsForNoSync: a listing of the log is not held up by an
// append's sync, nor holds one up; it has the entries written so far.
func TestTailWaitsForNoSync(t *testing.T) {
	l := openLog(t)
	if err := l.Append(Entry{Principal: "before", Action: "run"}); err != nil {
		t.Fatal(err)
	}
	syncing, release := make(chan struct{}), make(chan struct{})
	sync0 := l.syncFile
	l.syncFile = func(f *os.File) error {
		close(syncing)
		<-release
		return sync0(f)
	}
	appended := make(chan error, 1)
	go func() { appended <- l.Append(Entry{Principal: "during", Action: "run"}) }()
	<-syncing
	tailed := make(chan []Entry, 1)
	go func() {
		es, err := l.Tail(10)
		if err != nil {
			t.Error(err)
		}
		tailed <- es
	}()
	select {
	case es := <-tailed:
		if len(es) != 2 || es[0].Principal != "before" || es[1].Principal != "during" {
			t.Errorf("Tail during a sync = %+v, want before and during", es)
		}
	case <-time.After(10 * time.Second):
		close(release) // so that the test ends, and the log closes
		t.Fatal("Tail waited 10 s for an append's sync")
	}
	close(release)
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
}

// TestRotationBoundsTheLog: a full file is set aside, the oldest set-aside
// files go past Keep, and Tail reads on across the files that are left.
func TestRotationBoundsTheLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := Open(path, Rotation{MaxSize: 1000, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.block = 100 // reads across block edges too
	const n = 60
	for i := range n {
		if err := l.Append(Entry{Principal: fmt.Sprintf("p%02d", i), Action: "run", Argv: []string{"true"}}); err != nil {
			t.Fatal(err)
		}
	}
	names, _ := filepath.Glob(filepath.Join(dir, "audit.log*"))
	if len(names) != 3 {
		t.Fatalf("files %v; want audit.log and the 2 newest set aside", names)
	}
	var kept int
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want 0600", name, fi.Mode().Perm())
		}
		// A file is set aside at the first write that finds it full, so it
		// is at most one entry past MaxSize.
		if fi.Size() > 1000+200 {
			t.Errorf("%s holds %d bytes, want about 1000 at most", name, fi.Size())
		}
		data, _ := os.ReadFile(name)
		kept += strings.Count(string(data), "\n")
	}
	es, err := l.Tail(n)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != kept {
		t.Fatalf("Tail(%d) = %d entries, want the %d the files keep", n, len(es), kept)
	}
	for i, e := range es {
		if want := fmt.Sprintf("p%02d", n-kept+i); e.Principal != want {
			t.Fatalf("entry %d is %s, want %s: Tail = %v", i, e.Principal, want, es)
		}
	}
	if es, _ := l.Tail(3); len(es) != 3 || es[2].Principal != fmt.Sprintf("p%02d", n-1) {
		t.Errorf("Tail(3) = %v, want the 3 newest", es)
	}

	// A reopened log goes on where it was, and sets aside a full file.
	l.Close()
	if l, err = Open(path, Rotation{MaxSize: 1000, Keep: 2}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 10 {
		if err := l.Append(Entry{Principal: fmt.Sprintf("q%02d", i), Action: "run"}); err != nil {
			t.Fatal(err)
		}
	}
	es, _ = l.Tail(1000)
	if len(es) < 10 || es[len(es)-1].Principal != "q09" || es[len(es)-11].Principal != "p59" {
		t.Errorf("after a reopen Tail = %v; want p59, then q00 to q09", es)
	}
}

// TestRotationKeepsEveryFileWithoutKeep: Keep 0 sets files aside and
// removes none; files that only look like the log's are left alone.
func TestRotationKeepsEveryFileWithoutKeep(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	other := filepath.Join(dir, "audit.log.bak")
	if err := os.WriteFile(other, []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, Rotation{MaxSize: 300})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 40 {
		if err := l.Append(Entry{Principal: fmt.Sprintf("p%02d", i), Action: "run"}); err != nil {
			t.Fatal(err)
		}
	}
	aside, err := l.setAside()
	if err != nil || len(aside) < 5 {
		t.Fatalf("set aside %v, %v; want every full file", aside, err)
	}
	if es, _ := l.Tail(100); len(es) != 40 {
		t.Errorf("Tail(100) = %d entries, want all 40", len(es))
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a file that only looks like the log's: %v", err)
	}
}

// TestTailDuringRotations: Tails beside appends that rotate see each entry
// once, newest last, and never fail.
func TestTailDuringRotations(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "audit.log"), Rotation{MaxSize: 500, Keep: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 300 {
			if err := l.Append(Entry{Principal: fmt.Sprintf("p%03d", i), Action: "run"}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { <-done }() // the appends end before the log closes
	for {
		select {
		case <-done:
			return
		default:
		}
		es, err := l.Tail(50)
		if err != nil {
			t.Error(err)
			return
		}
		for i := 1; i < len(es); i++ {
			if es[i-1].Principal >= es[i].Principal {
				t.Errorf("Tail out of order or twice: %s then %s", es[i-1].Principal, es[i].Principal)
				return
			}
		}
	}
}
